"""The documentation: it builds in strict mode, and the generated config reference matches the pydantic model."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from neggrad.config import Config
from neggrad.trainer.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]


def load_hook():
    spec = importlib.util.spec_from_file_location("neggrad_docs_reference", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(page: str) -> dict[str, list[str]]:
    """``{key: [type, default, description]}`` from the reference's ``| `key` | ... |`` rows."""
    rows = {}
    for line in page.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip().replace("\\|", "|") for cell in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def leaves(model: type[BaseModel], prefix: str = ""):
    """(dotted key, field default, docstring) of every leaf of the config, walked from the model, not the page.

    Field defaults, not ``Config()``'s resolved values: validators resolve some (reward.kind auto -> arithmetic).
    """
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            yield from leaves(type(default), f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", json.loads(json.dumps(default)), " ".join((field.description or "").split())


def test_config_reference_lists_every_key_with_its_default_and_help():
    rows = table_rows(load_hook().config_page())
    checked = 0
    for key, default, doc in leaves(Config):
        assert key in rows, f"config key {key} is missing from the generated reference"
        _, default_cell, description = rows[key]
        assert json.loads(default_cell.strip("`")) == default, key
        assert description == doc, key
        checked += 1
    assert checked > 100  # the walk reached the nested sections (nthr.eta, feedback.http.timeout_s, ...)
    assert "nthr.eta" in rows and "feedback.http.timeout_s" in rows


def test_metrics_reference_lists_every_metric():
    rows = table_rows(load_hook().metrics_page())
    assert set(rows) == set(METRICS)


def test_docs_build_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    config_html = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "nthr.eta" in config_html and "2|0.5-p|" in config_html
    assert (tmp_path / "site" / "integrations" / "trl" / "index.html").is_file()
    security = (tmp_path / "site" / "security" / "index.html").read_text()
    assert "--trust-checkpoint" in security and "allow_insecure_key" in security and "api_key_env" in security
    multiprocess = re.sub(r"<[^>]+>", "", (tmp_path / "site" / "multiprocess" / "index.html").read_text())
    assert "torchrun --standalone --nproc_per_node 2" in multiprocess and "accelerate launch" in multiprocess


# Built from pieces so that this file does not match itself.
OUTSIDE = ("ALGORITHMS" + ".md", "FRONTIER" + ".md", "../" + "shared", "shared/" + "spec")


def repository_text_files():
    for top in ("src", "docs", "tests", "configs", "benchmarks"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".yml", ".txt", ".toml", ".json", ".html"):
                yield path
    yield from (ROOT / name for name in ("README.md", "Makefile", "mkdocs.yml", "pyproject.toml"))


def test_nothing_cites_files_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {name}"
        for path in repository_text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        for name in OUTSIDE
        if name in line
    ]
    assert not found, "cite the paper or docs/algorithms.md instead:\n" + "\n".join(found)


def test_citations_of_the_algorithm_reference_name_existing_sections():
    page = (ROOT / "docs" / "algorithms.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", page, flags=re.MULTILINE))
    assert {"1.1", "2", "7.2", "10.1", "16"} <= sections  # the headings were parsed
    cited = {
        (str(path.relative_to(ROOT)), section)
        for path in repository_text_files()
        for section in re.findall(r"algorithms\.md\)? §(\d+(?:\.\d+)?)", path.read_text(encoding="utf-8"))
    }
    assert len(cited) > 50  # the docstrings do cite it
    missing = sorted(f"{path}: §{section}" for path, section in cited if section not in sections)
    assert not missing, "no such section in docs/algorithms.md:\n" + "\n".join(missing)
