"""The `[[tool.uv.dependency-metadata]]` block, built from an installed wheel's METADATA."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from doctor.derive.expectations import same_version
from doctor.facts import DistributionFacts

if TYPE_CHECKING:
    from tomlkit.items import Table

__all__ = [
    "dependency_metadata_table",
    "entry_uv_uses",
    "metadata_entry",
    "render_dependency_metadata",
    "render_metadata_entries",
]


def entry_uv_uses(
    entries: Sequence[Mapping[str, Any]], name: str, version: str
) -> Mapping[str, Any] | None:
    """The [[tool.uv.dependency-metadata]] entry uv applies to ``name`` at ``version``.

    As the real uv (0.13.9) behaves, pinned by tests/test_uv_lock_metadata.py: the
    first entry whose version equals ``version`` exactly, local tag included, wins over
    any entry without a version; otherwise the first entry without a version. An entry
    for another version ("2.6.0" for 2.6.0+cu126) is silently ignored, and so is any
    later entry for the same version.
    """
    wanted = canonicalize_name(name)
    mine = [e for e in entries if canonicalize_name(str(e.get("name", ""))) == wanted]
    for entry in mine:
        declared = entry.get("version")
        if declared is not None and same_version(str(declared), version):
            return entry
    for entry in mine:
        if entry.get("version") is None:
            return entry
    return None


def dependency_metadata_table(dist: DistributionFacts) -> Table:
    """One entry of tool.uv.dependency-metadata: the wheel's own metadata, verbatim."""
    return metadata_entry(
        dist.display_name,
        dist.version,
        dist.requires_python,
        dist.requires_dist,
        dist.provides_extra,
    )


def metadata_entry(
    name: str,
    version: str,
    requires_python: str | None,
    requires_dist: Sequence[str],
    provides_extra: Sequence[str],
) -> Table:
    """One entry of tool.uv.dependency-metadata, as uv 0.13.9 reads it."""
    import tomlkit  # imported only when a block is needed: keeps start-up fast

    table = tomlkit.table()
    table.add("name", name)
    # Exact, with the local tag: uv ignores an entry for "2.6.0" when it locks 2.6.0+cu126.
    table.add("version", version)
    if requires_python:
        table.add("requires-python", requires_python)
    requires = tomlkit.array()
    requires.extend(requires_dist)
    requires.multiline(True)
    table.add("requires-dist", requires)
    if provides_extra:
        extras = tomlkit.array()
        extras.extend(provides_extra)
        # uv's own spelling (it writes it so in uv.lock); it also accepts provides-extra.
        table.add("provides-extras", extras)
    return table


def render_metadata_entries(tables: Sequence[Table]) -> str:
    """Valid TOML with these [[tool.uv.dependency-metadata]] entries, ready to paste."""
    import tomlkit
    from tomlkit.items import AoT

    entries = AoT(list(tables))
    document = tomlkit.document()
    tool = tomlkit.table(is_super_table=True)
    uv = tomlkit.table(is_super_table=True)
    uv.add("dependency-metadata", entries)
    tool.add("uv", uv)
    document.add("tool", tool)
    return tomlkit.dumps(document).strip() + "\n"


def render_dependency_metadata(dist: DistributionFacts) -> str:
    """Valid TOML, ready to paste at the end of pyproject.toml."""
    return render_metadata_entries([dependency_metadata_table(dist)])
