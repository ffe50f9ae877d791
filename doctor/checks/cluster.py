"""Did the job's collective work (`check --deep` under torchrun)?

Every rank joined the process group and the all-reduce summed to the value every rank
knows; a rank that never joined, hung, failed or computed a wrong sum is named with its
host. Rank 0 judges all ranks; every other rank judges itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.facts.collective import RankResult, describe_rank
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity

__all__ = ["CollectiveFailed"]


# The stages before the process group (collective_inside.py): a rank that fails there
# never joins it, and the others time out waiting for it.
BEFORE_THE_GROUP = ("import torch", "join the rendezvous store", "agree on the backend")
SILENT = ("never-joined", "did-not-finish")
NCCL_SONAME = "libnccl.so.2"
DRIVER = "driver"  # the subject the driver family's and cuda-unavailable's findings share


@dataclass(frozen=True)
class CollectiveFailed(Payload):
    ranks: tuple[int, ...]  # the ranks that caused it
    world_size: int
    hosts: tuple[str, ...]
    # What the causes concern, for relations: this rank's own NCCL (the wheel that ships
    # libnccl.so.2), "driver" (CUDA does not start here), else "rank N" for each cause
    concerns: tuple[str, ...] = ()

    def subjects(self) -> frozenset[str]:
        return frozenset(self.concerns)


def _causes(ranks: Sequence[RankResult]) -> list[RankResult]:
    """The ranks that broke the collective: those that never joined, went silent, failed
    before the process group or computed a wrong sum; the others' failures are timeouts
    waiting for them. With none of these, every failed rank is a cause."""
    bad = [r for r in ranks if r.status != "ok"]
    causes = [
        r
        for r in bad
        if r.status in SILENT
        or r.status == "wrong-result"
        or (r.status == "failed" and r.stage in BEFORE_THE_GROUP)
    ]
    return causes or bad


def _concern(ctx: Context, here: int, cause: RankResult) -> str:
    """What one cause concerns: this rank's own NCCL or CUDA, else the rank."""
    if cause.rank == here and cause.status == "failed":
        if cause.missing == "cuda":
            return DRIVER
        if cause.missing == "nccl" or cause.backend == "nccl":
            wheels = ctx.providing_wheels(NCCL_SONAME)
            return wheels[0] if wheels else NCCL_SONAME
    return f"rank {cause.rank}"


@check(
    "collective-failed",
    severities=(Severity.ERROR,),
    family="cluster",
    summary=(
        "Under torchrun (`check --deep`), a rank never joined, hung, failed or computed a "
        "wrong sum in the all-reduce."
    ),
    label="the job's all-reduce",
    payload=CollectiveFailed,
    # This rank's torch that does not import: the collective could not run here (its
    # child is not even started); that finding says why.
    requires=("torch-import-failed",),
    # This rank's own NCCL (nccl-failed), or its CUDA (cuda-unavailable) when rank 0 chose
    # NCCL: the runtime stage already found the cause.
    caused_by=("nccl-failed", "cuda-unavailable"),
)
def collective_failed(ctx: Context) -> Outcome:
    stage = ctx.facts.collective
    if stage is None:
        return Skip("only check --deep under torchrun")
    if stage.skipped_reason is not None:
        return Skip(stage.skipped_reason)
    if stage.error is not None:
        broken = [f"rank {stage.rank}: {stage.error}"]
        ranks: list[int] = [stage.rank]
        concerns = [f"rank {stage.rank}"]
        hosts: list[str] = []
    else:
        bad = [r for r in stage.ranks if r.status != "ok"]
        if not bad:
            return []
        # A rank that never joined, went silent or could not join the process group is
        # the cause; the others' collectives then time out waiting for it, and are listed
        # after it as its consequence.
        causes = _causes(stage.ranks)
        broken = [describe_rank(r) for r in causes] + [
            describe_rank(r) + " (waiting for the ranks above)" for r in bad if r not in causes
        ]
        ranks = [r.rank for r in causes]
        concerns = list(dict.fromkeys(_concern(ctx, stage.rank, r) for r in causes))
        hosts = sorted({r.host for r in causes if r.host})
    named = ", ".join(str(r) for r in ranks)
    return [
        Finding(
            id="collective-failed",
            severity=Severity.ERROR,
            title=(
                f"the all-reduce over {stage.world_size} ranks failed on "
                f"rank{'s' if len(ranks) != 1 else ''} {named}"
                + (f" ({', '.join(hosts)})" if hosts else "")
            ),
            detail=(
                "Every rank joins the job's process group (NCCL when rank 0's torch sees a "
                "GPU, else gloo: rank 0 chooses for every rank) and all-reduces a tensor "
                "whose sum it knows. A rank that never joins or hangs stops the whole job at "
                "its first collective: training hangs with no error, or fails after the "
                "process group's timeout."
            ),
            evidence=tuple(broken),
            data=CollectiveFailed(tuple(ranks), stage.world_size, tuple(hosts), tuple(concerns)),
        )
    ]


@remedy("collective-failed")
def _collective_failed(finding: Finding[CollectiveFailed], ctx: Context) -> Sequence[Remedy]:
    return [
        Remedy(
            RemedyKind.TEXT,
            "fix what differs on the named ranks' nodes first",
            "The cluster view below the report (rank 0) lists the nodes that differ from the "
            "majority and every node's findings; a missing NCCL net plugin, another NCCL, a "
            "driver not rebooted into, or a small /dev/shm on one node are the usual causes.",
        ),
        Remedy(
            RemedyKind.ENV,
            "then rerun with NCCL's and gloo's own account, and name the interface they use",
            "export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,ENV,NET\n"
            "export NCCL_SOCKET_IFNAME=<interface> GLOO_SOCKET_IFNAME=<interface>\n",
        ),
    ]
