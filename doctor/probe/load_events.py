"""The load probe's protocol, typed: what doctor/probe/load_inside.py prints, one JSON
object a line, read into dataclasses (the child runs on old interpreters, stdlib only, so
it writes plain dicts; this side reads them once, here).

    {"event": "begin", "step": ..., "requested": ..., "soname": ..., "stage": ...}
    {"event": "end", "step": ..., "ok": ..., "error": ...}
    {"event": "result", "libraries": {soname: {"path", "version", "version_api"}},
     "torch_import_error": ...}

A line that is not such an object (a library's constructor printed to the descriptor, a
line cut by a crash) is skipped: the begin without its end is what names the culprit.
Every string is cleaned (doctor/probe/text.py) as it is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from doctor.probe.text import clean

__all__ = [
    "LoadEvent",
    "LoadResult",
    "LoadedLibrary",
    "StepBegun",
    "StepEnded",
    "StepRecord",
    "parse_events",
]


@dataclass(frozen=True)
class StepBegun:
    step: str  # the step's id, stable across the runs of one plan
    requested: str  # what dlopen was given: a path or a soname
    soname: str | None
    stage: str  # "torch preload", "cudnn", "needed", "version", …


@dataclass(frozen=True)
class StepEnded:
    step: str
    ok: bool
    error: str | None


@dataclass(frozen=True)
class LoadedLibrary:
    path: str | None
    version: str | None
    version_api: str | None


@dataclass(frozen=True)
class LoadResult:
    libraries: Mapping[str, LoadedLibrary] = field(default_factory=dict)
    torch_import_error: str | None = None


LoadEvent = Union[StepBegun, StepEnded, LoadResult]


@dataclass
class StepRecord:
    """One step as the doctor knows it, merged over the runs of a plan."""

    begun: StepBegun
    done: bool = False
    ok: bool = False
    error: str | None = None
    crashed: str | None = None  # the signal that killed the process during this step
    timed_out: bool = False


def _text(value: Any) -> str | None:
    return None if value is None else clean(str(value))


def _event(data: Any) -> LoadEvent | None:
    if not isinstance(data, dict):
        return None
    kind = data.get("event")
    if kind == "begin" and "step" in data and "requested" in data:
        return StepBegun(
            step=clean(str(data["step"])),
            requested=clean(str(data["requested"])),
            soname=_text(data.get("soname")),
            stage=clean(str(data.get("stage") or "")),
        )
    if kind == "end" and "step" in data:
        return StepEnded(
            step=clean(str(data["step"])), ok=bool(data.get("ok")), error=_text(data.get("error"))
        )
    if kind == "result":
        libraries = data.get("libraries")
        found = {}
        for soname, info in (libraries if isinstance(libraries, dict) else {}).items():
            info = info if isinstance(info, dict) else {}
            found[clean(str(soname))] = LoadedLibrary(
                path=_text(info.get("path")),
                version=_text(info.get("version")),
                version_api=_text(info.get("version_api")),
            )
        return LoadResult(found, _text(data.get("torch_import_error")))
    return None


def parse_events(stdout: str) -> Iterator[LoadEvent]:
    """The events in the load probe's output, in order; anything else is skipped."""
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = _event(json.loads(line))
        except (ValueError, RecursionError):
            continue
        if event is not None:
            yield event
