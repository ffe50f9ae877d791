"""How uv reads the project: markers as uv writes them, sources, PyTorch indexes, lock entries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from packaging.markers import InvalidMarker, Marker

from doctor.derive.expectations import marker_applies, same_version
from doctor.facts import Facts, LockedPackage
from doctor.facts.project import IndexFacts, ProjectFacts
from doctor.knowledge import pytorch_index_url

__all__ = [
    "matching_locked_torch",
    "pytorch_indexes",
    "source_entries",
    "uv_marker_applies",
]

_MARKER_EXTRA = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")


def uv_marker_applies(marker: str | None, environment: Mapping[str, str]) -> bool:
    """Whether a marker as uv writes it (uv.lock, [tool.uv.sources]) holds here."""
    if not marker:
        return True
    try:
        parsed = Marker(marker)
    except InvalidMarker:
        # Includes uv's `group == '...'` markers, which are not PEP 508: cannot judge, so
        # never raise a false alarm on it.
        return True
    # uv's conflict markers name the project's extras (`extra == 'extra-4-demo-cu130'`).
    # Whether one is active depends on how the user syncs, so each extra the marker names
    # counts as active; the rest of the marker (the platform) must still hold here.
    extras = _MARKER_EXTRA.findall(marker)
    return marker_applies(parsed, environment, extras or ("",))


def matching_locked_torch(facts: Facts) -> list[LockedPackage]:
    """The uv.lock entries for the installed torch version that apply to this platform."""
    project = facts.project
    torch = facts.distribution("torch")
    if project is None or torch is None or facts.interpreter is None:
        return []
    environment = facts.interpreter.marker_environment
    entries = [p for p in project.locked_torch if same_version(p.version, torch.version)]
    applicable = [
        p
        for p in entries
        if not p.resolution_markers
        or any(uv_marker_applies(m, environment) for m in p.resolution_markers)
    ]
    return applicable or entries


def _url(url: str) -> str:
    return url.rstrip("/")


def pytorch_indexes(project: ProjectFacts) -> list[IndexFacts]:
    """The declared indexes that are PyTorch's own (download.pytorch.org/whl/<variant>)."""
    return [i for i in project.indexes if _url(i.url).startswith(_url(pytorch_index_url()))]


def source_entries(value: Any) -> list[Mapping[str, Any]]:
    """A [tool.uv.sources] value as a list of tables (it may be one table or a list).

    Entries uv could not read either (not a table, a marker that is not a string) are left
    out: uv refuses such a pyproject.toml, and it says so itself.
    """
    entries = [value] if isinstance(value, Mapping) else value if isinstance(value, list) else []
    return [e for e in entries if isinstance(e, Mapping) and isinstance(e.get("marker", ""), str)]
