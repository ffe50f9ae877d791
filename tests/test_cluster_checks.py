"""collective-failed over hand-built collective facts, its relations to this rank's own
runtime findings, and the seam that makes those facts from the collective child's output
(a wrapper interpreter stands for the child: no torch, no torchrun, fast).

The real torchrun jobs are in tests/test_torchrun.py (slow).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import psutil

from doctor.checks import Skip
from doctor.facts import Facts
from doctor.facts.collective import CollectiveFacts, RankResult
from doctor.facts.runtime import RuntimeFacts, StageStatus
from doctor.pipeline import judge
from doctor.probe.collective import CollectiveStage
from tests.handmade import CheckUnderTest, healthy_facts
from tests.test_driver_checks import machine, with_machine
from tests.test_runtime_checks import healthy_runtime, stage, with_stage

COLLECTIVE = CheckUnderTest("collective-failed")
ELEMENTS = 1 << 18
JOIN_TIMEOUT = "DistStoreError: wait timeout after 10000ms, keys: /torch-doctor/none/0//pg//0"


def ok(rank: int, host: str = "node1") -> RankResult:
    return RankResult(rank, host, "ok", "all-reduce", "gloo", seconds=0.001, wrong_elements=0)


def waiting(rank: int, host: str = "node1", backend: str = "gloo") -> RankResult:
    """A rank whose process group timed out waiting for another."""
    return RankResult(rank, host, "failed", "join the process group", backend, JOIN_TIMEOUT)


def with_collective(
    *ranks: RankResult,
    rank: int = 0,
    world: int | None = None,
    runtime: RuntimeFacts | None = None,
    base: Facts | None = None,
    **changes: object,
) -> Facts:
    collective = CollectiveFacts(
        rank, world if world is not None else len(ranks), ELEMENTS, ranks=ranks
    )
    collective = dataclasses.replace(collective, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(
        base or healthy_facts(),
        runtime=runtime if runtime is not None else healthy_runtime(),
        collective=collective,
    )


# --- the check ------------------------------------------------------------------------


def test_quiet_when_every_rank_summed_right_and_skipped_outside_torchrun() -> None:
    assert COLLECTIVE.run(with_collective(ok(0), ok(1), ok(2), ok(3))) == []
    outcome = COLLECTIVE.run(dataclasses.replace(healthy_facts(), collective=None))
    assert isinstance(outcome, Skip) and "torchrun" in outcome.reason


def test_a_wrong_sum_names_the_rank_and_what_it_computed() -> None:
    wrong = dataclasses.replace(
        ok(2, "node3"),
        status="wrong-result",
        wrong_elements=12,
        error="12 of 262144 elements are not 10",
    )
    finding = COLLECTIVE.only(with_collective(ok(0), ok(1), wrong, ok(3)))
    assert finding.title == "the all-reduce over 4 ranks failed on rank 2 (node3)"
    assert finding.evidence == (
        "rank 2 (node3): computed a wrong sum: 12 of 262144 elements are not 10",
    )
    assert finding.data.ranks == (2,) and finding.data.hosts == ("node3",)


def test_the_silent_rank_is_the_cause_and_the_others_wait_for_it() -> None:
    hung = RankResult(
        2, "node3", "did-not-finish", "all-reduce", "gloo", "joined the job but sent no result"
    )
    finding = COLLECTIVE.only(with_collective(waiting(0), waiting(1, "node2"), hung))
    assert finding.data.ranks == (2,)
    assert finding.evidence[0] == (
        "rank 2 (node3): joined, then hung or died: joined the job but sent no result"
    )
    assert finding.evidence[1:] == (
        f"rank 0 (node1): failed in join the process group: {JOIN_TIMEOUT} "
        "(waiting for the ranks above)",
        f"rank 1 (node2): failed in join the process group: {JOIN_TIMEOUT} "
        "(waiting for the ranks above)",
    )


def test_a_rank_that_cannot_use_rank_0s_backend_is_the_cause_not_the_ranks_it_stalls() -> None:
    """Rank 0 chose NCCL (its GPUs); rank 1's CUDA does not start, so it says why and
    does not join; ranks 0 and 2 time out in the process group waiting for it."""
    cannot = RankResult(
        1,
        "node2",
        "failed",
        "agree on the backend",
        "nccl",
        "rank 0 chose NCCL; torch.cuda.is_available() is False on this rank, so it cannot "
        "join (it would have used gloo on its own)",
        missing="cuda",
    )
    facts = with_collective(waiting(0, backend="nccl"), cannot, waiting(2, "node3", "nccl"))
    finding = COLLECTIVE.only(facts)
    assert finding.data.ranks == (1,)
    assert finding.evidence[0].startswith("rank 1 (node2): failed in agree on the backend: ")
    assert finding.data.concerns == ("rank 1",)  # rank 0's view: another rank's CUDA


def test_when_every_rank_failed_in_the_group_each_is_named() -> None:
    facts = with_collective(waiting(0), waiting(1))
    assert COLLECTIVE.only(facts).data.ranks == (0, 1)


def test_the_stage_that_gave_no_answer_is_this_ranks_failure() -> None:
    facts = with_collective(
        rank=1, world=4, error="the collective stage gave no answer within 90 s and was stopped"
    )
    finding = COLLECTIVE.only(facts)
    assert finding.title == "the all-reduce over 4 ranks failed on rank 1"
    assert finding.evidence == (
        "rank 1: the collective stage gave no answer within 90 s and was stopped",
    )


# --- one cause, one root ----------------------------------------------------------------


def test_torch_that_does_not_import_is_the_root_and_the_collective_is_skipped() -> None:
    failed = stage(
        "import", StageStatus.FAILED, error="ModuleNotFoundError: No module named 'torch'"
    )
    runtime = with_stage(healthy_runtime(), failed)
    # What doctor/collective.py records when it does not start the child.
    facts = with_collective(
        rank=1,
        world=2,
        runtime=runtime,
        skipped_reason="not run: import torch failed in this rank's runtime probe",
    )
    report = judge(facts)
    assert [f.id for f in report.findings if f.root is None] == ["torch-import-failed"]
    check = next(c for c in report.results if c.spec.id == "collective-failed")
    assert check.reason == "see torch-import-failed"
    # Even with a stage error recorded (a child started anyway), the import is the root.
    errored = with_collective(rank=1, world=2, runtime=runtime, error="exited with status 3")
    assert [f.id for f in judge(errored).findings] == ["torch-import-failed"]


def test_this_ranks_broken_nccl_is_the_root_of_its_failed_collective() -> None:
    nccl = stage(
        "nccl", StageStatus.FAILED, error="RuntimeError: NCCL Error 2: unhandled system error"
    )
    facts = with_collective(
        waiting(1, backend="nccl"),
        rank=1,
        world=4,
        runtime=with_stage(healthy_runtime(), nccl),
    )
    findings = {f.id: f for f in judge(facts).findings}
    assert findings["nccl-failed"].root is None
    assert findings["collective-failed"].root == "nccl-failed"
    assert [f.id for f in judge(facts).findings if f.root is None] == ["nccl-failed"]


def test_another_ranks_failure_stays_a_root_beside_this_ranks_nccl() -> None:
    nccl = stage("nccl", StageStatus.FAILED, error="RuntimeError: NCCL Error 2")
    never = RankResult(3, "node4", "never-joined", None, "nccl", "never joined")
    facts = with_collective(
        waiting(0, backend="nccl"),
        ok(1),
        ok(2),
        never,
        runtime=with_stage(healthy_runtime(), nccl),
    )
    roots = [f.id for f in judge(facts).findings if f.root is None]
    assert roots == ["nccl-failed", "collective-failed"]


def test_this_ranks_cuda_that_does_not_start_is_the_root_when_rank_0_chose_nccl() -> None:
    runtime = healthy_runtime(cuda_available=False, device_count=0, devices=())
    build = stage(
        "build",
        warnings=(
            "CUDA initialization: Unexpected error from cudaGetDeviceCount(). Error 802: "
            "system not yet initialized",
        ),
    )
    cannot = RankResult(
        2, "node3", "failed", "agree on the backend", "nccl", "rank 0 chose NCCL", missing="cuda"
    )
    base = with_machine(machine())
    facts = with_collective(cannot, rank=2, world=4, runtime=with_stage(runtime, build), base=base)
    findings = {f.id: f for f in judge(facts).findings}
    unavailable = findings["cuda-unavailable"]
    assert findings["collective-failed"].root == (unavailable.root or "cuda-unavailable")


# --- the seam: the child's output made facts -------------------------------------------


def stage_for(tmp_path: Path, body: str, *, rank: int = 1, timeout: float = 1) -> CollectiveStage:
    """The stage with a wrapper interpreter that runs ``body`` instead of the child."""
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\n{body}\n")
    python.chmod(0o755)
    environ = {
        "PATH": os.environ["PATH"],
        "RANK": str(rank),
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }
    return CollectiveStage(
        str(python), {}, host="node1", timeout=timeout, environ=environ, import_allowance=0
    )


def test_an_answer_that_is_not_an_object_is_unreadable_not_an_internal_error(
    tmp_path: Path,
) -> None:
    for answer in ("42", '{"ranks": [42]}', '{"ranks": [{"rank": 1, "status": ["x"]}]}'):
        facts = stage_for(tmp_path, f"echo 'TORCH_DOCTOR_COLLECTIVE {answer}'").result()
        assert facts.error is not None
        assert facts.error.startswith("the collective stage's answer is unreadable: ")
        assert COLLECTIVE.only(with_collective(rank=1, world=2, error=facts.error))


def test_a_child_that_closes_its_output_and_hangs_is_stopped_at_the_deadline(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    stage = stage_for(tmp_path, "exec 1>&-\nexec sleep 300")
    assert stage.proc is not None
    pid = stage.proc.pid
    facts = stage.result()
    assert time.monotonic() - started < 15  # its deadline (3 × 1 s here), then a kill
    assert facts.error == (
        "the collective stage closed its output without an answer and was stopped"
    )
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_child_killed_by_a_signal_says_which_and_its_stderr_is_cleaned(
    tmp_path: Path,
) -> None:
    body = "printf 'Fatal Python error: \\033]0;pwned\\007Segmentation fault\\n' >&2\nkill -SEGV $$"
    facts = stage_for(tmp_path, body).result()
    assert facts.error == (
        "the collective stage exited with signal 11: Fatal Python error: ]0;pwnedSegmentation fault"
    )


def test_the_answers_text_is_cleaned(tmp_path: Path) -> None:
    answer = (
        '{"world_size": 2, "self": {"stage": "all-reduce"}, "ranks": [{"rank": 1, '
        '"host": "node\\u001b[2J1", "status": "failed", "stage": "all-reduce", '
        '"error": "RuntimeError: \\u001b]0;x\\u0007gloo"}], "reports": {}}'
    )
    facts = stage_for(tmp_path, f"echo 'TORCH_DOCTOR_COLLECTIVE {answer}'").result()
    assert facts.error is None
    (result,) = facts.ranks
    assert (result.host, result.error) == ("node[2J1", "RuntimeError: ]0;xgloo")


def test_rank_0_whose_stage_ran_in_the_doctors_own_python_is_not_left_behind() -> None:
    """Without torch in the interpreter the child fails at `import torch` and answers so;
    nothing waits (rank 0 reports at once)."""
    environ = {
        "PATH": os.environ["PATH"],
        "RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }
    stage = CollectiveStage(sys.executable, {}, host="node1", timeout=5, environ=environ)
    facts = stage.result()
    (own,) = facts.ranks
    assert (own.stage, own.error) == (
        "import torch",
        "ModuleNotFoundError: No module named 'torch'",
    )
    started = time.monotonic()
    stage.release(1)
    assert time.monotonic() - started < 5


# --- the backend: rank 0 chooses, the others follow or say why not --------------------


class _Cuda:
    def __init__(self, gpus: int, works: bool = True) -> None:
        self.gpus, self.works = gpus, works

    def is_available(self) -> bool:
        return self.works and self.gpus > 0

    def device_count(self) -> int:
        return self.gpus


class _Torch:
    """What the stage asks of torch about devices (the NCCL path cannot run here)."""

    def __init__(self, gpus: int, works: bool = True) -> None:
        self.cuda = _Cuda(gpus, works)


class _Dist:
    def __init__(self, nccl: bool = True) -> None:
        self.nccl = nccl

    def is_nccl_available(self) -> bool:
        return self.nccl


class _Store:
    """The rendezvous store's calls the backend agreement makes, in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    def set(self, key: str, value: str) -> None:
        self.keys[key] = value.encode()

    def wait(self, keys: list[str], timeout: object) -> None:
        if not all(k in self.keys for k in keys):
            raise RuntimeError("wait timeout")

    def get(self, key: str) -> bytes:
        return self.keys[key]


def test_rank_0_chooses_nccl_for_the_job_and_a_rank_without_cuda_says_why_it_cannot_join() -> None:
    from doctor.probe import collective_inside as inside

    store = _Store()
    assert inside.agree_on_backend(_Torch(8), _Dist(), store, 0, 10) == "nccl"
    # Rank 1's CUDA does not start: on its own it would have picked gloo and joined a
    # job whose other ranks use NCCL.
    broken = _Torch(8, works=False)
    assert inside.agree_on_backend(broken, _Dist(), store, 1, 10) == "nccl"
    missing, why = inside.cannot_use(broken, _Dist(), "nccl")
    assert missing == "cuda"
    assert why.startswith("rank 0 chose NCCL; torch.cuda.is_available() is False on this rank")
    assert inside.cannot_use(_Torch(0), _Dist(nccl=False), "nccl")[0] == "nccl"
    assert inside.cannot_use(_Torch(8), _Dist(), "nccl") is None
    assert inside.cannot_use(broken, _Dist(), "gloo") is None  # gloo runs anywhere


def test_rank_0_without_a_gpu_chooses_gloo_and_a_rank_without_rank_0_says_so() -> None:
    from doctor.probe import collective_inside as inside

    store = _Store()
    assert inside.choose_backend(_Torch(0), _Dist()) == ("gloo", "rank 0's torch sees no GPU")
    try:
        inside.agree_on_backend(_Torch(8), _Dist(), _Store(), 3, 10)
    except RuntimeError as exc:
        assert str(exc) == "rank 0 published no backend within 10 s (it never joined the store)"
    else:
        raise AssertionError("no backend, no error")
    assert inside.agree_on_backend(_Torch(0), _Dist(), store, 0, 10) == "gloo"


def test_rank_0_whose_torch_does_not_import_reports_at_once_without_a_collective_child(
    tmp_path: Path,
) -> None:
    from tests.factory import FakeEnv, run_doctor

    broken = FakeEnv.create(tmp_path / "broken")
    broken.install_healthy_cu130()  # a torch whose files are stand-ins: it does not import
    job = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }
    started = time.monotonic()
    run = run_doctor(
        "check", "--deep", "--python", str(broken.root), "--no-load", "--timeout", "20",
        "--format", "json", cwd=tmp_path, env=job,
    )  # fmt: skip
    # No second import, no stage timeouts, no wait for the others: rank 0 reports now.
    assert time.monotonic() - started < 20
    collective = run.json["facts"]["collective"]
    assert collective["skipped_reason"] == (
        "not run: import torch failed in this rank's runtime probe"
    )
    assert "cluster" not in run.json
    roots = [f["id"] for f in run.json["findings"] if f["root"] is None]
    assert "torch-import-failed" in roots and "collective-failed" not in roots
    assert run.returncode == 1
