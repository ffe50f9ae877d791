"""lock-missing-dependencies as a pure function over hand-built facts."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from packaging.requirements import Requirement

from doctor.checks import Skip
from doctor.checks.registry import outcome_of
from doctor.derive import derive
from doctor.facts import Facts, LockedPackage
from doctor.findings import Finding, RemedyKind
from doctor.pipeline import judge
from tests.factory import TORCH_2_14_REQUIRES, TORCH_2_14_WHEELS
from tests.handmade import facts, healthy_distributions, locked_torch, marker_env, project

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LINUX = "sys_platform == 'linux'"
# What torch 2.14.1 requires on Linux x86_64 with Python 3.11 (names only).
TORCH_LINUX_DEPENDENCIES = (
    "filelock",
    "typing-extensions",
    "setuptools",
    "sympy",
    "networkx",
    "jinja2",
    "fsspec",
    "cuda-toolkit",
    "cuda-bindings",
    "nvidia-cudnn-cu13",
    "nvidia-cusparselt-cu13",
    "nvidia-nccl-cu13",
    "nvidia-nvshmem-cu13",
    "triton",
)
PLAIN = TORCH_LINUX_DEPENDENCIES[:7]


def deps(names: tuple[str, ...], marker: str | None = None) -> list[tuple[str, str | None]]:
    return [(n, marker) for n in names]


def run(all_facts: Facts) -> Skip | list[Finding]:
    outcome = outcome_of("lock-missing-dependencies", derive(all_facts))
    return outcome if isinstance(outcome, Skip) else list(outcome)


def with_lock(*locked: LockedPackage, **kwargs: Any) -> Facts:
    return facts(healthy_distributions(), project=project(*locked, **kwargs))


def missing(outcome: Skip | list[Finding]) -> list[str]:
    assert not isinstance(outcome, Skip), outcome
    [finding] = outcome
    assert finding.id == "lock-missing-dependencies"
    return [Requirement(r).name for r in finding.data.missing]


def test_lock_recording_every_dependency_is_quiet() -> None:
    complete = locked_torch(dependencies=deps(TORCH_LINUX_DEPENDENCIES, LINUX))
    assert run(with_lock(complete)) == []


def test_lock_without_nvidia_dependencies_names_each_with_its_marker() -> None:
    # The founding case (uv#11945): the lock kept the plain dependencies only.
    stripped = locked_torch(dependencies=deps(PLAIN))
    outcome = run(with_lock(stripped))
    assert sorted(missing(outcome)) == sorted(set(TORCH_LINUX_DEPENDENCIES) - set(PLAIN))
    assert not isinstance(outcome, Skip)
    requirements = outcome[0].data.missing
    assert 'nvidia-cudnn-cu13==9.24.0.43; platform_system == "Linux"' in requirements
    assert any("download.pytorch.org/whl/cu130" in line for line in outcome[0].evidence)


def test_dependency_locked_for_another_platform_only_counts_as_missing() -> None:
    windows_only = locked_torch(
        dependencies=deps(PLAIN) + deps(TORCH_LINUX_DEPENDENCIES[7:], "sys_platform == 'win32'")
    )
    assert sorted(missing(run(with_lock(windows_only)))) == sorted(TORCH_LINUX_DEPENDENCIES[7:])


def test_uv_conflict_markers_with_extra_count_as_recorded() -> None:
    # `[tool.uv] conflicts` locks: dependencies gated on the project's extra (catalogue 2).
    gated = locked_torch(
        dependencies=deps(PLAIN)
        + deps(
            TORCH_LINUX_DEPENDENCIES[7:],
            "sys_platform == 'linux' and extra == 'extra-4-demo-cu130'",
        )
    )
    assert run(with_lock(gated)) == []


def test_conflict_marker_for_another_platform_does_not_count_here() -> None:
    # The extra is active when synced with it, but the dependency is still Windows-only.
    windows_gated = locked_torch(
        dependencies=deps(PLAIN)
        + deps(
            TORCH_LINUX_DEPENDENCIES[7:],
            "sys_platform == 'win32' and extra == 'extra-4-demo-cu130'",
        )
    )
    assert sorted(missing(run(with_lock(windows_gated)))) == sorted(TORCH_LINUX_DEPENDENCIES[7:])


def test_uv_group_markers_count_as_recorded() -> None:
    gated = locked_torch(
        dependencies=deps(PLAIN) + deps(TORCH_LINUX_DEPENDENCIES[7:], "group == 'group-4-demo-gpu'")
    )
    assert run(with_lock(gated)) == []


def test_forked_lock_judges_the_entry_for_this_platform() -> None:
    # uv forks the resolution: one torch entry per platform, told apart by resolution-markers.
    x86_stripped = locked_torch(
        dependencies=deps(PLAIN),
        resolution_markers=["platform_machine == 'x86_64' and sys_platform == 'linux'"],
    )
    arm_complete = locked_torch(
        dependencies=deps(TORCH_LINUX_DEPENDENCIES, LINUX),
        resolution_markers=["platform_machine == 'aarch64' and sys_platform == 'linux'"],
    )
    assert "nvidia-cudnn-cu13" in missing(run(with_lock(x86_stripped, arm_complete)))
    on_arm = facts(
        healthy_distributions(),
        environment=marker_env("aarch64"),
        project=project(x86_stripped, arm_complete),
    )
    assert run(on_arm) == []


def test_forked_lock_with_a_cpu_entry_for_other_platforms_is_quiet_here() -> None:
    cpu = locked_torch(
        "2.14.1+cpu",
        dependencies=deps(PLAIN),
        resolution_markers=["sys_platform != 'linux'"],
        registry="https://download.pytorch.org/whl/cpu",
    )
    cuda = locked_torch(
        dependencies=deps(TORCH_LINUX_DEPENDENCIES, LINUX),
        resolution_markers=["sys_platform == 'linux'"],
    )
    assert run(with_lock(cpu, cuda)) == []


def test_lock_recording_another_torch_version_is_skipped_with_both_versions() -> None:
    outcome = run(with_lock(locked_torch("2.13.0+cu130", dependencies=deps(PLAIN))))
    assert isinstance(outcome, Skip)
    assert "2.13.0+cu130" in outcome.reason and "2.14.1+cu130" in outcome.reason


@pytest.mark.parametrize(
    ("lock_project", "reason"),
    [
        (None, "no uv.lock"),
        (project(has_lock=False), "no uv.lock"),
        (project(locked_torch(), lock_error="uv.lock: not valid TOML"), "could not be read"),
        (project(), "does not record torch"),
    ],
)
def test_check_skips_when_the_lock_cannot_judge(lock_project: object, reason: str) -> None:
    outcome = run(facts(healthy_distributions(), project=lock_project))  # type: ignore[arg-type]
    assert isinstance(outcome, Skip)
    assert reason in outcome.reason


def test_torch_absent_skips_the_lock_check() -> None:
    outcome = run(facts([], project=project(locked_torch())))
    assert isinstance(outcome, Skip)


def test_remedy_is_a_dependency_metadata_block_that_parses() -> None:
    report = judge(with_lock(locked_torch(dependencies=deps(PLAIN))))
    [finding] = report.findings
    toml_remedy, shell_remedy = finding.remedies
    assert toml_remedy.kind is RemedyKind.TOML
    assert toml_remedy.target == "/project/pyproject.toml"
    [entry] = tomllib.loads(toml_remedy.text)["tool"]["uv"]["dependency-metadata"]
    assert entry["name"] == "torch"
    assert entry["version"] == "2.14.1+cu130"
    assert entry["requires-python"] == ">=3.10"
    assert entry["requires-dist"] == list(TORCH_2_14_REQUIRES)
    assert entry["provides-extras"] == ["optree", "opt-einsum", "pyyaml"]
    assert shell_remedy.text == "uv lock\nuv sync"


def test_existing_metadata_entry_is_pointed_out() -> None:
    declared = {"name": "torch", "version": "2.14.1+cu130", "requires-dist": ["filelock"]}
    all_facts = with_lock(locked_torch(dependencies=deps(PLAIN)), dependency_metadata=[declared])
    outcome = run(all_facts)
    assert not isinstance(outcome, Skip)
    assert outcome[0].data.existing_metadata_entry is True
    assert any("already has a [[tool.uv.dependency-metadata]]" in e for e in outcome[0].evidence)


def test_every_wheel_in_the_factory_set_is_expected_by_the_lock_check() -> None:
    # Guards the table above: it must stay what torch 2.14.1 declares on Linux.
    assert set(TORCH_LINUX_DEPENDENCIES) - set(PLAIN) <= set(TORCH_2_14_WHEELS)
