"""Renderers of `compare`: terminal text, JSON (docs/compare.schema.json) and Markdown.

They only format a ``Comparison``; every judgement was made in doctor/compare.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from doctor import __version__
from doctor.compare import COMPARE_SCHEMA, Comparison, FindingLine, Group
from doctor.facts import to_jsonable
from doctor.facts.collective import CollectiveFacts, RankResult, describe_rank
from doctor.render.formats import Format, assert_never
from doctor.render.output import wrap_prose

if TYPE_CHECKING:
    from doctor.collective import ClusterView

__all__ = ["cluster_to_dict", "compare_to_dict", "render_cluster", "render_compare"]

_MARK = {"error": "✗", "warning": "!", "info": "i"}
_SHOWN_NODES = 8  # a group's nodes listed by name; the rest counted


def compare_to_dict(comparison: Comparison, redactions: tuple[str, ...] | None) -> dict[str, Any]:
    return {
        "schema": COMPARE_SCHEMA,
        "version": __version__,
        "verdict": comparison.verdict,
        "summary": comparison.summary,
        "exit_code": comparison.exit_code,
        "reports": comparison.reports,
        "majority": (
            None
            if comparison.majority is None
            else {
                "nodes": list(comparison.majority.nodes),
                "sources": list(comparison.majority.sources),
                "fingerprint": dict(comparison.majority_fingerprint),
            }
        ),
        "minorities": [to_jsonable(g) for g in comparison.minorities],
        "node_findings": [to_jsonable(n) for n in comparison.node_findings],
        "problems": [to_jsonable(p) for p in comparison.problems],
        "notes": list(comparison.notes),
        "redacted": redactions is not None,
        "redactions": list(redactions or ()),
    }


def _nodes(group: Group) -> str:
    shown = ", ".join(group.nodes[:_SHOWN_NODES])
    rest = len(group.nodes) - _SHOWN_NODES
    return shown + (f" and {rest} more" if rest > 0 else "")


_RANK = {"error": 0, "warning": 1, "info": 2}


def _alike(comparison: Comparison) -> list[tuple[FindingLine, list[str]]]:
    """Each distinct finding once, with the nodes that have it: errors first, then the
    rarest (the odd node's finding before the one every node shares)."""
    nodes: dict[tuple[str, str, str], list[str]] = {}
    first: dict[tuple[str, str, str], FindingLine] = {}
    for node in comparison.node_findings:
        for finding in node.findings:
            key = (finding.severity, finding.id, finding.title)
            first.setdefault(key, finding)
            nodes.setdefault(key, []).append(node.node)
    order = sorted(nodes, key=lambda k: (_RANK.get(k[0], 3), len(nodes[k])))
    return [(first[k], nodes[k]) for k in order]


def _on(names: list[str], comparison: Comparison) -> str:
    if len(names) == comparison.reports and len(names) > 1:
        return f"on all {len(names)} nodes"
    shown = ", ".join(names[:_SHOWN_NODES])
    rest = len(names) - _SHOWN_NODES
    return "on " + shown + (f" and {rest} more" if rest > 0 else "")


def _wrapped(text: str, width: int, indent: str, subsequent: str) -> list[str]:
    return wrap_prose(text, width, indent, subsequent) or [indent]


def _terminal(comparison: Comparison, width: int = 80) -> list[str]:
    """The odd nodes and what differs first, then findings (each once, with its nodes),
    files that are not reports, and the majority's full configuration last."""
    lines = [f"torch-doctor compare: {comparison.summary}"]
    for group in comparison.minorities:
        n = len(group.nodes)
        head = f"Differs: {n} node{'s' if n != 1 else ''}: {_nodes(group)}"
        lines += ["", *_wrapped(head, width, "", "  ")]
        facts = max(len(d.fact) for d in group.differences)
        lines += [
            f"  {d.fact:<{facts}}  {d.here}   (majority: {d.majority})" for d in group.differences
        ]
    if comparison.node_findings:
        lines += ["", "Findings"]
        for finding, names in _alike(comparison):
            mark = _MARK.get(finding.severity, "-")
            lines += _wrapped(f"{mark} {finding.id}: {finding.title}", width, "  ", "    ")
            lines += _wrapped(_on(names, comparison), width, "      ", "      ")
        for node in comparison.node_findings:
            if not node.findings:
                lines += _wrapped(
                    f"{node.node}: {node.verdict} (no finding; see {node.source})",
                    width,
                    "  ",
                    "    ",
                )
    if comparison.problems:
        lines += ["", "Reports that could not be compared"]
        for p in comparison.problems:
            lines += _wrapped(f"{p.source}: {p.problem}", width, "  ", "    ")
    if comparison.majority is not None:
        n = len(comparison.majority.nodes)
        head = f"Majority configuration ({n} node{'s' if n != 1 else ''}): "
        lines += ["", *_wrapped(head + _nodes(comparison.majority), width, "", "  ")]
        facts = max(len(k) for k in comparison.majority_fingerprint)
        lines += [f"  {k:<{facts}}  {v}" for k, v in comparison.majority_fingerprint.items()]
    for note in comparison.notes:
        lines += _wrapped(f"note: {note}", width, "", "  ")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(comparison: Comparison, redactions: tuple[str, ...] | None) -> list[str]:
    lines = ["## torch-doctor compare", "", f"**{comparison.summary}**"]
    for group in comparison.minorities:
        n = len(group.nodes)
        lines += ["", f"### Differs: {n} node{'s' if n != 1 else ''}", "", _cell(_nodes(group))]
        lines += ["", "| fact | here | majority |", "|---|---|---|"]
        lines += [
            f"| {_cell(d.fact)} | `{_cell(d.here)}` | `{_cell(d.majority)}` |"
            for d in group.differences
        ]
    if comparison.node_findings:
        lines += ["", "### Findings", ""]
        for finding, names in _alike(comparison):
            lines.append(
                f"- **{finding.severity}** `{finding.id}`: {_cell(finding.title)} "
                f"({_cell(_on(names, comparison))})"
            )
        for node in comparison.node_findings:
            if not node.findings:
                lines.append(f"- {_cell(node.node)}: {node.verdict}")
    if comparison.problems:
        lines += ["", "### Reports that could not be compared", ""]
        lines += [f"- `{_cell(p.source)}`: {_cell(p.problem)}" for p in comparison.problems]
    if comparison.majority is not None:
        n = len(comparison.majority.nodes)
        lines += ["", f"### Majority configuration ({n} node{'s' if n != 1 else ''})", ""]
        lines += [_cell(_nodes(comparison.majority)), ""]
        lines += ["| fact | value |", "|---|---|"]
        lines += [
            f"| {_cell(k)} | `{_cell(v)}` |" for k, v in comparison.majority_fingerprint.items()
        ]
    lines += ["", *(f"_Note: {n}_" for n in comparison.notes)]
    if redactions is not None:
        lines.append(
            "_Redacted: host names are pseudonyms (the same in every report of a job)._"
            if "host-name" in redactions
            else "_Redacted._"
        )
    return lines


def render_compare(
    comparison: Comparison,
    fmt: Format,
    redactions: tuple[str, ...] | None = None,
    width: int = 80,
) -> str:
    if fmt is Format.JSON:
        return json.dumps(compare_to_dict(comparison, redactions), indent=2) + "\n"
    if fmt is Format.MARKDOWN:
        return "\n".join(_markdown(comparison, redactions)).rstrip("\n") + "\n"
    if fmt is Format.TERMINAL:
        lines = _terminal(comparison, width)
        if redactions:
            lines.append("Redacted: host names are shown as pseudonyms")
        return "\n".join(lines) + "\n"
    assert_never(fmt)


def _rank_line(result: RankResult) -> str:
    where = f"rank {result.rank} ({result.host or 'host unknown'})"
    if result.status == "ok":
        speed = ""
        if result.seconds is not None:
            speed = f", {result.seconds * 1e3:.1f} ms"
        if result.bus_bandwidth_bytes is not None:
            speed += f", bus bandwidth {result.bus_bandwidth_bytes / 1e9:.2f} GB/s"
        return f"{where}: ok ({result.backend}{speed})"
    return describe_rank(result)


def _collective_lines(collective: CollectiveFacts) -> list[str]:
    ok = sum(1 for r in collective.ranks if r.status == "ok")
    size = collective.elements * 4
    head = (
        f"all-reduce of {size / 2**20:g} MiB over {collective.world_size} ranks: "
        f"{ok} of {collective.world_size} correct"
    )
    return [head, *(_rank_line(r) for r in collective.ranks)]


def cluster_to_dict(view: ClusterView, redactions: tuple[str, ...] | None) -> dict[str, Any]:
    collective = to_jsonable(view.collective)
    collective.pop("node_reports", None)  # compare's view says what they hold
    return {"compare": compare_to_dict(view.comparison, redactions), "collective": collective}


def render_cluster(view: ClusterView, fmt: Format, redactions: tuple[str, ...] | None) -> str:
    """Rank 0's view after its report: the compare view and the collective's result
    (a JSON report carries it under "cluster", see ``cluster_to_dict``)."""
    lines = _collective_lines(view.collective)
    if fmt is Format.MARKDOWN:
        body = render_compare(view.comparison, Format.MARKDOWN, redactions)
        return (
            "\n## Cluster (torchrun)\n\n"
            + "\n".join(f"- {_cell(line)}" for line in lines)
            + "\n\n"
            + body
        )
    if fmt is Format.JSON:
        return json.dumps(cluster_to_dict(view, redactions), indent=2) + "\n"
    if fmt is Format.TERMINAL:
        return (
            "\nCluster (torchrun)\n"
            + "\n".join(f"  {line}" for line in lines)
            + "\n\n"
            + render_compare(view.comparison, Format.TERMINAL, redactions)
        )
    assert_never(fmt)
