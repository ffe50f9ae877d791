"""The collective stage for real: torchrun with the CPU build of torch (from this machine's
disk) over gloo on 127.0.0.1, each rank running `torch-doctor check --deep`.

Slow: each rank imports torch (twice: its runtime probe, then the collective). The jobs: four
healthy ranks; three ranks where rank 1 sees another (stand-in) driver and rank 2 hangs in
the collective; two ranks where rank 1's torch does not import; and one rank 0 of two,
stopped with SIGTERM while it waits in the collective.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jsonschema
import psutil
import pytest
from referencing import Registry, Resource

from tests.driver_stub import Driver, DriverStubs
from tests.factory import FakeEnv, doctor_env, real_torch_venv_path

pytestmark = pytest.mark.slow

CPU_TORCH = "2.13.0"
TIMEOUT = "10"
HANG_HELPER = Path(__file__).parent / "torchrun_hang.py"
LATE = 12  # seconds: more than TIMEOUT


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


def doctor(venv: FakeEnv, fmt: str, output: str, timeout: str = TIMEOUT) -> str:
    return (
        f"{sys.executable} -m doctor check --deep --python {venv.root} --no-load "
        f"--timeout {timeout} --format {fmt} --output {output} --verbose"
    )


def test_four_healthy_ranks_prove_the_all_reduce_and_rank_0_shows_the_cluster(
    cpu_torch: FakeEnv, tmp_path: Path
) -> None:
    (tmp_path / "reports").mkdir()
    # Four ranks import torch at once on this machine's CPUs: a timeout that a loaded
    # machine's imports fit in (a healthy job never waits for it).
    command = doctor(cpu_torch, "terminal", "reports/{rank}.txt", timeout="60")
    run = torchrun(cpu_torch, tmp_path, 4, f"exec {command}\n", {})
    assert run.returncode == 0, run.stderr[-3000:]
    rank0 = (tmp_path / "reports" / "0.txt").read_text()
    assert "Cluster (torchrun)" in rank0
    # 1 + 2 + 3 + 4 = 10 in every element, on every rank, over gloo (rank 0's choice).
    assert "all-reduce of 1 MiB over 4 ranks: 4 of 4 correct" in rank0
    host = socket.gethostname()
    for rank in (1, 2, 3):
        assert f"rank {rank} ({host}): ok (gloo, " in rank0
    assert "bus bandwidth" in rank0
    assert "4 reports, all agree" in rank0
    texts = [(tmp_path / "reports" / f"{rank}.txt").read_text() for rank in range(4)]
    for text in texts[1:]:
        assert "Cluster (torchrun)" not in text  # only rank 0 shows the cluster
        assert "the job's all-reduce" in text  # its check passed, listed by --verbose
    # Every rank ran the single-node stages first, without compiling cold at once.
    for text in texts:
        assert "import torch" in text and "CPU matmul and conv" in text
        assert "under torchrun it runs only when asked (--compile)" in text


def test_the_job_report_names_the_rank_that_differs_and_the_rank_that_hangs(
    cpu_torch: FakeEnv, tmp_path: Path, driver_stubs: DriverStubs
) -> None:
    old = driver_stubs.env(Driver(version="535.104.05", cuda=12020))
    reports = tmp_path / "reports"
    reports.mkdir()
    run_doctor = doctor(cpu_torch, "json", "reports/{rank}.json")
    # Rank 1 sees another driver (the stand-in, configured) and starts late, as a rank
    # whose single-node stages took longer would reach the collective: more than --timeout
    # after rank 0 (rank 0 once took it for a hung rank and exited before it reported).
    # Rank 2 reaches the store through a relay that stops it (SIGSTOP) as it joins, and
    # lets it go only after rank 0 has written its report: it hangs in the collective
    # however late it arrives (stopped on connecting, it could finish first).
    stand_in = " ".join(f"{k}={old[k]}" for k in ("LD_LIBRARY_PATH", "TORCH_DOCTOR_STUB_CONFIG"))
    relay = free_port()
    rank_script = f"""
case "$RANK" in
1) sleep {LATE}; {stand_in} exec {run_doctor} ;;
2) {sys.executable} {HANG_HELPER} {relay} $JOB_PORT reports/0.json hung.pid &
   MASTER_PORT={relay} exec {run_doctor} ;;
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
    # Rank 0 speaks for the job (a rank hung): it exits 1 and torchrun fails with it, rank 0
    # the first failure (the others wait for its word, then for torchrun to stop them).
    assert run.returncode != 0
    root_cause = run.stderr.split("Root Cause (first observed failure):", 1)[1]
    assert "rank      : 0 (local_rank: 0)" in root_cause.split("======")[0], root_cause
    assert "exitcode  : 1 " in root_cause.split("======")[0], root_cause
    # The collective: rank 2, with its host, is the cause.
    finding = next(f for f in data["findings"] if f["id"] == "collective-failed")
    assert finding["data"]["ranks"] == [2]
    host = data["facts"]["node"]["identity"]["host"]  # this machine's pseudonym
    assert finding["data"]["hosts"] == [host]
    assert finding["title"] == f"the all-reduce over 3 ranks failed on rank 2 ({host})"
    assert finding["evidence"][0].startswith(f"rank 2 ({host}): ")
    assert any("waiting for the ranks above" in e for e in finding["evidence"][1:])
    statuses = {r["rank"]: r["status"] for r in data["cluster"]["collective"]["ranks"]}
    # Rank 1 timed out waiting for rank 2 (it is not taken for a second hung rank, however
    # late it reached the collective): it reported, and so did rank 0, first.
    assert statuses == {0: "failed", 1: "failed", 2: "did-not-finish"}
    rank1 = json.loads((reports / "1.json").read_text())
    assert rank1["facts"]["collective"]["ranks"][0]["stage"] == "join the process group"
    # The compare view: rank 1 is the odd node, by its driver and GPUs.
    compare = data["cluster"]["compare"]
    assert compare["reports"] == 3  # rank 2 left its report in the store as it joined
    odd = compare["minorities"]
    assert [g["nodes"] for g in odd] == [[f"{host} (rank 1)"]]
    differences = {d["fact"]: (d["here"], d["majority"]) for d in odd[0]["differences"]}
    assert differences["driver"] == ("535.104.05", "none")
    assert differences["GPUs"][0] == "1 x NVIDIA H100 80GB HBM3"


def test_a_rank_whose_torch_does_not_import_is_named_and_rank_0_still_reports(
    cpu_torch: FakeEnv, tmp_path: Path
) -> None:
    """The node that cannot import torch: its runtime probe says why, so it starts no
    collective child (that would fail the same way, after the stage's timeouts); it stays
    long enough for rank 0 to name it (torchrun stops every rank as soon as one exits with
    an error), and its own report has one root: the failed import."""
    broken = FakeEnv.create(tmp_path / "broken")
    broken.install_healthy_cu130()  # a torch whose files are stand-ins: it does not import
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
    # Never in the store, but its host is known: torchrun numbers a node's ranks together.
    host = rank0["facts"]["node"]["identity"]["host"]
    assert finding["evidence"][0].startswith(f"rank 1 ({host}): never joined")
    assert finding["data"]["hosts"] == [host]
    rank1 = json.loads((reports / "1.json").read_text())
    roots = [f["id"] for f in rank1["findings"] if f["root"] is None and f["severity"] == "error"]
    assert roots == ["torch-import-failed"]
    assert "collective-failed" not in {f["id"] for f in rank1["findings"]}
    check = next(c for c in rank1["checks"] if c["id"] == "collective-failed")
    assert (check["status"], check["reason"]) == ("skipped", "see torch-import-failed")
    collective = rank1["facts"]["collective"]
    assert (
        collective["skipped_reason"] == "not run: import torch failed in this rank's runtime probe"
    )
    assert collective["ranks"] == []  # no child: no second import, no stage timeouts


def test_sigterm_while_rank_0_waits_in_the_collective_stops_it_and_its_child(
    cpu_torch: FakeEnv, tmp_path: Path
) -> None:
    """Rank 0 of two, alone: its collective child serves the store and waits for rank 1.
    Meanwhile the terminal says what it waits for; SIGTERM (a cancelled job) stops the run
    within seconds, exit 128+15, and the child is gone."""
    port = free_port()
    job = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    primary, secondary = os.openpty()  # standard error is a terminal, as for a user
    proc = subprocess.Popen(
        doctor(cpu_torch, "json", "report.json").split(),
        cwd=tmp_path,
        env=doctor_env(job),
        stdout=subprocess.DEVNULL,
        stderr=secondary,
    )
    os.close(secondary)
    terminal = bytearray()

    def read_terminal() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(primary, 4096):
                terminal.extend(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    waiting = b"torch-doctor: waiting for the 2 ranks' all-reduce (rank 0 collects their results"
    try:
        deadline = time.monotonic() + 120
        while waiting not in terminal and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert waiting in terminal, terminal.decode(errors="replace")[-2000:]
        children = psutil.Process(proc.pid).children(recursive=True)
        collective = [c.pid for c in children if "torch-doctor-collective" in c.cmdline()]
        assert len(collective) == 1
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert time.monotonic() - sent < 5
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(5)
        os.close(primary)
    assert proc.returncode == 128 + signal.SIGTERM
    assert b"torch-doctor: stopped by SIGTERM" in terminal
    assert not (tmp_path / "report.json").exists()  # stopped: no report claims to be one
    assert running([c.pid for c in children]) == []


def running(pids: list[int], within: float = 5.0) -> list[int]:
    """The pids still running (not gone, not a zombie) after at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
