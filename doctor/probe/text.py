"""Text from the inspected environment, made safe to show: done once, where facts are built.

Strings the probes bring back (an installed dist-info's INSTALLER, a GPU name, an error a
library printed, a TOML value) reach the terminal, Markdown and JSON. An ESC sequence in
them would set the window title or clear the screen; a 20 MB line would fill every report.
So every such string is stripped of control characters (newline and tab kept), of the
bidirectional marks and overrides that reorder what a reader sees, and of the Unicode line
and paragraph separators, and cut to a length cap with a "… N more bytes" marker.
Renderers can then trust every string they get.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ENVIRONMENT_CAP", "FIELD_CAP", "clean", "clean_tree"]

# Characters per string: far above a path or an error line, far below what floods a report.
FIELD_CAP = 4096
# Characters per environment variable: the kernel's limit on one environment string
# (MAX_ARG_STRLEN). The variables decide how the loader searches (LD_LIBRARY_PATH), so
# they are kept whole, only cleaned.
ENVIRONMENT_CAP = 128 * 1024
# C0 controls but tab and newline, DEL, C1 controls; the bidirectional marks (ALM, LRM,
# RLM), embeddings, overrides and isolates; the line and paragraph separators (a
# terminal or an editor breaks the line there, as at a newline nobody sees).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def clean(text: str, cap: int = FIELD_CAP) -> str:
    """``text`` without unsafe characters, cut to ``cap`` characters with a marker."""
    if len(text) <= cap and text.isprintable():
        return text  # the usual string: one C-speed scan
    text = _UNSAFE.sub("", text)
    if len(text) > cap:
        extra = len(text[cap:].encode("utf-8", "replace"))
        text = f"{text[:cap]}… {extra} more bytes"
    return text


def clean_tree(value: Any, cap: int = FIELD_CAP) -> Any:
    """A JSON-like structure (dicts, lists, strings, numbers) with every string cleaned,
    dictionary keys included."""
    if isinstance(value, str):
        return clean(value, cap)
    if isinstance(value, dict):
        return {clean_tree(k, cap): clean_tree(v, cap) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_tree(v, cap) for v in value]
    return value
