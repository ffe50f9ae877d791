"""Per-node reports: --output placeholders, atomic writes, the node's identity, and host
pseudonyms that agree across the reports of one job."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from doctor.redact import host_pseudonym
from doctor.render.destination import PlaceholderError, expand_output, write_atomically
from tests.factory import FakeEnv, doctor_env, run_doctor

HOST = socket.gethostname().split(".", 1)[0]


@pytest.fixture
def healthy_env(make_env: Callable[..., FakeEnv]) -> FakeEnv:
    env = make_env()
    env.install_healthy_cu130()
    return env


def test_placeholders_take_the_host_and_the_launchers_ids() -> None:
    env = {"RANK": "5", "SLURM_PROCID": "7", "SLURM_NODEID": "2", "LOCAL_RANK": "1"}
    assert expand_output("r/{host}.json", env, host="node3.cluster") == "r/node3.json"
    assert expand_output("{rank}-{LOCAL_RANK}-{SLURM_NODEID}", env, host="h") == "5-1-2"
    assert expand_output("{rank}", {"SLURM_PROCID": "7"}, host="h") == "7"
    assert expand_output("{{literal}}-{SLURM_PROCID}", env, host="h") == "{literal}-7"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("r/{hostname}.json", "unknown placeholder {hostname}"),
        ("r/{SLURM_PROCID}.json", "{SLURM_PROCID} is not set here"),
        ("r/{rank}.json", "{rank} needs one of RANK"),
        ("r/{host:>8}.json", "without a format"),
        ("r/{host.json", "--output r/{host.json"),
    ],
)
def test_a_bad_placeholder_is_a_usage_error_before_anything_runs(
    workdir: Path, template: str, message: str
) -> None:
    with pytest.raises(PlaceholderError, match=message):
        expand_output(template, {}, host="h")
    run = run_doctor(
        "--python", sys.executable, "--format", "json", "--output", template, cwd=workdir
    )
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert not (workdir / "r").exists()


def test_an_atomic_write_leaves_the_whole_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "a.json"
    target.parent.mkdir()
    write_atomically(target, "one")
    write_atomically(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_every_rank_writes_its_own_report_at_once(healthy_env: FakeEnv, workdir: Path) -> None:
    """Four ranks of one job at the same moment, as srun starts them: four whole reports,
    each naming its node and rank, the host as one pseudonym keyed by the job id."""
    procs = []
    (workdir / "reports").mkdir()
    for rank in range(4):
        env = doctor_env(
            {
                "SLURM_JOB_ID": "4242",
                "SLURM_PROCID": str(rank),
                "SLURM_NODEID": "0",
                "SLURM_LOCALID": str(rank),
            }
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "doctor",
                    "check",
                    "--python",
                    str(healthy_env.root),
                    "--no-load",
                    "--format",
                    "json",
                    "--output",
                    "reports/{host}-{SLURM_PROCID}.json",
                ],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    pseudonym = host_pseudonym(HOST, "4242")
    names = sorted(p.name for p in (workdir / "reports").iterdir())
    assert names == [f"{pseudonym}-{rank}.json" for rank in range(4)]
    for rank in range(4):
        data = json.loads((workdir / "reports" / f"{pseudonym}-{rank}.json").read_text())
        identity = data["facts"]["node"]["identity"]
        assert identity["host"] == pseudonym
        assert identity["launcher"] == "slurm"
        assert identity["launcher_ids"]["SLURM_PROCID"] == str(rank)
        assert not re.search(rf"(?<![\w-]){re.escape(HOST)}(?![\w-])", json.dumps(data))


def test_an_unredacted_report_keeps_the_host_name(healthy_env: FakeEnv, workdir: Path) -> None:
    run = run_doctor(
        "--python",
        str(healthy_env.root),
        "--no-load",
        "--format",
        "json",
        "--no-redact",
        "--output",
        "{host}.json",
        cwd=workdir,
        env={"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"},
    )
    assert run.returncode == 0, run.stderr
    data = json.loads((workdir / f"{HOST}.json").read_text())
    node = data["facts"]["node"]
    assert node["identity"]["host"] == socket.gethostname()
    assert node["identity"]["launcher"] == "torchrun"
    assert node["identity"]["launcher_ids"] == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
