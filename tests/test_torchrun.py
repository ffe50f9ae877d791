"""The collective stage for real: torchrun with the CPU build of torch (from this machine's
disk) over gloo on 127.0.0.1, each rank running `torch-doctor check --deep`.

Slow: each rank imports torch. Kept to two jobs: a healthy pair, and three ranks where
rank 1 sees another (stand-in) driver and rank 2 hangs in the collective.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jsonschema
import pytest
from referencing import Registry, Resource

from tests.driver_stub import Driver, DriverStubs
from tests.factory import FakeEnv, doctor_env, real_torch_venv_path

pytestmark = pytest.mark.slow

CPU_TORCH = "2.13.0"
TIMEOUT = "10"
HANG_HELPER = Path(__file__).parent / "torchrun_hang.py"


@pytest.fixture(scope="module")
def cpu_torch() -> FakeEnv:
    """A venv with the CPU build of torch (pip, from this machine's disk; cached)."""
    return FakeEnv(real_torch_venv_path(CPU_TORCH))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(
    venv: FakeEnv, workdir: Path, ranks: int, rank_script: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    script = workdir / "rank.sh"
    script.write_text("#!/bin/sh\n" + rank_script)
    script.chmod(0o755)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(venv.root / "bin" / "torchrun"),
            f"--nproc-per-node={ranks}",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            "--no-python",
            str(script),
        ],
        cwd=workdir,
        env=doctor_env({**env, "JOB_PORT": str(port)}),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def doctor(venv: FakeEnv, fmt: str, output: str) -> str:
    return (
        f"{sys.executable} -m doctor check --deep --python {venv.root} --no-load "
        f"--timeout {TIMEOUT} --format {fmt} --output {output} --verbose"
    )


def test_healthy_ranks_prove_the_all_reduce_and_rank_0_shows_the_cluster(
    cpu_torch: FakeEnv, tmp_path: Path
) -> None:
    (tmp_path / "reports").mkdir()
    run = torchrun(
        cpu_torch, tmp_path, 2, f"exec {doctor(cpu_torch, 'terminal', 'reports/{rank}.txt')}\n", {}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0 = (tmp_path / "reports" / "0.txt").read_text()
    assert "Cluster (torchrun)" in rank0
    assert "all-reduce of 1 MiB over 2 ranks: 2 of 2 correct" in rank0
    host = socket.gethostname()
    assert f"rank 1 ({host}): ok (gloo, " in rank0 and "bus bandwidth" in rank0
    assert "2 reports, all agree" in rank0
    rank1 = (tmp_path / "reports" / "1.txt").read_text()
    assert "Cluster (torchrun)" not in rank1  # only rank 0 shows the cluster
    assert "the job's all-reduce" in rank1  # its check passed, listed by --verbose
    # Every rank ran the single-node stages first, without compiling cold at once.
    for text in (rank0, rank1):
        assert "import torch" in text and "CPU matmul and conv" in text
        assert "under torchrun it runs only when asked (--compile)" in text


def test_the_job_report_names_the_rank_that_differs_and_the_rank_that_hangs(
    cpu_torch: FakeEnv, tmp_path: Path, driver_stubs: DriverStubs
) -> None:
    old = driver_stubs.env(Driver(version="535.104.05", cuda=12020))
    reports = tmp_path / "reports"
    reports.mkdir()
    run_doctor = doctor(cpu_torch, "json", "reports/{rank}.json")
    # Rank 1 sees another driver (the stand-in, configured); rank 2 is stopped once it has
    # joined the rendezvous, and let go only after rank 0 has written its report.
    stand_in = " ".join(f"{k}={old[k]}" for k in ("LD_LIBRARY_PATH", "TORCH_DOCTOR_STUB_CONFIG"))
    rank_script = f"""
case "$RANK" in
1) {stand_in} exec {run_doctor} ;;
2) {run_doctor} &
   DOCTOR=$!
   {sys.executable} {HANG_HELPER} $DOCTOR $JOB_PORT reports/0.json hung.pid
   wait $DOCTOR ;;
*) exec {run_doctor} ;;
esac
"""
    try:
        run = torchrun(cpu_torch, tmp_path, 3, rank_script, {})
    finally:
        hung = tmp_path / "hung.pid"
        if hung.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(hung.read_text()), signal.SIGKILL)
    assert (tmp_path / "hung.pid").exists(), run.stderr[-3000:]
    assert (reports / "1.json").exists()  # every rank that could report did, rank 0 first
    data: dict[str, Any] = json.loads((reports / "0.json").read_text())
    # Rank 0's job report (with its cluster view) is valid against the report schema.
    docs = Path(__file__).parents[1] / "docs"
    schema = json.loads((docs / "report.schema.json").read_text())
    compare_schema = json.loads((docs / "compare.schema.json").read_text())
    # report.schema.json refers to compare.schema.json beside it (by its $id's base).
    registry = Registry().with_resource(
        urljoin(schema["$id"], "compare.schema.json"), Resource.from_contents(compare_schema)
    )
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    assert [e.message for e in validator.iter_errors(data)] == []
    assert run.returncode != 0  # rank 0 speaks for the job (a rank hung): torchrun fails
    # The collective: rank 2, with its host, is the cause.
    finding = next(f for f in data["findings"] if f["id"] == "collective-failed")
    assert finding["data"]["ranks"] == [2]
    host = data["facts"]["node"]["identity"]["host"]  # this machine's pseudonym
    assert finding["data"]["hosts"] == [host]
    assert finding["title"] == f"the all-reduce over 3 ranks failed on rank 2 ({host})"
    assert finding["evidence"][0].startswith(f"rank 2 ({host}): ")
    assert any("waiting for the ranks above" in e for e in finding["evidence"][1:])
    statuses = {r["rank"]: r["status"] for r in data["cluster"]["collective"]["ranks"]}
    assert statuses[2] in ("never-joined", "did-not-finish")
    # The compare view: rank 1 is the odd node, by its driver and GPUs.
    compare = data["cluster"]["compare"]
    assert compare["reports"] in (2, 3)  # rank 2's report arrives if it joined the store
    odd = compare["minorities"]
    assert [g["nodes"] for g in odd] == [[f"{host} (rank 1)"]]
    differences = {d["fact"]: (d["here"], d["majority"]) for d in odd[0]["differences"]}
    assert differences["driver"] == ("535.104.05", "none")
    assert differences["GPUs"][0] == "1 x NVIDIA H100 80GB HBM3"


def test_a_rank_whose_torch_does_not_import_is_named_and_rank_0_still_reports(
    cpu_torch: FakeEnv, tmp_path: Path
) -> None:
    """The node that cannot import torch: it never reaches the store, says why in its own
    report, and stays long enough for rank 0 to name it (torchrun stops every rank as
    soon as one exits with an error)."""
    broken = FakeEnv.create(tmp_path / "broken")
    broken.install_healthy_cu130()  # a torch whose files are stand-ins: no torch.distributed
    reports = tmp_path / "reports"
    reports.mkdir()
    rank_script = f"""
case "$RANK" in
1) exec {doctor(broken, "json", "reports/{rank}.json")} ;;
*) exec {doctor(cpu_torch, "json", "reports/{rank}.json")} ;;
esac
"""
    run = torchrun(cpu_torch, tmp_path, 2, rank_script, {})
    assert (reports / "0.json").exists(), run.stderr[-3000:]
    rank0 = json.loads((reports / "0.json").read_text())
    finding = next(f for f in rank0["findings"] if f["id"] == "collective-failed")
    assert finding["data"]["ranks"] == [1]
    assert "never joined" in finding["evidence"][0]
    rank1 = json.loads((reports / "1.json").read_text())
    own = next(f for f in rank1["findings"] if f["id"] == "collective-failed")
    assert "in import torch" in own["evidence"][0]
