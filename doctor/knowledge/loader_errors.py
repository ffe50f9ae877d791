"""Typed access to loader_errors.toml: the loader's messages as compiled patterns.

``cannot_open()``, ``undefined_symbol()`` and ``version_not_found()`` return the compiled
patterns (named groups as documented in the TOML file); ``named_object`` is the object an
error names as the one that failed. Matching only: the checks judge.
"""

from __future__ import annotations

import re
from functools import cache

from doctor.knowledge import load

__all__ = ["cannot_open", "named_object", "undefined_symbol", "version_not_found"]


@cache
def _pattern(kind: str) -> re.Pattern[str]:
    return re.compile(str(load("loader_errors")[kind]["pattern"]))


def cannot_open() -> re.Pattern[str]:
    """``<path>: cannot open shared object file``: groups ``path`` and ``soname``."""
    return _pattern("cannot_open")


def undefined_symbol() -> re.Pattern[str]:
    """``<object>: undefined symbol: <symbol>[, version <version>]``. dlerror's text starts
    with it (``.match``); Python's error text has it after its own prefix (``.search``)."""
    return _pattern("undefined_symbol")


def version_not_found() -> re.Pattern[str]:
    """``version `<version>' not found [(required by <object>)]``."""
    return _pattern("version_not_found")


def named_object(error: str) -> str | None:
    """The object a dlerror text names as failing, as written: the one that needs an
    undefined symbol, else the one requiring a version not found (None: neither)."""
    match = undefined_symbol().match(error) or version_not_found().search(error)
    return match.group("object") if match is not None else None
