"""Which installers made the inspected environment, and their versions (what uv's and
pip's bug templates ask for first)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InstallerFacts"]


@dataclass(frozen=True)
class InstallerFacts:
    """The installers' versions as the environment records them (no program is run)."""

    # The uv that created the venv: pyvenv.cfg's `uv = x.y.z` (absent: not made by uv).
    venv_uv_version: str | None = None
    # pip installed in the environment (its dist-info), which `python -m pip` runs.
    pip_version: str | None = None
