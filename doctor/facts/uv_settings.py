"""Facts: the uv settings of pyproject.toml that decide where torch comes from."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["UvSettings"]


@dataclass(frozen=True)
class UvSettings:
    """[tool.uv] and [project] settings as written (raw values where uv reads them raw).

    ``extras`` / ``groups``: the requirement names each optional-dependency extra and
    each dependency group lists; ``sources``: [tool.uv.sources] entries of every package,
    each as a list of tables.
    """

    pyproject_path: str
    extras: dict[str, tuple[str, ...]] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sources: dict[str, tuple[dict[str, object], ...]] = field(default_factory=dict)
    conflicts: tuple[tuple[dict[str, str], ...], ...] = ()
    torch_backend: str | None = None  # [tool.uv] torch-backend
    pip_torch_backend: str | None = None  # [tool.uv.pip] torch-backend
    index_strategy: str | None = None  # [tool.uv] index-strategy
    pip_index_strategy: str | None = None  # [tool.uv.pip] index-strategy
    environments: tuple[str, ...] = ()
    required_environments: tuple[str, ...] = ()
