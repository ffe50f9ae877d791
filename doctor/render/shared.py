"""What the terminal and Markdown renderers share: code languages, venv-relative paths."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from doctor.findings import RemedyKind

if TYPE_CHECKING:
    from doctor.facts import Facts

__all__ = ["CODE_LANGUAGE", "venv_relative"]

# How a remedy's text is highlighted (terminal) or fenced (Markdown); text remedies are prose.
CODE_LANGUAGE = {RemedyKind.TOML: "toml", RemedyKind.SHELL: "bash", RemedyKind.ENV: "bash"}


def venv_relative(path: str, facts: Facts) -> str | None:
    """``<venv>/…`` for a path inside the inspected venv, else None."""
    prefix = facts.interpreter.prefix if facts.interpreter else None
    if prefix and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
        rel = os.path.relpath(path, prefix)
        return "<venv>" if rel == "." else f"<venv>/{rel}"
    return None
