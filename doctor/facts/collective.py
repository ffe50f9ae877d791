"""The collective stage's facts: how each rank of a torchrun job did in the all-reduce."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CollectiveFacts", "RankResult", "describe_rank"]


@dataclass(frozen=True)
class RankResult:
    """One rank: whether it joined, its all-reduce's correctness and speed, or its error."""

    rank: int
    host: str | None
    # "ok", "wrong-result", "failed" (an error it reported), "did-not-finish" (joined,
    # then silent: hangs or died), "never-joined"
    status: str
    # where it stopped: import torch, join the rendezvous store, agree on the backend,
    # join the process group, all-reduce
    stage: str | None = None
    backend: str | None = None  # the job's: "nccl" or "gloo", as rank 0 chose it
    error: str | None = None
    # What this rank lacks for the job's backend ("cuda": torch.cuda.is_available() is
    # False here; "nccl": this torch has no NCCL; "gpu": no GPU left for LOCAL_RANK)
    missing: str | None = None
    seconds: float | None = None  # one all-reduce, mean of a few
    bus_bandwidth_bytes: float | None = None  # per second, as nccl-tests counts it
    wrong_elements: int | None = None


@dataclass(frozen=True)
class CollectiveFacts:
    """This rank's view of the stage; rank 0 holds every rank's result and report."""

    rank: int
    world_size: int
    elements: int
    ranks: tuple[RankResult, ...] = ()  # rank 0: every rank; other ranks: their own
    # rank 0: every rank's compact report (what `compare` reads), by rank
    node_reports: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the stage itself could not run here (crash, timeout)
    # Not run on this rank, and why (its torch did not import in the runtime probe)
    skipped_reason: str | None = None


_STATUS_WORDS = {
    "never-joined": "never joined",
    "did-not-finish": "joined, then hung or died",
    "failed": "failed",
    "wrong-result": "computed a wrong sum",
}


def describe_rank(result: RankResult) -> str:
    """One line: the rank, its host, what went wrong and where."""
    where = f"rank {result.rank} ({result.host or 'host unknown'})"
    what = _STATUS_WORDS.get(result.status, result.status)
    stage = f" in {result.stage}" if result.stage and result.status == "failed" else ""
    return f"{where}: {what}{stage}" + (f": {result.error}" if result.error else "")
