"""Would the next `uv sync` / `uv run` change torch or its CUDA wheels in this venv? (catalogue 36)

`uv sync` and `uv run` make the project's venv exactly what uv.lock selects for the
default extras (none) and default groups (`[tool.uv] default-groups`, else `dev`),
removing the rest. A venv synced once with `--extra cu126` is therefore rebuilt without
the CUDA build (or without torch) by the next plain `uv run`. This check walks uv.lock's
graph as uv would for those defaults and compares it with what is installed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.utils import canonicalize_name

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.derive.expectations import applicable_requirements, is_cuda_wheel, same_version
from doctor.facts import Facts, LockGraph
from doctor.facts.lock_graph import GraphDependency, GraphPackage
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import torch_family

__all__ = ["PlannedChange", "VenvLockDrift", "default_groups", "sync_plan"]

TORCH_FAMILY = torch_family()
_EXTRA_CLAUSE = re.compile(r"""extra\s*(==|!=)\s*(['"])([^'"]+)\2""")
_TRUE, _FALSE = "python_version >= '0'", "python_version < '0'"


def _holds(marker: str | None, environment: Mapping[str, str], active: set[str]) -> bool:
    """A uv.lock marker for the given active extras and groups (uv's conflict encoding)."""
    if not marker:
        return True

    def clause(match: re.Match[str]) -> str:
        return _TRUE if (match.group(3) in active) == (match.group(1) == "==") else _FALSE

    try:
        return Marker(_EXTRA_CLAUSE.sub(clause, marker)).evaluate({**environment, "extra": ""})
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return True  # uv's own `group == …` markers and the like: do not guess "removed"


def _root(graph: LockGraph) -> GraphPackage | None:
    if graph.project is None:
        return None
    name = canonicalize_name(graph.project)
    own = [p for p in graph.packages if canonicalize_name(p.name) == name]
    local = [p for p in own if p.source.get("editable") == "." or p.source.get("virtual") == "."]
    candidates = local or own
    return candidates[0] if candidates else None


def default_groups(graph: LockGraph) -> tuple[str, ...]:
    """The groups `uv sync` installs without options: default-groups, else `dev`."""
    if graph.default_groups == "all":
        return graph.groups
    if isinstance(graph.default_groups, tuple):
        return graph.default_groups
    return ("dev",) if "dev" in graph.groups else ()


def _active(graph: LockGraph, extras: Iterable[str], groups: Iterable[str]) -> set[str]:
    # uv.lock spells a conflicting extra `extra-<len>-<project>-<extra>` in markers, and a
    # conflicting group `group-<len>-<project>-<group>`.
    project = canonicalize_name(graph.project or "")
    active = {f"extra-{len(project)}-{project}-{e}" for e in extras}
    active |= {f"group-{len(project)}-{project}-{g}" for g in groups}
    return active | set(extras)


def sync_plan(
    graph: LockGraph,
    environment: Mapping[str, str],
    extras: Iterable[str] = (),
    groups: Iterable[str] | None = None,
) -> dict[str, str | None] | None:
    """name -> version that `uv sync` with these extras and groups installs here
    (groups None: the default groups). None when uv.lock has no entry for the project."""
    root = _root(graph)
    if root is None:
        return None
    extras = tuple(extras)
    groups = default_groups(graph) if groups is None else tuple(groups)
    active = _active(graph, extras, groups)
    by_name: dict[str, list[GraphPackage]] = {}
    for package in graph.packages:
        by_name.setdefault(canonicalize_name(package.name), []).append(package)

    queue: list[GraphDependency] = list(root.dependencies)
    for extra in extras:
        queue.extend(root.optional.get(extra, ()))
    for group in groups:
        queue.extend(root.groups.get(group, ()))
    plan: dict[str, str | None] = {}
    seen: set[tuple[str, str | None, str | None]] = set()
    while queue:
        dependency = queue.pop()
        if not _holds(dependency.marker, environment, active):
            continue
        picked = _pick(by_name.get(canonicalize_name(dependency.name), []), dependency, environment)
        if picked is None or picked is root:
            continue
        name = canonicalize_name(picked.name)
        selected: tuple[str | None, ...] = (None, *dependency.extras)
        for wanted in selected:
            key = (name, picked.version, wanted)
            if key in seen:
                continue
            seen.add(key)
            plan[name] = picked.version
            queue.extend(picked.dependencies if wanted is None else picked.optional.get(wanted, ()))
    return plan


def _pick(
    candidates: list[GraphPackage], dependency: GraphDependency, environment: Mapping[str, str]
) -> GraphPackage | None:
    if dependency.version is not None:
        candidates = [p for p in candidates if p.version == dependency.version]
    if len(candidates) > 1:
        here = [
            p
            for p in candidates
            if not p.resolution_markers
            or any(_holds(m, environment, set()) for m in p.resolution_markers)
        ]
        candidates = here or candidates
    return candidates[0] if candidates else None


def _conflicting(graph: LockGraph, a: str, b: str) -> bool:
    """Whether [tool.uv] conflicts declares groups ``a`` and ``b`` mutually exclusive."""
    for declared in graph.conflicts:
        names = {item.get("group") for item in declared}
        if a in names and b in names:
            return True
    return False


def _with_group(graph: LockGraph, groups: tuple[str, ...], group: str) -> tuple[str, ...]:
    """The default groups with ``group`` added and the ones it conflicts with removed."""
    return (*(g for g in groups if not _conflicting(graph, g, group)), group)


def _lock_lacks(facts: Facts, graph: LockGraph, plan: Mapping[str, str | None]) -> set[str]:
    """What the installed torch requires here and uv.lock does not record under it, when the
    sync keeps that torch: lock-missing-dependencies reports those, as their root cause."""
    torch = facts.distribution("torch")
    if (
        torch is None
        or facts.interpreter is None
        or not same_version(plan.get("torch"), torch.version)
    ):
        return set()
    environment = facts.interpreter.marker_environment
    required, _ = applicable_requirements(torch.requires_dist, environment)
    entries = [
        p for p in graph.packages if p.name == "torch" and same_version(p.version, torch.version)
    ]
    recorded = {str(canonicalize_name(d.name)) for p in entries for d in p.dependencies}
    return {str(canonicalize_name(r.name)) for r in required} - recorded


def _watched(name: str) -> bool:
    return name in TORCH_FAMILY or is_cuda_wheel(name)


def _keeps(plan: Mapping[str, str | None] | None, installed: Mapping[str, str]) -> bool:
    if plan is None:
        return False
    return all(n in plan and same_version(plan[n], v) for n, v in installed.items() if _watched(n))


@dataclass(frozen=True)
class PlannedChange:
    """One installed wheel the next sync changes: to ``next`` (None: removed)."""

    name: str
    installed: str
    next: str | None


@dataclass(frozen=True)
class VenvLockDrift(Payload):
    changes: tuple[PlannedChange, ...]
    not_in_lock: tuple[str, ...]
    default_groups: tuple[str, ...]
    keep_extras: tuple[str, ...]
    keep_groups: tuple[str, ...]
    keep_default_groups: tuple[str, ...]
    pyproject_path: str | None

    def subjects(self) -> frozenset[str]:
        return frozenset(c.name for c in self.changes)


@check(
    "venv-lock-drift",
    severities=(Severity.WARNING,),
    family="drift",
    summary="The next `uv sync` or `uv run` would replace or remove torch or its CUDA wheels "
    "in this venv: uv.lock selects other ones for the default extras and groups.",
    label="the next `uv sync` keeps torch and its CUDA wheels",
    payload=VenvLockDrift,
    requires=("interpreter", "torch", "lock", "uv-project"),
    # A wheel already wrong here (another version than torch pins, a companion built for
    # another torch, a leftover of another CUDA major) is what the sync puts right: that
    # finding is the root, and its remedy is the sync this one would warn against.
    caused_by=(
        "lock-missing-dependencies",
        "cuda-wheel-version-mismatch",
        "torch-companion-mismatch",
        "mixed-cuda-majors",
    ),
)
def venv_lock_drift(ctx: Context) -> Outcome:
    facts = ctx.facts
    graph, project, interpreter = facts.lock_graph, facts.project, facts.interpreter
    torch = ctx.torch
    assert interpreter is not None and torch is not None
    if graph is None or project is None:
        return Skip("no readable uv.lock")
    environment = interpreter.marker_environment
    plan = sync_plan(graph, environment)
    if plan is None:
        return Skip("uv.lock has no entry for the project itself")
    installed = {
        d.name: d.version for d in facts.distributions if not d.shadowed and _watched(d.name)
    }
    explained = _lock_lacks(facts, graph, plan)
    changes: list[PlannedChange] = []
    for name, version in sorted(installed.items()):
        if name in explained or (explained and is_cuda_wheel(name)):
            # lock-missing-dependencies' finding: uv.lock lacks torch's requirements (and
            # so everything they bring in); that is the root cause, reported there.
            continue
        following = plan.get(name)
        if name not in plan:
            changes.append(PlannedChange(name, version, None))
        elif not same_version(following, version):
            changes.append(PlannedChange(name, version, following))
    if not changes:
        return []
    locked = {(canonicalize_name(p.name), p.version) for p in graph.packages}
    gone = [
        c.name
        for c in changes
        if not any(n == c.name and same_version(v, c.installed) for n, v in locked)
    ]
    groups = default_groups(graph)
    keep_extras = [e for e in graph.extras if _keeps(sync_plan(graph, environment, [e]), installed)]
    keep_groups = [
        g
        for g in graph.groups
        if g not in groups
        and _keeps(sync_plan(graph, environment, (), _with_group(graph, groups, g)), installed)
    ]
    torch_change = next((c for c in changes if c.name == "torch"), None)
    others = [c for c in changes if c.name != "torch"]
    # `uv sync` is exact (removes what the lock does not select); `uv run` syncs inexactly:
    # it replaces versions but leaves extraneous packages in place.
    replaced = [c for c in changes if c.next is not None]
    if torch_change and torch_change.next:
        title = (
            f"the next `uv sync` / `uv run` replaces torch {torch.version} with {torch_change.next}"
        )
    elif torch_change:
        title = f"the next `uv sync` removes torch {torch.version}"
    else:
        verb = "replaces" if replaced else "removes"
        names = [c.name for c in others]
        if len(names) <= 3:
            what = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        elif all(is_cuda_wheel(n) for n in names):
            what = f"{len(names)} CUDA wheels"
        else:
            what = f"{len(names)} of torch's packages"
        title = f"the next `uv sync` {verb} {what}"
    if others and torch_change:
        removed = sum(1 for c in others if c.next is None)
        title += (
            f" and {'removes' if removed == len(others) else 'changes'} {len(others)} of its wheels"
        )
    evidence = []
    for change in changes:
        what = (
            f"{change.name} {change.installed} → {change.next}"
            if change.next
            else f"{change.name} {change.installed}: removed"
        )
        if change.name in gone:
            what += " (uv.lock no longer has this version)"
        evidence.append(what)
    evidence.append(
        "decided by: extras installed by default: none (`uv sync`/`uv run` install an extra "
        f"only with --extra); default groups: {', '.join(groups) or 'none'}"
        + (
            " ([tool.uv] default-groups)"
            if graph.default_groups is not None
            else " (uv's default: dev)"
        )
    )
    if graph.conflicts:
        sets = "; ".join(
            " / ".join(f"{k} {v}" for item in group for k, v in item.items() if k != "package")
            for group in graph.conflicts
        )
        evidence.append(f"[tool.uv] conflicts: {sets}")
    if keep_extras:
        evidence.append(f"this venv matches uv.lock with the extra {', '.join(keep_extras)}")
    if keep_groups:
        evidence.append(f"this venv matches uv.lock with the group {', '.join(keep_groups)}")
    return [
        Finding(
            id="venv-lock-drift",
            severity=Severity.WARNING,
            title=title,
            detail=(
                "This venv is not what uv.lock selects for the default extras and groups. "
                "`uv sync` makes the venv exactly that, removing "
                "what the defaults do not select; `uv run` syncs first too, replacing "
                "versions (though it leaves extra packages in place). torch is replaced by "
                "another build, or it and its nvidia wheels go and `import torch` fails."
            ),
            evidence=tuple(evidence),
            data=VenvLockDrift(
                changes=tuple(changes),
                not_in_lock=tuple(gone),
                default_groups=tuple(groups),
                keep_extras=tuple(keep_extras),
                keep_groups=tuple(keep_groups),
                keep_default_groups=(
                    _with_group(graph, groups, keep_groups[0]) if keep_groups else ()
                ),
                pyproject_path=project.pyproject_path,
            ),
        )
    ]


@remedy("venv-lock-drift")
def _drift(finding: Finding[VenvLockDrift], ctx: Context) -> list[Remedy]:
    remedies = []
    extras = finding.data.keep_extras
    groups = finding.data.keep_groups
    if extras:
        flag = f"--extra {extras[0]}"
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                f"always sync and run with the extra that selects this torch ({extras[0]})",
                f"uv sync {flag}\nuv run {flag} python your_script.py",
            )
        )
    remedies.append(
        Remedy(
            RemedyKind.SHELL,
            ("or " if remedies else "") + "keep uv from syncing this venv before it runs a command "
            "(UV_NO_SYNC=1 does the same for every `uv run`)",
            "uv run --no-sync python your_script.py",
        )
    )
    # The pyproject.toml edit last: `torch-doctor fix` runs the shell remedies after it
    # as its follow-up, and the ones above are alternatives, not steps after the edit.
    if groups:
        default = finding.data.keep_default_groups or (groups[0],)
        listed = ", ".join(f'"{g}"' for g in default)
        remedies.append(
            Remedy(
                RemedyKind.TOML,
                "or run `torch-doctor fix`: it writes this into pyproject.toml (a diff, a "
                f"backup), making the group {groups[0]} a default group, so plain `uv sync` "
                "and `uv run` keep it; then `uv sync`",
                f"[tool.uv]\ndefault-groups = [{listed}]\n",
                target=finding.data.pyproject_path,
            )
        )
        remedies.append(Remedy(RemedyKind.SHELL, "then sync: the venv keeps this torch", "uv sync"))
    return remedies
