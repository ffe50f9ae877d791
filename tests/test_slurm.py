"""Slurm for real: a one-node cluster (munged, slurmctld, slurmd from Debian's packages,
started and stopped here), `srun torch-doctor check --output reports/{host}….json` on it,
then `compare` on what the tasks wrote."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from doctor.redact import host_pseudonym
from tests.factory import FakeEnv, doctor_env, run_doctor
from tests.slurm_cluster import SlurmCluster, slurm_unavailable, start_cluster

UNAVAILABLE = slurm_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


def srun(cluster: SlurmCluster, cwd: Path, *args: str) -> str:
    import subprocess

    env = {**doctor_env(), "SLURM_CONF": cluster.env["SLURM_CONF"]}
    run = subprocess.run(
        # --overcommit: more tasks than the node's CPUs; --immediate: fail, never queue
        ["srun", "--overcommit", "--immediate=30", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode in (0, 1), run.stderr + cluster.logs()
    return run.stdout


def test_srun_writes_one_report_per_task_and_compare_names_the_odd_one(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    healthy = FakeEnv.create(tmp_path / "healthy")
    healthy.install_healthy_cu130()
    missing = FakeEnv.create(tmp_path / "missing")
    missing.install_healthy_cu130(skip=["nvidia-nccl-cu13"])
    reports = tmp_path / "reports"
    reports.mkdir()
    doctor = f"{sys.executable} -m doctor check --no-load --format json"
    # Three tasks of one job; task 2's node was synced from an older lock.
    srun(
        slurm,
        tmp_path,
        "-n",
        "3",
        "sh",
        "-c",
        f'if [ "$SLURM_PROCID" = 2 ]; then venv={missing.root}; else venv={healthy.root}; fi; '
        f'exec {doctor} --python "$venv" --output "reports/{{host}}-{{SLURM_PROCID}}.json"',
    )
    files = sorted(p.name for p in reports.iterdir())
    job = json.loads((reports / files[0]).read_text())["facts"]["node"]["identity"]
    pseudonym = host_pseudonym(os.uname().nodename, job["launcher_ids"]["SLURM_JOB_ID"])
    assert files == [f"{pseudonym}-{task}.json" for task in range(3)]
    assert job["launcher"] == "slurm"
    run = run_doctor("compare", str(reports), "--format", "json", cwd=tmp_path)
    assert run.returncode == 1
    assert run.json["reports"] == 3
    (odd,) = run.json["minorities"]
    assert odd["nodes"] == [f"{pseudonym} (rank 2)"]
    assert {d["fact"] for d in odd["differences"]} == {"wheel nvidia-nccl-cu13", "NCCL"}


def test_one_report_per_node_with_the_host_placeholder(slurm: SlurmCluster, tmp_path: Path) -> None:
    healthy = FakeEnv.create(tmp_path / "healthy")
    healthy.install_healthy_cu130()
    (tmp_path / "reports").mkdir()
    srun(
        slurm,
        tmp_path,
        "-N",
        "1",
        "--ntasks-per-node=1",
        sys.executable,
        "-m",
        "doctor",
        "check",
        "--python",
        str(healthy.root),
        "--no-load",
        "--format",
        "json",
        "--no-redact",
        "--output",
        "reports/{host}.json",
    )
    host = os.uname().nodename.split(".", 1)[0]
    assert [p.name for p in (tmp_path / "reports").iterdir()] == [f"{host}.json"]
    run = run_doctor("compare", str(tmp_path / "reports"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout
    assert "1 report, all agree" in run.stdout
