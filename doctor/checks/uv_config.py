"""The uv settings that route torch wrongly without any error (catalogue 3, 4, 5).

Each is a configuration uv accepts and the user did not mean: extras (or groups) that
pin different PyTorch indexes without `[tool.uv] conflicts`; a source keyed by
`marker = "extra == …"` instead of `extra = …`; torchvision or torchaudio not routed like
torch; `torch-backend` or `UV_TORCH_BACKEND` beside explicit sources; `index-strategy =
"unsafe-best-match"` with a PyTorch index; a platform the project targets for which
uv.lock holds no torch wheel and `required-environments` does not say it must.
Judged from pyproject.toml (and uv.lock for the last); no venv needed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.utils import canonicalize_name

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.derive.expectations import parse_requirement
from doctor.derive.uv import pytorch_indexes, uv_marker_applies
from doctor.derive.wheel_tags import ANY, served_platforms
from doctor.facts import Facts, LockGraph
from doctor.facts.uv_settings import UvSettings
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import torch_index_family

__all__ = [
    "ROUTED_FAMILY",
    "UvProblem",
    "UvTorchConfig",
    "marker_extra",
    "selector",
    "torch_problems",
]

ROUTED_FAMILY = torch_index_family()
_MARKER_EXTRA = re.compile(r"""^\s*extra\s*==\s*['"]([^'"]+)['"]\s*$""")
_ANY_EXTRA = re.compile(r"""\bextra\s*==""")


def selector(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """("extra", "cu126") or ("group", "cu126") for a per-extra/per-group source entry."""
    for kind in ("extra", "group"):
        if isinstance(entry.get(kind), str):
            return kind, str(entry[kind])
    return None


def marker_extra(entry: Mapping[str, Any]) -> str | None:
    """The extra of a source entry keyed by `marker = "extra == 'X'"` and nothing else."""
    marker = entry.get("marker")
    match = _MARKER_EXTRA.match(marker) if isinstance(marker, str) else None
    return match.group(1) if match else None


def _routing(entries: Sequence[Mapping[str, Any]]) -> frozenset[tuple[str, str, str]]:
    return frozenset(
        (str(e.get("index")), str(selector(e) or ""), str(e.get("marker") or "")) for e in entries
    )


def _declared(settings: UvSettings, dependencies: Sequence[str], name: str) -> bool:
    if any(name in names for names in (*settings.extras.values(), *settings.groups.values())):
        return True
    for text in dependencies:
        requirement = parse_requirement(text)
        if requirement is not None and canonicalize_name(requirement.name) == name:
            return True
    return False


def _in_conflict(settings: UvSettings, a: tuple[str, str], b: tuple[str, str]) -> bool:
    for group in settings.conflicts:
        members = {(k, v) for item in group for k, v in item.items() if k in ("extra", "group")}
        if a in members and b in members:
            return True
    return False


@dataclass(frozen=True)
class _Target:
    """A platform the project's markers select: a system, and a machine when the marker
    names one (``sys_platform == 'linux'`` targets Linux on any machine)."""

    sys_platform: str
    machine: str | None

    @property
    def label(self) -> str:
        return self.sys_platform if self.machine is None else f"{self.sys_platform} {self.machine}"

    @property
    def marker(self) -> str:
        text = f"sys_platform == '{self.sys_platform}'"
        return text if self.machine is None else f"{text} and platform_machine == '{self.machine}'"

    def covers(self, platform: Mapping[str, str]) -> bool:
        return platform["sys_platform"] == self.sys_platform and self.machine in (
            None,
            platform["platform_machine"],
        )


@functools.cache
def _platforms() -> tuple[dict[str, str], ...]:
    """Every platform of knowledge/platforms.toml with every Python version: the
    environments a project's markers are evaluated in."""
    from doctor.knowledge import load

    table = load("platforms")
    return tuple(
        {
            **{k: str(v) for k, v in platform.items()},
            "python_version": python,
            "python_full_version": f"{python}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "extra": "",
        }
        for platform in table["platform"]
        for python in table["pythons"]
    )


def _selected(marker: str) -> list[dict[str, str]]:
    """The platforms where a marker as pyproject.toml writes it holds. One this doctor
    cannot read selects none (no false alarm from it)."""
    try:
        parsed = Marker(marker)
    except InvalidMarker:
        return []
    selected = []
    for platform in _platforms():
        try:
            if parsed.evaluate(platform):
                selected.append(platform)
        except (UndefinedComparison, UndefinedEnvironmentName):
            continue
    return selected


def _targets(markers: Sequence[str], within: Sequence[str]) -> list[_Target]:
    """The platforms ``markers`` select (and, when given, some of ``within`` too)."""
    allowed = [p for w in within for p in _selected(w)]
    targets: list[_Target] = []
    for marker in markers:
        names_machine = "platform_machine" in marker or "platform.machine" in marker
        for platform in _selected(marker):
            if within and platform not in allowed:
                continue
            target = _Target(
                platform["sys_platform"], platform["platform_machine"] if names_machine else None
            )
            if target not in targets:
                targets.append(target)
    return targets


def _torch_edges(graph: LockGraph) -> list[str | None]:
    """The markers under which the project itself requires torch, as uv.lock records its
    edges (None: everywhere). Empty when torch is not a direct dependency."""
    project = canonicalize_name(graph.project or "")
    markers: list[str | None] = []
    for package in graph.packages:
        if canonicalize_name(package.name) != project:
            continue
        edges = [
            *package.dependencies,
            *(e for v in package.optional.values() for e in v),
            *(e for v in package.groups.values() for e in v),
        ]
        markers += [e.marker for e in edges if canonicalize_name(e.name) == "torch"]
    return markers


def _lacking_wheels(
    settings: UvSettings, torch_entries: Sequence[Mapping[str, Any]], graph: LockGraph
) -> list[_Target]:
    """The targeted platforms uv.lock has no torch wheel for and required-environments
    does not name (uv then locks without complaint, and `uv sync` there fails). A platform
    is targeted when [tool.uv] environments or torch's source markers name it, and the
    project requires torch there."""
    served: set[tuple[str, str]] = set()
    for package in graph.packages:
        if package.name == "torch":
            for filename in package.wheels:
                served |= served_platforms(filename)
    if not served or ANY in served:
        return []
    markers = [str(e["marker"]) for e in torch_entries if isinstance(e.get("marker"), str)]
    environments = list(settings.environments)
    targets = _targets(environments, ())
    targets += [t for t in _targets(markers, environments) if t not in targets]
    edges = _torch_edges(graph)
    if edges and None not in edges:
        targets = [
            t
            for t in targets
            if any(t.covers(p) and uv_marker_applies(m, p) for p in _platforms() for m in edges)
        ]
    required = [p for m in settings.required_environments for p in _selected(m)]
    lacking = [
        t
        for t in targets
        if not any(t.sys_platform == s and t.machine in (None, m) for s, m in served)
        and not any(t.covers(p) for p in required)
    ]
    # Linux without any wheel says it all: not also "linux aarch64".
    return [t for t in lacking if t.machine is None or _Target(t.sys_platform, None) not in lacking]


@dataclass(frozen=True)
class UvProblem:
    """One pitfall: its kind, what to tell the user, and what its remedy needs."""

    kind: str  # conflicts-missing, marker-extra, family-routing, torch-backend-with-sources,
    # unsafe-best-match, required-environments
    text: str
    package: str | None = None  # marker-extra, family-routing
    selectors: tuple[tuple[str, str], ...] = ()  # conflicts-missing: ("extra", "cu126"), …
    # required-environments: the platforms lacking a torch wheel ("win32", "linux aarch64"),
    # and the required-environments markers that name them.
    platforms: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()


@dataclass(frozen=True)
class UvTorchConfig(Payload):
    problems: tuple[UvProblem, ...]
    pyproject_path: str | None

    def subjects(self) -> frozenset[str]:
        return frozenset(p.kind for p in self.problems)


def torch_problems(facts: Facts) -> list[UvProblem]:
    """Every routing pitfall found."""
    settings, project = facts.uv_settings, facts.project
    if settings is None or project is None:
        return []
    problems: list[UvProblem] = []
    torch_entries = settings.sources.get("torch", ())
    pytorch = pytorch_indexes(project)

    # 1. Extras or groups that pin different indexes need [tool.uv] conflicts.
    chosen: dict[tuple[str, str], str] = {}
    for name in ROUTED_FAMILY:
        for entry in settings.sources.get(name, ()):
            key = selector(entry)
            if key is not None and entry.get("index") is not None:
                chosen.setdefault(key, str(entry["index"]))
    missing = [
        (a, b)
        for i, a in enumerate(chosen)
        for b in list(chosen)[i + 1 :]
        if chosen[a] != chosen[b] and not _in_conflict(settings, a, b)
    ]
    if missing:
        pairs = ", ".join(f"{a[0]} {a[1]} ({chosen[a]}) / {b[1]} ({chosen[b]})" for a, b in missing)
        problems.append(
            UvProblem(
                kind="conflicts-missing",
                text=f"these pin different indexes and are not declared in [tool.uv] "
                f"conflicts: {pairs}; uv must resolve them together and cannot",
                selectors=tuple(chosen),
            )
        )

    # 2. marker = "extra == …" where uv wants extra = "…".
    for name in ROUTED_FAMILY:
        for entry in settings.sources.get(name, ()):
            marker = entry.get("marker")
            if isinstance(marker, str) and _ANY_EXTRA.search(marker):
                problems.append(
                    UvProblem(
                        kind="marker-extra",
                        text=f'{name}\'s source is keyed by marker = "{marker}": uv chooses a '
                        "source per extra by `extra = …`; markers on `extra` overlap (uv then "
                        "refuses pyproject.toml: source markers must be disjoint) or, made "
                        "disjoint, do not keep the extras' builds apart",
                        package=name,
                    )
                )
                break

    # 3. torchvision / torchaudio routed differently from torch.
    if torch_entries:
        for name in ROUTED_FAMILY[1:]:
            if not _declared(settings, project.declared_dependencies, name):
                continue
            entries = settings.sources.get(name, ())
            if _routing(entries) != _routing(torch_entries):
                where = (
                    "has no [tool.uv.sources] entry, so it comes from the default index"
                    if not entries
                    else "has other [tool.uv.sources] entries than torch"
                )
                problems.append(
                    UvProblem(
                        kind="family-routing",
                        text=f"{name} {where}: a {name} built for another torch or CUDA "
                        "variant than the torch from the PyTorch index",
                        package=name,
                    )
                )

    # 4. torch-backend beside explicit sources.
    backends = [
        f"{where} = {value!r}"
        for where, value in (
            ("[tool.uv] torch-backend", settings.torch_backend),
            ("[tool.uv.pip] torch-backend", settings.pip_torch_backend),
            ("UV_TORCH_BACKEND", facts.environment.get("UV_TORCH_BACKEND")),
        )
        if value
    ]
    if backends and any(e.get("index") for e in torch_entries):
        problems.append(
            UvProblem(
                kind="torch-backend-with-sources",
                text=f"{', '.join(backends)} beside torch's explicit [tool.uv.sources]: "
                "`uv pip` takes torch from the backend's index, `uv lock`/`uv sync` from the "
                "sources; the two disagree silently",
            )
        )

    # 5. unsafe-best-match with a PyTorch index.
    strategies = [
        f"{where} = {value!r}"
        for where, value in (
            ("[tool.uv] index-strategy", settings.index_strategy),
            ("[tool.uv.pip] index-strategy", settings.pip_index_strategy),
            ("UV_INDEX_STRATEGY", facts.environment.get("UV_INDEX_STRATEGY")),
        )
        if value == "unsafe-best-match"
    ]
    if strategies and pytorch:
        problems.append(
            UvProblem(
                kind="unsafe-best-match",
                text=f"{', '.join(strategies)} with a PyTorch index: a newer torch on "
                "another index (PyPI's, of another CUDA variant) beats the PyTorch index's "
                "build, and any index may supply a package of the same name",
            )
        )

    # 6. A targeted platform with no locked torch wheel and no required-environments.
    graph = facts.lock_graph
    if graph is not None:
        lacking = _lacking_wheels(settings, torch_entries, graph)
        if lacking:
            labels = ", ".join(t.label for t in lacking)
            problems.append(
                UvProblem(
                    kind="required-environments",
                    text=f"pyproject.toml targets {labels}, and uv.lock holds no torch wheel "
                    "for it: `uv lock` succeeded without one, and `uv sync` there fails; "
                    "[tool.uv] required-environments makes `uv lock` say so",
                    platforms=tuple(t.label for t in lacking),
                    markers=tuple(t.marker for t in lacking),
                )
            )
    return problems


@check(
    "uv-torch-config",
    severities=(Severity.WARNING,),
    family="uv-config",
    summary="pyproject.toml's uv settings route torch in a way uv accepts silently and the "
    "project did not mean (missing conflicts, extra markers, unrouted torchvision, "
    "torch-backend, unsafe-best-match, required-environments).",
    label="uv's torch settings (conflicts, sources, backend, strategy)",
    payload=UvTorchConfig,
    requires=("project", "uv-project"),
)
def uv_torch_config(ctx: Context) -> Outcome:
    facts = ctx.facts
    assert facts.project is not None
    if facts.uv_settings is None:
        return Skip("pyproject.toml could not be read")
    problems = torch_problems(facts)
    if not problems:
        return []
    first = problems[0].text.split(":")[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return [
        Finding(
            id="uv-torch-config",
            severity=Severity.WARNING,
            title=f"uv's torch settings: {first}{more}",
            detail=(
                "uv accepts these settings without an error, and they do not do what a "
                "PyTorch setup means by them: a lock that fails or mixes builds across "
                "extras, a torchvision for another torch, a CPU or PyPI torch where a CUDA "
                "build was wanted, or a platform the lock has no torch for."
            ),
            evidence=tuple(p.text for p in problems),
            data=UvTorchConfig(
                problems=tuple(problems), pyproject_path=facts.project.pyproject_path
            ),
        )
    ]


# --- remedies: one per problem, TOML where a block says it ---------------------------


def _toml(document: Mapping[str, Any]) -> str:
    import tomlkit

    return tomlkit.dumps(document).strip() + "\n"


def _inline(entries: Sequence[Mapping[str, Any]], multiline: bool = True) -> Any:
    """An array of inline tables, as uv's guide writes sources and conflicts."""
    import tomlkit

    array = tomlkit.array()
    for entry in entries:
        table = tomlkit.inline_table()
        table.update(dict(entry))
        array.append(table)
    array.multiline(multiline)
    return array


def _conflicts(problem: UvProblem, ctx: Context) -> Remedy:
    import tomlkit

    settings = ctx.facts.uv_settings
    existing = [list(group) for group in settings.conflicts] if settings else []
    group = [{kind: name} for kind, name in problem.selectors]
    value = tomlkit.array()
    for members in [*existing, group]:
        value.append(_inline(members, multiline=False))
    return Remedy(
        RemedyKind.TOML,
        "declare the extras (groups) that choose a torch build as conflicting "
        "(`torch-doctor fix` writes it), then `uv lock`",
        _toml({"tool": {"uv": {"conflicts": value}}}),
        target=ctx.facts.project.pyproject_path if ctx.facts.project else None,
    )


def _sources(package: str, entries: Sequence[Mapping[str, Any]], ctx: Context, why: str) -> Remedy:
    return Remedy(
        RemedyKind.TOML,
        why,
        _toml({"tool": {"uv": {"sources": {package: _inline(entries)}}}}),
        target=ctx.facts.project.pyproject_path if ctx.facts.project else None,
    )


def _marker_extra(problem: UvProblem, ctx: Context) -> Remedy:
    package = problem.package or "torch"
    entries = ctx.facts.uv_settings.sources.get(package, ()) if ctx.facts.uv_settings else ()
    rewritten = []
    for entry in entries:
        extra = marker_extra(entry)
        if extra is None:
            if "extra" in str(entry.get("marker", "")):
                return Remedy(
                    RemedyKind.TEXT,
                    f"key {package}'s sources by extra",
                    f"In [tool.uv.sources] {package}, replace the `extra == …` part of each "
                    'marker by `extra = "<name>"` on the entry (uv\'s PyTorch guide, '
                    '"Configuring accelerators with optional dependencies").',
                )
            rewritten.append(dict(entry))
            continue
        fixed = {k: v for k, v in entry.items() if k != "marker"}
        fixed["extra"] = extra
        rewritten.append(fixed)
    return _sources(
        package,
        rewritten,
        ctx,
        f'key {package}\'s sources by `extra = "…"`, not by marker (`torch-doctor fix` writes it)',
    )


@remedy("uv-torch-config")
def _uv_config(finding: Finding[UvTorchConfig], ctx: Context) -> list[Remedy]:
    remedies: list[Remedy] = []
    torch_entries = ctx.facts.uv_settings.sources.get("torch", ()) if ctx.facts.uv_settings else ()
    for problem in finding.data.problems:
        kind = problem.kind
        if kind == "conflicts-missing":
            remedies.append(_conflicts(problem, ctx))
        elif kind == "marker-extra":
            remedies.append(_marker_extra(problem, ctx))
        elif kind == "family-routing" and problem.package is not None:
            package = problem.package
            remedies.append(
                _sources(
                    package,
                    torch_entries,
                    ctx,
                    f"route {package} exactly like torch (`torch-doctor fix` writes it)",
                )
            )
        elif kind == "torch-backend-with-sources":
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    "choose one way",
                    "In a project, keep the [tool.uv.sources] entries and remove "
                    "`torch-backend` from [tool.uv] / [tool.uv.pip] and unset "
                    "UV_TORCH_BACKEND; `--torch-backend` is for `uv pip` outside a project.",
                )
            )
        elif kind == "unsafe-best-match":
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    "use uv's default index strategy",
                    'Remove `index-strategy = "unsafe-best-match"` (and unset '
                    "UV_INDEX_STRATEGY); pin torch, torchvision and torchaudio to the PyTorch "
                    "index with [tool.uv.sources] and mark it `explicit = true`.",
                )
            )
        elif kind == "required-environments":
            settings = ctx.facts.uv_settings
            markers = list(settings.required_environments) if settings else []
            markers += [m for m in problem.markers if m not in markers]
            remedies.append(
                Remedy(
                    RemedyKind.TOML,
                    "run `torch-doctor fix`: it writes this into pyproject.toml (a diff, a "
                    "backup), so that `uv lock` requires a torch wheel for "
                    f"{', '.join(problem.platforms)}; then `uv lock`: it fails loudly where "
                    "there is none, instead of `uv sync` failing there later",
                    _toml({"tool": {"uv": {"required-environments": markers}}}),
                    target=ctx.facts.project.pyproject_path if ctx.facts.project else None,
                )
            )
    if any(r.kind is RemedyKind.TOML for r in remedies):
        remedies.append(Remedy(RemedyKind.SHELL, "then re-lock and sync", "uv lock\nuv sync"))
    return remedies
