"""pkg:// paths (neggrad.config.paths): files inside an installed package, found without importing it."""

import json
import sys

import pytest

from neggrad.config import ConfigError
from neggrad.config.paths import is_package_path, resolve_package_path
from neggrad.tasks.data.sources import is_local, read_local, read_rows


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package ``neggrad_fakepkg`` on sys.path whose __init__ fails if anything imports it."""
    root = tmp_path / "site"
    package = root / "neggrad_fakepkg"
    (package / "files").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('pkg:// must not import the package')\n")
    data = {
        "problems": {"p1": {"text": "1+1?", "ans": "2"}, "p2": {"text": "2+2?", "ans": "4"}},
        "hints": {"h1": {"text": "add"}},
    }
    (package / "files" / "v0.json").write_text(json.dumps(data))
    (package / "files" / "rows.jsonl").write_text('{"problem": "3+3?", "answer": "6"}\n')
    monkeypatch.syspath_prepend(str(root))
    yield package
    sys.modules.pop("neggrad_fakepkg", None)


def test_other_values_pass_through():
    for value in ("Qwen/Qwen2.5-Math-1.5B", "/data/x.jsonl", "testbed", "math500"):
        assert not is_package_path(value)
        assert resolve_package_path(value) == value


def test_resolves_folder_and_file_without_importing(fake_package):
    assert resolve_package_path("pkg://neggrad_fakepkg") == str(fake_package)
    assert resolve_package_path("pkg://neggrad_fakepkg/files/v0.json") == str(fake_package / "files" / "v0.json")
    assert "neggrad_fakepkg" not in sys.modules


def test_missing_package_names_the_pip_command():
    with pytest.raises(ConfigError, match=r"model.name_or_path .*not installed: pip install no-such-neggrad-pkg"):
        resolve_package_path("pkg://no_such_neggrad_pkg/x.gguf", key="model.name_or_path")


def test_missing_file_and_bad_names_are_refused(fake_package):
    with pytest.raises(ConfigError, match="no 'files/v9.json' in the folder of package 'neggrad_fakepkg'"):
        resolve_package_path("pkg://neggrad_fakepkg/files/v9.json")
    with pytest.raises(ConfigError, match="leaves the package folder"):
        resolve_package_path("pkg://neggrad_fakepkg/../site")
    with pytest.raises(ConfigError, match="not a top-level package name"):
        resolve_package_path("pkg://neggrad.config.paths/x")  # dotted: find_spec would import the parent
    with pytest.raises(ConfigError, match="single module"):
        resolve_package_path("pkg://this")  # the stdlib's this.py: a module, not a folder


def test_data_source_reads_package_files_and_a_json_key(fake_package):
    assert is_local("pkg://neggrad_fakepkg/files/v0.json#problems")
    rows = read_rows("pkg://neggrad_fakepkg/files/v0.json#problems")
    assert [(r["id"], r["ans"]) for r in rows] == [("p1", "2"), ("p2", "4")]
    assert read_local("pkg://neggrad_fakepkg/files/rows.jsonl") == [{"problem": "3+3?", "answer": "6"}]
    with pytest.raises(ValueError, match="no top-level key 'answers'; its keys: problems, hints"):
        read_local("pkg://neggrad_fakepkg/files/v0.json#answers")
    assert "neggrad_fakepkg" not in sys.modules


def test_json_key_on_a_plain_file(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"meta": {"v": 1}, "train": [{"problem": "q", "answer": "1"}]}))
    assert read_rows(f"{path}#train") == [{"problem": "q", "answer": "1"}]


def test_load_policy_from_a_package_folder(fake_package, tmp_path):
    pytest.importorskip("transformers")
    from neggrad.config import build_config
    from neggrad.models.load import load_policy
    from tests.test_models import _save_tiny

    _save_tiny(fake_package / "model")
    config = build_config({}, ["model.name_or_path=pkg://neggrad_fakepkg/model", "model.device=cpu"])
    model, tokenizer, info = load_policy(config)
    assert info["parameters"] == sum(p.numel() for p in model.parameters()) > 0
    assert "neggrad_fakepkg" not in sys.modules
