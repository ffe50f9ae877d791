"""`torch-doctor compare REPORT… | DIR`: many nodes' reports, one view of the cluster.

Reports are read one at a time and reduced to a ``NodeSummary`` (identity, verdict,
root-cause findings, and the fingerprint: the facts every node of a job must agree on),
so a thousand reports never sit in memory at once. Nodes are grouped by fingerprint;
the largest group is the majority, and each other group is shown with exactly the facts
where it differs from the majority, and its nodes.

A file that is not a report (missing, empty, truncated, not JSON, another schema,
a second report of the same node) gets one line in ``problems``, never a crash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from doctor import REPORT_SCHEMA, __version__
from doctor.probe.text import ENVIRONMENT_CAP, clean, clean_tree

__all__ = [
    "COMPARE_SCHEMA",
    "Comparison",
    "Difference",
    "Group",
    "NodeSummary",
    "Problem",
    "compact_report",
    "compare_reports",
    "fingerprint",
    "report_files",
    "summarise_report",
]

COMPARE_SCHEMA = "https://torch-doctor.dev/schemas/compare-1.json"
NAMED_PER_VERSION = 8  # nodes named for a torch-doctor version other than the most common
# Distributions whose versions must agree across a job (torch's own, its CUDA wheels,
# triton, and what decides the CUDA runtime).
_JOB_DISTRIBUTIONS = ("torch", "triton", "cuda-toolkit", "cuda-bindings")
_JOB_DISTRIBUTION_PREFIXES = ("nvidia-",)
# Variables that differ per process by design, or that belong to the doctor.
_PER_PROCESS_VARIABLES = frozenset({"CUDA_VISIBLE_DEVICES", "TORCHELASTIC_RUN_ID"})
_DOCTOR_VARIABLE_PREFIX = "TORCH_DOCTOR_"
NOT_SET = "(not set)"
NOT_INSTALLED = "(not installed)"
UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class FindingLine:
    id: str
    severity: str
    title: str


@dataclass(frozen=True)
class NodeSummary:
    """What compare keeps of one report."""

    source: str  # the file it came from
    host: str
    launcher_ids: dict[str, str]
    verdict: str
    exit_code: int
    doctor_version: str
    findings: tuple[FindingLine, ...]
    fingerprint: dict[str, str]

    @property
    def label(self) -> str:
        """The host, and the rank when the launcher gave one (several ranks per host)."""
        for name in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
            if name in self.launcher_ids:
                return f"{self.host} (rank {self.launcher_ids[name]})"
        return self.host

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        ids = {k: v for k, v in self.launcher_ids.items() if k != "TORCHELASTIC_RUN_ID"}
        return self.host, tuple(sorted(ids.items()))


@dataclass(frozen=True)
class Problem:
    source: str
    problem: str


@dataclass(frozen=True)
class Difference:
    fact: str
    majority: str
    here: str


@dataclass(frozen=True)
class Group:
    """Nodes that share one fingerprint; ``differences`` against the majority's."""

    nodes: tuple[str, ...]  # labels
    sources: tuple[str, ...]
    differences: tuple[Difference, ...] = ()


@dataclass(frozen=True)
class NodeFindings:
    node: str
    source: str
    verdict: str
    findings: tuple[FindingLine, ...]


@dataclass(frozen=True)
class Comparison:
    """The cluster view: the majority, the groups that differ, findings, problems."""

    reports: int  # reports compared
    majority: Group | None
    majority_fingerprint: dict[str, str]
    minorities: tuple[Group, ...]
    node_findings: tuple[NodeFindings, ...]
    problems: tuple[Problem, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    hosts: tuple[str, ...] = ()  # every host named by a report (what redaction removes)

    @property
    def exit_code(self) -> int:
        if self.reports == 0:
            return 2
        failed = any(n.verdict in ("error", "incomplete") for n in self.node_findings)
        return 1 if failed or self.minorities or self.problems else 0

    @property
    def verdict(self) -> str:
        if self.reports == 0:
            return "no-reports"
        if self.minorities:
            return "differ"
        if self.exit_code:
            return "error"
        return "ok"

    @property
    def summary(self) -> str:
        if self.reports == 0:
            return "no report could be read"
        parts = [f"{self.reports} report{'s' if self.reports != 1 else ''}"]
        if self.majority is not None:
            agree = len(self.majority.nodes)
            parts.append(
                "all agree"
                if not self.minorities
                else f"{agree} agree, {self.reports - agree} differ"
                f" in {len(self.minorities)} group{'s' if len(self.minorities) != 1 else ''}"
            )
        errors = sum(1 for n in self.node_findings if n.verdict in ("error", "incomplete"))
        if errors:
            parts.append(f"{errors} with errors")
        if self.problems:
            n = len(self.problems)
            parts.append(f"{n} problem{'s' if n != 1 else ''} reading reports")
        return ", ".join(parts)


def report_files(arguments: Sequence[str]) -> Iterator[Path | Problem]:
    """Each file named, and every file in each directory named (sorted, hidden and
    temporary files left out); a missing argument is a Problem."""
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            try:
                entries = sorted(os.scandir(path), key=lambda e: e.name)
            except OSError as exc:
                yield Problem(argument, f"cannot list the directory: {exc.strerror or exc}")
                continue
            for entry in entries:
                # .name.tmp: a report still being written (destination.write_atomically)
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                yield Path(entry.path)
        elif path.exists():
            yield path
        else:
            yield Problem(argument, "no such file or directory")


def summarise_report(path: Path) -> NodeSummary | Problem:
    """One report file reduced to its summary, or the reason it is not a report.

    The file is read as the probes read the environment's files (doctor/probe/files.py):
    only a regular file, without blocking (a FIFO), up to the size a report may be."""
    from doctor.probe.files import UnreadableFile, read_capped

    source = clean(str(path))
    try:
        raw = read_capped(str(path), "report")
    except UnreadableFile as exc:
        return Problem(source, clean(str(exc).removeprefix(f"{path}: ")))
    if not raw.strip():
        return Problem(source, "empty file (the node's run did not finish?)")
    try:
        data = json.loads(raw)
    except RecursionError:
        return Problem(source, "JSON nested too deeply to read (not a torch-doctor report)")
    except (ValueError, UnicodeDecodeError) as exc:
        if raw.lstrip()[:1] in (b"{", b"["):
            return Problem(source, clean(f"incomplete JSON (truncated?): {exc}"))
        return Problem(source, "not JSON (not a `check --format json` report)")
    del raw
    return summarise(data, source)


def summarise(data: Any, source: str) -> NodeSummary | Problem:
    """A report already parsed (the torchrun stage hands them over as dicts).

    Whatever the JSON holds, the answer is a summary or a Problem: every string is
    cleaned first (a host name or finding id with ESC sequences would reach the
    terminal), and nesting too deep to walk or numbers no integer holds are problems."""
    source = clean(source)
    try:
        data = _cleaned(data)
    except RecursionError:
        return Problem(source, "JSON nested too deeply to read (not a torch-doctor report)")
    if not isinstance(data, dict) or "schema" not in data:
        return Problem(source, "JSON, but not a torch-doctor report (no schema key)")
    if data["schema"] != REPORT_SCHEMA:
        return Problem(
            source,
            f"a report of another schema ({data['schema']}, torch-doctor "
            f"{data.get('version', '?')}); this torch-doctor {__version__} reads "
            f"{REPORT_SCHEMA.rsplit('/', 1)[1].removesuffix('.json')}",
        )
    try:
        facts = data["facts"]
        node = facts.get("node") or {}
        identity = node.get("identity") or {}
        findings = tuple(
            FindingLine(str(f["id"]), str(f["severity"]), str(f["title"]))
            for f in data.get("findings", [])
            if not f.get("root")  # a consequence hangs under its root cause
        )
        return NodeSummary(
            source=source,
            host=str(identity.get("host") or Path(source).stem),
            launcher_ids={str(k): str(v) for k, v in (identity.get("launcher_ids") or {}).items()},
            verdict=str(data.get("verdict", "incomplete")),
            exit_code=int(data.get("exit_code", 2)),
            doctor_version=str(data.get("version", "?")),
            findings=findings,
            fingerprint=fingerprint(facts),
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # OverflowError: int() of an infinite exit code (JSON's Infinity, or 1e400).
        return Problem(source, clean(f"a report with missing or malformed parts ({exc})"))
    except RecursionError:
        return Problem(source, "a report with parts nested too deeply to read")


def _cleaned(data: Any) -> Any:
    """The report with every string cleaned (doctor/probe/text.py), as the probes clean
    what they read; the node's variables keep the larger cap of the environment, so that
    two long values that differ after the usual cap still differ."""
    if not isinstance(data, dict):
        return clean_tree(data)
    facts = data.get("facts")
    node = facts.get("node") if isinstance(facts, dict) else None
    variables = node.get("variables") if isinstance(node, dict) else None
    cleaned = clean_tree(data)
    if variables is not None:
        cleaned["facts"]["node"]["variables"] = clean_tree(variables, ENVIRONMENT_CAP)
    return cleaned


def compact_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """What ``summarise`` reads of a `check --format json` report, and nothing more: what
    each rank of the torchrun stage sends rank 0 (kilobytes, not a fact tree)."""
    facts = report.get("facts") or {}
    machine = facts.get("machine") or {}
    nvml = machine.get("nvml") or {}
    return {
        "schema": report.get("schema"),
        "version": report.get("version"),
        "verdict": report.get("verdict"),
        "exit_code": report.get("exit_code"),
        "findings": [
            {k: f.get(k) for k in ("id", "severity", "title", "root") if k in f}
            for f in report.get("findings") or []
        ],
        "facts": {
            "torch": (
                {k: _get(facts, "torch", k) for k in ("version", "cuda")}
                if facts.get("torch")
                else None
            ),
            "interpreter": {"version": _get(facts, "interpreter", "version")},
            "platform": {"libc_version": _get(facts, "platform", "libc_version")},
            "machine": {
                "nvml": {
                    "driver_version": nvml.get("driver_version"),
                    "gpus": [{"name": g.get("name")} for g in nvml.get("gpus") or []],
                }
                if nvml
                else None
            },
            "node": facts.get("node"),
            "distributions": [
                {k: d.get(k) for k in ("name", "version", "shadowed")}
                for d in facts.get("distributions") or []
                if d.get("name") in _JOB_DISTRIBUTIONS
                or str(d.get("name", "")).startswith(_JOB_DISTRIBUTION_PREFIXES)
            ],
        },
    }


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _text(value: Any, missing: str = UNKNOWN) -> str:
    return missing if value is None or value == "" else str(value)


def fingerprint(facts: Mapping[str, Any]) -> dict[str, str]:
    """The facts of one report that must agree across the nodes of a job, as text."""
    prints: dict[str, str] = {
        "torch": _text(_get(facts, "torch", "version")) if facts.get("torch") else NOT_SET,
        "torch CUDA": _text(_get(facts, "torch", "cuda"), "none")
        if facts.get("torch")
        else NOT_SET,
        "Python": _text(_get(facts, "interpreter", "version")),
        "glibc": _text(_get(facts, "platform", "libc_version")),
    }
    machine = facts.get("machine") or {}
    nvml = machine.get("nvml") or {}
    prints["driver"] = _text(nvml.get("driver_version"), "none") if nvml else UNKNOWN
    gpus = [str(g.get("name")) for g in nvml.get("gpus") or []]
    names = sorted(set(gpus))
    prints["GPUs"] = ", ".join(f"{gpus.count(n)} x {n}" for n in names) if gpus else "none"
    nccl = _get(facts, "node", "nccl") or {}
    prints["NCCL"] = _text(nccl.get("version"), "none") if nccl else UNKNOWN
    plugin = nccl.get("plugin")
    prints["NCCL net plugin"] = os.path.basename(plugin) if plugin else "none"
    for dist in facts.get("distributions") or []:
        name = str(dist.get("name", ""))
        if dist.get("shadowed"):
            continue
        if name in _JOB_DISTRIBUTIONS or name.startswith(_JOB_DISTRIBUTION_PREFIXES):
            prints[f"wheel {name}"] = _text(dist.get("version"))
    variables = _get(facts, "node", "variables") or {}
    for name, value in sorted(variables.items()):
        if name in _PER_PROCESS_VARIABLES or name.startswith(_DOCTOR_VARIABLE_PREFIX):
            continue
        prints[f"${name}"] = str(value)
    return prints


def _absent(fact: str) -> str:
    """What a fact a node lacks is shown as: a wheel is not installed, a variable not set."""
    return NOT_INSTALLED if fact.startswith("wheel ") else NOT_SET


def _differences(majority: Mapping[str, str], other: Mapping[str, str]) -> tuple[Difference, ...]:
    keys = list(majority) + [k for k in other if k not in majority]
    return tuple(
        Difference(k, majority.get(k, _absent(k)), other.get(k, _absent(k)))
        for k in keys
        if majority.get(k, _absent(k)) != other.get(k, _absent(k))
    )


def compare_reports(summaries: Iterable[NodeSummary | Problem]) -> Comparison:
    """Group the nodes, name the majority and what each other group differs in."""
    groups: dict[str, list[NodeSummary]] = {}
    prints: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    node_findings: list[NodeFindings] = []
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    versions: dict[str, int] = {}
    by_version: dict[str, list[str]] = {}  # the first nodes of each version, to name them
    hosts: set[str] = set()
    count = 0
    for item in summaries:
        if isinstance(item, Problem):
            problems.append(item)
            continue
        first = seen.get(item.key)
        if first is not None:
            problems.append(
                Problem(item.source, f"a second report of {item.label} (first: {first}); left out")
            )
            continue
        seen[item.key] = item.source
        hosts.add(item.host)
        count += 1
        versions[item.doctor_version] = versions.get(item.doctor_version, 0) + 1
        if len(by_version.setdefault(item.doctor_version, [])) <= NAMED_PER_VERSION:
            by_version[item.doctor_version].append(item.label)
        key = json.dumps(item.fingerprint, sort_keys=True)
        prints.setdefault(key, item.fingerprint)
        # Only what the view shows is kept: the fingerprint once per group.
        groups.setdefault(key, []).append(replace(item, fingerprint={}))
        if item.findings or item.verdict in ("error", "incomplete"):
            node_findings.append(NodeFindings(item.label, item.source, item.verdict, item.findings))
    if not groups:
        return Comparison(0, None, {}, (), (), tuple(problems), hosts=tuple(sorted(hosts)))
    # The majority: the largest group; ties go to the group met first.
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    majority_key, majority_nodes = ordered[0]
    majority_print = prints[majority_key]

    def group(nodes: list[NodeSummary], differences: tuple[Difference, ...] = ()) -> Group:
        return Group(tuple(n.label for n in nodes), tuple(n.source for n in nodes), differences)

    minorities = tuple(
        group(nodes, _differences(majority_print, prints[key])) for key, nodes in ordered[1:]
    )
    notes: tuple[str, ...] = ()
    if len(versions) > 1:
        # The most common version is the reference; the others name their nodes, so the
        # node to upgrade (or the report to make again) is found without opening files.
        common = max(versions, key=lambda v: versions[v])

        def named(version: str) -> str:
            count = versions[version]
            if version == common:
                return f"{version} ({count})"
            shown = by_version[version][:NAMED_PER_VERSION]
            rest = count - len(shown)
            return f"{version} ({count}: {', '.join(shown)}" + (
                f" and {rest} more)" if rest > 0 else ")"
            )

        notes = (
            "reports from several torch-doctor versions: "
            + ", ".join(named(v) for v in sorted(versions)),
        )
    return Comparison(
        count,
        group(majority_nodes),
        majority_print,
        minorities,
        tuple(node_findings),
        tuple(problems),
        notes,
        tuple(sorted(hosts)),
    )


def compare_paths(arguments: Sequence[str]) -> Comparison:
    def summaries() -> Iterator[NodeSummary | Problem]:
        for item in report_files(arguments):
            yield item if isinstance(item, Problem) else summarise_report(item)

    return compare_reports(summaries())


def redact_comparison(comparison: Comparison) -> tuple[Comparison, tuple[str, ...]]:
    """The comparison with this user's home and name and every node's host name removed
    (host names become the pseudonyms the nodes' own redacted reports carry)."""
    import re

    from doctor.redact import RedactionRules, redact, run_key

    here = RedactionRules.current()
    # Hosts of redacted reports are pseudonyms already: kept as they are.
    named = [h for h in comparison.hosts if not re.fullmatch(r"host-[0-9a-f]{8}", h)]
    hosts = [*here.hosts, *named, *(h.split(".", 1)[0] for h in named)]
    rules = RedactionRules.build(here.homes, here.users, hosts, run_key())
    clean, kinds = redact(replace(comparison, hosts=()), rules)
    return clean, tuple(kinds)
