"""The lock-missing-dependencies remedy follows how uv picks a dependency-metadata entry.

The rule itself (exact version first, then an entry without a version, first one wins,
other versions ignored) was found with the real uv; tests/test_uv_lock_metadata.py
proves the consequences end to end.
"""

from __future__ import annotations

from typing import Any

import pytest

from doctor.findings import RemedyKind
from doctor.pipeline import judge
from doctor.remedies.metadata_block import entry_uv_uses
from tests.factory import TORCH_2_14_REQUIRES
from tests.handmade import facts, healthy_distributions, locked_torch, project

VERSION = "2.14.1+cu130"
PLAIN = ("filelock", "typing-extensions", "setuptools", "sympy", "networkx", "jinja2", "fsspec")


def entry(version: str | None, requires: list[str], name: str = "torch") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "requires-dist": requires}
    if version is not None:
        out["version"] = version
    return out


FULL = entry(VERSION, list(TORCH_2_14_REQUIRES))
PARTIAL = entry(VERSION, ["filelock"])
ANY_VERSION = entry(None, ["filelock"])
BARE = entry("2.14.1", list(TORCH_2_14_REQUIRES))


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], None),
        ([BARE], None),  # 2.14.1 is not 2.14.1+cu130: uv ignores it
        ([ANY_VERSION], ANY_VERSION),
        ([ANY_VERSION, FULL], FULL),  # an exact version beats a versionless entry
        ([FULL, ANY_VERSION], FULL),
        ([PARTIAL, FULL], PARTIAL),  # the first entry for a version wins
        ([entry(VERSION, ["filelock"], name="Torch")], entry(VERSION, ["filelock"], "Torch")),
        ([entry(VERSION, ["filelock"], name="numpy")], None),
    ],
)
def test_entry_uv_uses_follows_uv(entries: list[dict[str, Any]], expected: Any) -> None:
    assert entry_uv_uses(entries, "torch", VERSION) == expected


def remedies_with(*entries: dict[str, Any]) -> list[tuple[RemedyKind, str, str]]:
    locked = locked_torch(dependencies=[(n, None) for n in PLAIN])
    report = judge(
        facts(healthy_distributions(), project=project(locked, dependency_metadata=entries))
    )
    [finding] = [f for f in report.findings if f.id == "lock-missing-dependencies"]
    return [(r.kind, r.summary, r.text) for r in finding.remedies]


def test_without_an_entry_the_block_is_to_be_appended() -> None:
    [(kind, summary, text), (_, _, relock)] = remedies_with()
    assert kind is RemedyKind.TOML
    assert "append to pyproject.toml" in summary
    assert f'version = "{VERSION}"' in text
    assert relock == "uv lock\nuv sync"


def test_an_entry_declaring_everything_only_needs_a_relock() -> None:
    assert remedies_with(FULL) == [
        (
            RemedyKind.SHELL,
            "pyproject.toml already declares these for uv; uv.lock predates it: re-lock and sync",
            "uv lock\nuv sync",
        )
    ]


def test_an_incomplete_entry_for_the_version_is_to_be_replaced() -> None:
    [(kind, summary, _), _] = remedies_with(PARTIAL, FULL)
    assert kind is RemedyKind.TOML
    assert summary.startswith(
        f"replace the [[tool.uv.dependency-metadata]] entry for torch {VERSION}"
    )


def test_an_entry_for_another_version_does_not_count() -> None:
    [(kind, summary, _), _] = remedies_with(BARE)
    assert kind is RemedyKind.TOML
    assert "append to pyproject.toml" in summary


def test_an_incomplete_versionless_entry_is_overridden_by_appending() -> None:
    [(kind, summary, _), _] = remedies_with(ANY_VERSION)
    assert kind is RemedyKind.TOML
    assert "append to pyproject.toml" in summary


def test_an_entry_with_other_pins_is_to_be_replaced_not_just_relocked() -> None:
    other_build = [r.replace("9.24.0.43", "9.19.0.56") for r in TORCH_2_14_REQUIRES]
    [(kind, summary, _), _] = remedies_with(entry(VERSION, other_build))
    assert kind is RemedyKind.TOML
    assert summary.startswith("replace the [[tool.uv.dependency-metadata]] entry")
