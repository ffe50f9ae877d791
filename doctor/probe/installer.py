"""The installers' versions, read from files the environment already has: pyvenv.cfg's
`uv = x.y.z` (uv writes it when it creates a venv) and pip's dist-info directory. Two
small reads, no subprocess: the default run pays nothing measurable for them."""

from __future__ import annotations

import os
import re

from doctor.facts.environment import InterpreterFacts
from doctor.facts.installer import InstallerFacts

__all__ = ["probe_installers"]

_PIP_DIST_INFO = re.compile(r"^pip-([^-]+)\.dist-info$")


def probe_installers(interpreter: InterpreterFacts | None) -> InstallerFacts | None:
    if interpreter is None:
        return None
    return InstallerFacts(
        venv_uv_version=_pyvenv_value(os.path.join(interpreter.prefix, "pyvenv.cfg"), "uv"),
        pip_version=_pip_version(interpreter.purelib),
    )


def _pyvenv_value(path: str, key: str) -> str | None:
    """A `key = value` line of pyvenv.cfg (the format venv and uv write)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, equals, value = line.partition("=")
                if equals and name.strip().lower() == key:
                    return value.strip() or None
    except OSError:
        return None
    return None


def _pip_version(site: str) -> str | None:
    try:
        names = os.listdir(site)
    except OSError:
        return None
    for name in names:
        match = _PIP_DIST_INFO.match(name)
        if match:
            return match.group(1)
    return None
