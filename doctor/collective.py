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
from doctor.pipeline import judge
from doctor.probe.collective import CollectiveStage, torchrun_present
from doctor.report import Report

__all__ = ["ClusterView", "run_collective"]


@dataclass(frozen=True)
class ClusterView:
    """What rank 0 shows beside its report."""

    comparison: Comparison
    collective: CollectiveFacts


def run_collective(
    report: Report, *, redacted: bool, timeout: float
) -> tuple[Report, CollectiveStage | None, ClusterView | None]:
    """The report judged again with the stage's facts, the stage (to release once the
    report is shown) and, on rank 0, the cluster view. Without torchrun: the report."""
    if not torchrun_present():
        return report, None, None
    from doctor.redact import host_pseudonym, run_key
    from doctor.render.output import prepare, report_dict

    host = socket.gethostname()
    if redacted:
        host = host_pseudonym(host, run_key())
    interpreter = report.facts.interpreter
    compact = compact_report(report_dict(prepare(report, "", redacted=redacted)))
    if interpreter is None:
        rank = int(os.environ.get("RANK", "0") or 0)
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        facts = CollectiveFacts(rank, world, 0, error="the environment could not be inspected")
        return judge(dataclasses.replace(report.facts, collective=facts)), None, None
    stage = CollectiveStage(interpreter.executable, compact, host=host, timeout=timeout)
    facts = stage.result()
    judged = judge(dataclasses.replace(report.facts, collective=facts))
    view = None
    if facts.rank == 0 and facts.error is None:
        summaries = (
            summarise(data, f"rank {rank}")
            for rank, data in sorted(facts.node_reports.items(), key=lambda kv: int(kv[0]))
        )
        view = ClusterView(compare_reports(summaries), facts)
    return judged, stage, view
