"""The package's architecture holds: layered imports, small config files, short functions in the loop.

Layers, lowest first (src/neggrad/__init__.py describes each): a module imports neggrad modules of its own package or
of packages before it, never after, so that ``core`` imports nothing of ours, strategies never import the loop and the
loop never imports the CLI. Imports under ``if TYPE_CHECKING:`` (annotations only) do not count.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "neggrad"
LAYERS = [
    "core",
    "config",
    "tasks",
    "rollout",
    "models",
    "feedback",
    "strategies",
    "trainer",
    "analysis",
    "integrations",
    "cli",
]
# Deliberate upward imports, each inside a function (at validation time, never at import): config validation asks
# the plug-ins what they require. (importing module, imported module): reason
ALLOWED_UPWARD = {
    ("neggrad.config.rules", "neggrad.strategies"): "the active strategies' requirements and declared conflicts",
    ("neggrad.config.model", "neggrad.tasks.verifiers.custom"): "reward.kind as an import path is checked at load",
    ("neggrad.config.feedback", "neggrad.feedback.steps"): "feedback.step_split names a registered splitter",
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skip |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skip


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported neggrad module, at module level, line) for every import in the file outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "neggrad":
            names = [f"neggrad.{a.name}" for a in node.names] if node.module == "neggrad" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "neggrad"]
        else:
            continue
        found += [(name, id(node) in top, node.lineno) for name in names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {_layer(name) for name, _ in _modules()} - {None, "configs"}
    assert packages == set(LAYERS), "add the new package to LAYERS (and to src/neggrad/__init__.py's list)"


def test_imports_only_go_down_the_layers():
    upward = []
    for name, path in _modules():
        mine = _layer(name)
        if mine is None:
            continue
        for imported, at_top, line in _imports(path):
            theirs = _layer(imported)
            if theirs is None or theirs == mine or LAYERS.index(theirs) < LAYERS.index(mine):
                continue
            if (name, imported) in ALLOWED_UPWARD and not at_top:
                continue
            upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {mine} imports {imported} ({theirs})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_core_imports_nothing_of_neggrad():
    core = [(name, path) for name, path in _modules() if _layer(name) == "core"]
    assert core
    for _, path in core:
        outside = [name for name, _, _ in _imports(path) if _layer(name) != "core"]
        assert not outside, f"{path.name} imports {outside}: core holds pure functions over tensors only"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The layer check is live: a strategy importing the loop, or an import hidden in a function, is found."""
    fake = tmp_path / "x.py"
    fake.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from neggrad.cli import main\n"
        "from neggrad.trainer.loop import train\n\ndef f():\n    import neggrad.analysis.report\n"
    )
    assert _imports(fake) == [("neggrad.trainer.loop", True, 4), ("neggrad.analysis.report", False, 7)]


def test_config_files_stay_small():
    sizes = {path.name: len(path.read_text().splitlines()) for path in (PACKAGE / "config").glob("*.py")}
    assert max(sizes.values()) <= 500, sizes


@pytest.mark.parametrize("package", [layer for layer in LAYERS if layer != "core"])
def test_no_function_is_long(package):
    """The loop reads in one sitting: no function over 80 lines (docstring included) outside ``core``, whose
    functions are one equation each with its derivation in the docstring."""
    long = []
    paths = [PACKAGE / "cli.py"] if package == "cli" else (PACKAGE / package).rglob("*.py")
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
