"""The `[[tool.uv.dependency-metadata]]` block, built from an installed wheel's METADATA."""

from __future__ import annotations

from typing import TYPE_CHECKING

from doctor.facts import DistributionFacts

if TYPE_CHECKING:
    from tomlkit.items import Table

__all__ = ["dependency_metadata_table", "render_dependency_metadata"]


def dependency_metadata_table(dist: DistributionFacts) -> "Table":
    """One entry of tool.uv.dependency-metadata: the wheel's own metadata, verbatim."""
    import tomlkit  # imported only when a block is needed: keeps start-up fast

    table = tomlkit.table()
    table.add("name", dist.display_name)
    table.add("version", dist.version)  # exact, with the local tag (+cu126)
    if dist.requires_python:
        table.add("requires-python", dist.requires_python)
    requires = tomlkit.array()
    requires.extend(dist.requires_dist)
    requires.multiline(True)
    table.add("requires-dist", requires)
    if dist.provides_extra:
        extras = tomlkit.array()
        extras.extend(dist.provides_extra)
        table.add("provides-extras", extras)
    return table


def render_dependency_metadata(dist: DistributionFacts) -> str:
    """Valid TOML, ready to paste at the end of pyproject.toml."""
    import tomlkit
    from tomlkit.items import AoT

    entries = AoT([dependency_metadata_table(dist)])
    document = tomlkit.document()
    tool = tomlkit.table(is_super_table=True)
    uv = tomlkit.table(is_super_table=True)
    uv.add("dependency-metadata", entries)
    tool.add("uv", uv)
    document.add("tool", tool)
    return tomlkit.dumps(document).strip() + "\n"
