"""User strategies by import path: ``strategies: ["my_pkg.rules:HalveEarly", {path: ..., k: 3}]``."""

from __future__ import annotations

import importlib
import inspect

from neggrad.strategies.base import Strategy


def load_strategy(path: str) -> type[Strategy]:
    """The Strategy subclass ``module:Class`` names; ValueError (one line) otherwise."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"strategies: {path!r} is not an import path like my_pkg.rules:MyRule")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"strategies: cannot import {module_name!r} for {path!r}: {err}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"strategies: module {module_name!r} has no {attr!r} (from {path!r})")
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise ValueError(
            f"strategies: {path!r} is not a subclass of neggrad.strategies.Strategy: subclass it and override "
            "the hooks you need"
        )
    return cls


def user_strategies(config) -> list[tuple[type[Strategy], dict]]:
    """(class, keyword arguments) of every entry of ``config.strategies``, checked against the constructor."""
    out = []
    for entry in config.strategies:
        kwargs = dict(entry) if isinstance(entry, dict) else {"path": entry}
        cls = load_strategy(str(kwargs.pop("path", "")))
        try:
            inspect.signature(cls).bind(config, **kwargs)
        except TypeError as err:
            raise ValueError(f"strategies: {cls.__name__} does not take these arguments {kwargs}: {err}") from None
        out.append((cls, kwargs))
    return out
