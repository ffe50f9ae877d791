"""`check --deep` under torchrun: the single-node report, then the job's collective.

Each rank diagnoses its node as usual, sends its compact report into the collective stage
(doctor/probe/collective.py) and judges again with the stage's facts. Rank 0 receives
every rank's report and result and shows, after its own report, the cluster view: the
nodes compared as `compare` does, and each rank's all-reduce.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass

from doctor.compare import Comparison, compact_report, compare_reports, summarise
from doctor.facts.collective import CollectiveFacts
from doctor.facts.runtime import RuntimeFacts, StageStatus
from doctor.pipeline import judge
from doctor.probe.collective import CollectiveStage, SkippedCollective, torchrun_present
from doctor.report import Report

__all__ = ["ClusterView", "run_collective"]


@dataclass(frozen=True)
class ClusterView:
    """What rank 0 shows beside its report."""

    comparison: Comparison
    collective: CollectiveFacts


def run_collective(
    report: Report, *, redacted: bool, timeout: float
) -> tuple[Report, CollectiveStage | SkippedCollective | None, ClusterView | None]:
    """The report judged again with the stage's facts, the stage (to release once the
    report is shown) and, on rank 0, the cluster view. Without torchrun: the report.

    A rank whose torch did not import in the runtime probe starts no child (it would fail
    the same way, after another `import torch` and the stage's timeouts): its stage is
    skipped with the reason, and it only waits, once it has reported, for rank 0 to report.
    """
    if not torchrun_present():
        return report, None, None
    from doctor.probe.progress import ProgressLine
    from doctor.redact import host_pseudonym, run_key
    from doctor.render.output import prepare, report_dict

    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    interpreter = report.facts.interpreter
    if interpreter is None:
        facts = CollectiveFacts(rank, world, 0, error="the environment could not be inspected")
        judged = judge(dataclasses.replace(report.facts, collective=facts))
        return judged, SkippedCollective(rank, timeout), None  # rank 0 still reports first
    not_imported = _torch_not_imported(report.facts.runtime)
    if not_imported is not None:
        facts = CollectiveFacts(rank, world, 0, skipped_reason=not_imported)
        judged = judge(dataclasses.replace(report.facts, collective=facts))
        return judged, SkippedCollective(rank, timeout), None
    host = socket.gethostname()
    if redacted:
        host = host_pseudonym(host, run_key())
    compact = compact_report(report_dict(prepare(report, "", redacted=redacted)))
    stage = CollectiveStage(interpreter.executable, compact, host=host, timeout=timeout)
    # The run's status line closed with the probes; this wait gets its own.
    with ProgressLine(stage.waiting):
        facts = stage.result()
    judged = judge(dataclasses.replace(report.facts, collective=facts))
    view = None
    if facts.rank == 0 and facts.error is None:
        summaries = (
            summarise(data, f"rank {key}")
            for key, data in sorted(facts.node_reports.items(), key=lambda kv: _rank_key(kv[0]))
        )
        view = ClusterView(compare_reports(summaries), facts)
    return judged, stage, view


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


def _rank_key(rank: str) -> int:
    return int(rank) if rank.isdigit() else -1


def _torch_not_imported(runtime: RuntimeFacts | None) -> str | None:
    """Why the collective stage cannot run here: torch did not import in the runtime
    probe (failed, timed out or crashed), or the probe itself could not run."""
    if runtime is None:
        return None
    if not runtime.ran:
        return f"not run: the runtime probe could not run ({runtime.error})"
    stage = runtime.stage("import")
    if stage is None or stage.status == StageStatus.PASSED:
        return None
    return f"not run: import torch {stage.status} in this rank's runtime probe"
