"""torch-metadata-damaged and duplicate-dist-info: fire on damage, quiet when healthy.

Unit tests judge hand-built facts; scenario tests damage a real venv's dist-info as an
interrupted install or upgrade would, run the CLI and (for the duplicate) run the printed
removal literally, then check the next run.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from doctor.facts import Facts
from doctor.findings import Severity
from tests.factory import FakeEnv, run_doctor
from tests.handmade import CheckUnderTest, dist, healthy_facts, replace_dist, torch_dist

DAMAGED = CheckUnderTest("torch-metadata-damaged")
DUPLICATE = CheckUnderTest("duplicate-dist-info")


def with_extra(all_facts: Facts, *extra: object) -> Facts:
    return dataclasses.replace(
        all_facts,
        distributions=(*all_facts.distributions, *extra),  # type: ignore[arg-type]
    )


# --- unit: pure checks on hand-built facts ---------------------------------------------------


@pytest.mark.parametrize("check", [DAMAGED, DUPLICATE], ids=lambda c: c.id)
def test_healthy_environment_keeps_the_dist_info_checks_quiet(check: CheckUnderTest) -> None:
    assert check.run(healthy_facts()) == []


def test_torch_without_readable_metadata_is_an_error_with_the_pinned_reinstall() -> None:
    damaged = dataclasses.replace(torch_dist(), error="METADATA has no Name field")
    finding = DAMAGED.judged(replace_dist(healthy_facts(), damaged))
    assert finding.severity is Severity.ERROR
    assert "METADATA has no Name field" in finding.evidence[0]
    [remedy] = finding.remedies
    assert "torch==2.14.1+cu130" in remedy.text
    assert "--index-url https://download.pytorch.org/whl/cu130" in remedy.text
    assert "--no-deps" in remedy.text


def test_a_damaged_companion_is_not_torch_metadata_damaged() -> None:
    broken = dataclasses.replace(dist("nvidia-nccl-cu13", "2.28.9"), error="cannot read")
    assert DAMAGED.run(replace_dist(healthy_facts(), broken)) == []


def test_two_torch_dist_infos_in_one_directory_name_both_versions_and_the_stale_one() -> None:
    stale = dist("torch", "2.13.0")
    finding = DUPLICATE.judged(with_extra(healthy_facts(), stale))
    assert finding.severity is Severity.ERROR
    assert "2.14.1+cu130" in finding.title and "2.13.0" in finding.title
    assert finding.data.stale_dirs == (stale.metadata_dir,)
    [remedy] = finding.remedies
    assert remedy.text.splitlines()[0] == f"rm -rf -- {stale.metadata_dir}"


def test_the_same_distribution_in_two_sys_path_entries_is_not_a_duplicate() -> None:
    elsewhere = dataclasses.replace(
        dist("filelock", "3.0.0"), location="/usr/lib/python3/dist-packages", shadowed=True
    )
    assert DUPLICATE.run(with_extra(healthy_facts(), elsewhere)) == []


# --- scenarios: a real venv, damaged as an interrupted install leaves it --------------------


@pytest.fixture
def healthy(make_env: Callable[..., FakeEnv]) -> FakeEnv:
    env = make_env()
    env.install_healthy_cu130()
    return env


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "directory"])
def test_damaged_torch_metadata_is_reported_as_an_error(
    healthy: FakeEnv, workdir: Path, damage: str
) -> None:
    [info] = healthy.site_packages.glob("torch-*.dist-info")
    metadata = info / "METADATA"
    metadata.unlink()
    if damage == "empty":
        metadata.write_bytes(b"")
    elif damage == "garbage":
        metadata.write_bytes(bytes(range(256)) * 16)
    elif damage == "directory":
        metadata.mkdir()
    run = run_doctor("--python", str(healthy.root), "--no-load", "--format", "json", cwd=workdir)
    assert run.returncode == 1, run.stderr
    [finding] = [f for f in run.json["findings"] if f["id"] == "torch-metadata-damaged"]
    assert "torch==2.14.1+cu130" in finding["remedies"][0]["text"]


def test_an_interrupted_upgrade_is_reported_and_the_printed_removal_clears_it(
    healthy: FakeEnv, workdir: Path
) -> None:
    stale = healthy.install("torch", "2.13.0")  # the old dist-info the upgrade left
    run = run_doctor("--python", str(healthy.root), "--no-load", "--format", "json", cwd=workdir)
    assert run.returncode == 1
    [finding] = [f for f in run.json["findings"] if f["id"] == "duplicate-dist-info"]
    assert sorted(finding["data"]["versions"]) == ["2.13.0", "2.14.1+cu130"]
    removal = finding["remedies"][0]["text"].splitlines()[0]
    assert str(stale) in removal
    bash = shutil.which("bash") or "/bin/sh"
    subprocess.run([bash, "-c", removal], check=True)  # the printed command, literally
    assert not stale.exists()
    after = run_doctor("--python", str(healthy.root), "--no-load", "--format", "json", cwd=workdir)
    assert not [f for f in after.json["findings"] if f["id"] == "duplicate-dist-info"]
    assert after.returncode == 0, after.stdout
