"""Remedies for the library findings: the exact variable entry to drop, the wheel to reinstall."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

from doctor.checks.libraries import providing_wheels, reference_version
from doctor.facts import Facts
from doctor.facts.libraries import Resolution
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for
from doctor.remedies.packages import in_uv_project

__all__ = ["drop_entries", "reinstall_command"]

LOADER_VARIABLES = (Resolution.LD_LIBRARY_PATH, Resolution.LD_PRELOAD)


def _split(variable: str, value: str) -> list[str]:
    if variable == Resolution.LD_PRELOAD:  # colons or white space (ld.so(8))
        return value.replace(":", " ").split()
    return value.split(":")


def drop_entries(facts: Facts, variable: str, entries: Iterable[str]) -> Remedy:
    """``export VAR=<value without those entries>``, or ``unset VAR`` when nothing is left."""
    drop = set(entries)
    current = facts.environment.get(variable, "")
    kept = [part for part in _split(variable, current) if part and part not in drop]
    separator = ":"
    text = f"export {variable}={shlex.quote(separator.join(kept))}" if kept else f"unset {variable}"
    names = ", ".join(e or "the empty entry (the working directory)" for e in sorted(drop))
    return Remedy(
        RemedyKind.ENV,
        f"drop {names} from {variable} in the shell (and the profile or module) that sets it",
        text,
    )


def _env_remedies(facts: Facts, pairs: Iterable[tuple[str, str | None]]) -> list[Remedy]:
    by_variable: dict[str, list[str]] = {}
    for variable, entry in pairs:
        # An empty entry ("") is one too: ld.so searches the working directory for it.
        if (
            variable in LOADER_VARIABLES
            and entry is not None
            and entry not in by_variable.get(variable, [])
        ):
            by_variable.setdefault(variable, []).append(entry)
    return [drop_entries(facts, v, e) for v, e in by_variable.items()]


def _spec(facts: Facts, wheel: str) -> str:
    version = reference_version(facts, wheel)
    return f"{wheel}=={version}" if version else wheel


def reinstall_command(facts: Facts, wheels: Sequence[str]) -> str:
    """Put the wheels torch pins back in place, with the tool that manages this venv."""
    if in_uv_project(facts):
        return "uv sync " + " ".join(f"--reinstall-package {shlex.quote(w)}" for w in wheels)
    specs = " ".join(shlex.quote(_spec(facts, w)) for w in wheels)
    python = facts.interpreter.executable if facts.interpreter else "python"
    torch = facts.distribution("torch")
    if torch is not None and torch.installer == "uv":
        return f"uv pip install --python {shlex.quote(python)} --reinstall {specs}"
    return f"{shlex.quote(python)} -m pip install --force-reinstall --no-deps {specs}"


def _reinstall(facts: Facts, wheels: Sequence[str], summary: str) -> list[Remedy]:
    unique = list(dict.fromkeys(w for w in wheels if w))
    if not unique:
        return []
    return [Remedy(RemedyKind.SHELL, summary, reinstall_command(facts, unique))]


@remedy_for("library-not-found")
def _not_found(finding: Finding, facts: Facts) -> list[Remedy]:
    wheels = [m["wheels"][0] for m in finding.data.get("missing", []) if m.get("wheels")]
    return _reinstall(facts, wheels, "install the wheels that ship these libraries")


@remedy_for("library-load-failed")
def _load_failed(finding: Finding, facts: Facts) -> list[Remedy]:
    failures = finding.data.get("failures", [])
    causes = [f["cause"] for f in failures if f.get("cause")]
    remedies = _env_remedies(facts, ((c["how"], c["entry"]) for c in causes))
    if any(c["how"] == Resolution.CACHE for c in causes):
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "a system copy is registered with ldconfig",
                "Install the wheel torch pins for it (below) so its RPATH/RUNPATH finds that "
                "copy first, or remove the system package that registered the old one.",
            )
        )
    wheels = [w for f in failures for w in providing_wheels(facts, f["soname"])[:1]]
    wheels += [w for c in causes for w in providing_wheels(facts, c["soname"])[:1]]
    summary = "then reinstall the pinned wheels" if remedies else "reinstall the pinned wheels"
    remedies += _reinstall(facts, wheels, summary)
    return remedies


@remedy_for("library-shadowed")
def _shadowed(finding: Finding, facts: Facts) -> list[Remedy]:
    items = finding.data.get("shadowed", [])
    remedies = _env_remedies(facts, ((i["how"], i["entry"]) for i in items if i.get("how")))
    outside_env = [i for i in items if i.get("how") not in LOADER_VARIABLES]
    wheels = [i["expected_wheels"][0] for i in outside_env if i.get("expected_wheels")]
    remedies += _reinstall(facts, wheels, "install the pinned wheels so torch finds their copy")
    return remedies


@remedy_for("library-version-mismatch")
def _version_mismatch(finding: Finding, facts: Facts) -> list[Remedy]:
    items = finding.data.get("mismatched", [])
    pairs = []
    libraries = facts.libraries
    for item in items:
        row = libraries.library(item["soname"]) if libraries is not None else None
        resolved = row.resolved if row is not None else None
        if (
            resolved is not None
            and resolved.path == item.get("path")
            and resolved.entry is not None
        ):
            pairs.append((resolved.how, resolved.entry))
    remedies = _env_remedies(facts, pairs)
    remedies += _reinstall(facts, [i["wheel"] for i in items], "reinstall the pinned versions")
    return remedies


@remedy_for("cuda-libs-in-loader-path")
def _loader_path(finding: Finding, facts: Facts) -> list[Remedy]:
    entries = finding.data.get("entries", [])
    return _env_remedies(facts, ((e["variable"], e["entry"]) for e in entries))
