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
from doctor.facts.collective import describe_rank
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity

__all__ = ["CollectiveFailed"]


@dataclass(frozen=True)
class CollectiveFailed(Payload):
    ranks: tuple[int, ...]  # the ranks that caused it
    world_size: int
    hosts: tuple[str, ...]


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
)
def collective_failed(ctx: Context) -> Outcome:
    stage = ctx.facts.collective
    if stage is None:
        return Skip("only check --deep under torchrun")
    if stage.error is not None:
        broken = [f"rank {stage.rank}: {stage.error}"]
        ranks: list[int] = [stage.rank]
    else:
        bad = [r for r in stage.ranks if r.status != "ok"]
        if not bad:
            return []
        # A rank that never joined or went silent is the cause; the others' collectives
        # then time out waiting for it, and are listed after it as its consequence.
        silent = [r for r in bad if r.status in ("never-joined", "did-not-finish")]
        causes = silent or bad
        broken = [describe_rank(r) for r in causes] + [
            describe_rank(r) + " (waiting for the ranks above)" for r in bad if r not in causes
        ]
        ranks = [r.rank for r in causes]
    named = ", ".join(str(r) for r in ranks)
    hosts = sorted({r.host for r in stage.ranks if r.rank in ranks and r.host})
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
                "Every rank joins the job's process group (NCCL on GPUs, gloo on CPUs) and "
                "all-reduces a tensor whose sum it knows. A rank that never joins or hangs "
                "stops the whole job at its first collective: training hangs with no error, "
                "or fails after the process group's timeout."
            ),
            evidence=tuple(broken),
            data=CollectiveFailed(tuple(ranks), stage.world_size, tuple(hosts)),
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
