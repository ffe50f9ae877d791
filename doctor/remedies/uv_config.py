"""Remedies of uv-torch-config: one per problem, TOML where a block says it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from doctor.checks.uv_config import marker_extra
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for


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


def _conflicts(problem: Mapping[str, Any], facts: Facts) -> Remedy:
    import tomlkit

    settings = facts.uv_settings
    existing = [list(group) for group in settings.conflicts] if settings else []
    group = [{kind: name} for kind, name in problem["selectors"]]
    value = tomlkit.array()
    for members in [*existing, group]:
        value.append(_inline(members, multiline=False))
    return Remedy(
        RemedyKind.TOML,
        "declare the extras (groups) that choose a torch build as conflicting "
        "(`torch-doctor fix` writes it), then `uv lock`",
        _toml({"tool": {"uv": {"conflicts": value}}}),
        target=facts.project.pyproject_path if facts.project else None,
    )


def _sources(package: str, entries: Sequence[Mapping[str, Any]], facts: Facts, why: str) -> Remedy:
    return Remedy(
        RemedyKind.TOML,
        why,
        _toml({"tool": {"uv": {"sources": {package: _inline(entries)}}}}),
        target=facts.project.pyproject_path if facts.project else None,
    )


def _marker_extra(problem: Mapping[str, Any], facts: Facts) -> Remedy:
    package = problem["package"]
    entries = facts.uv_settings.sources.get(package, ()) if facts.uv_settings else ()
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
        facts,
        f'key {package}\'s sources by `extra = "…"`, not by marker (`torch-doctor fix` writes it)',
    )


@remedy_for("uv-torch-config")
def _uv_config(finding: Finding, facts: Facts) -> list[Remedy]:
    remedies: list[Remedy] = []
    torch_entries = facts.uv_settings.sources.get("torch", ()) if facts.uv_settings else ()
    for problem in finding.data.get("problems", []):
        kind = problem["kind"]
        if kind == "conflicts-missing":
            remedies.append(_conflicts(problem, facts))
        elif kind == "marker-extra":
            remedies.append(_marker_extra(problem, facts))
        elif kind == "family-routing":
            package = problem["package"]
            remedies.append(
                _sources(
                    package,
                    torch_entries,
                    facts,
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
            settings = facts.uv_settings
            markers = list(settings.required_environments) if settings else []
            markers += [f"sys_platform == '{p}'" for p in problem["platforms"]]
            remedies.append(
                Remedy(
                    RemedyKind.TOML,
                    "require a torch wheel for the targeted platforms (then `uv lock` fails "
                    "loudly where there is none, instead of `uv sync` later)",
                    _toml({"tool": {"uv": {"required-environments": markers}}}),
                    target=facts.project.pyproject_path if facts.project else None,
                )
            )
    if any(r.kind is RemedyKind.TOML for r in remedies):
        remedies.append(Remedy(RemedyKind.SHELL, "then re-lock and sync", "uv lock\nuv sync"))
    return remedies
