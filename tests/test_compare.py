"""`torch-doctor compare`: the real doctor's reports from scenario venvs and stand-in
drivers (healthy, missing wheel, old driver, mixed), and files that are not reports."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from doctor.compare import Problem, compare_reports, summarise
from tests.driver_stub import Driver, DriverStubs
from tests.factory import REPO, FakeEnv, run_doctor

HOST = socket.gethostname().split(".", 1)[0]
OLD_DRIVER = Driver(version="535.104.05", cuda=12020)
COMPARE_SCHEMA = json.loads((REPO / "docs" / "compare.schema.json").read_text())


def HOST_PSEUDONYM(reports: Path) -> str:
    """The host part of the reports' names (a pseudonym: json reports are redacted)."""
    return sorted(reports.iterdir())[0].name.rsplit("-", 1)[0]


def _node_report(
    venv: FakeEnv, reports: Path, rank: int, env: dict[str, str], *, job: str = "77"
) -> None:
    """One node of a Slurm job writes its report the way docs/clusters.md says."""
    run = run_doctor(
        "check",
        "--python",
        str(venv.root),
        "--no-load",
        "--format",
        "json",
        "--output",
        str(reports / "{host}-{SLURM_PROCID}.json"),
        cwd=reports.parent,
        env={**env, "SLURM_JOB_ID": job, "SLURM_PROCID": str(rank), "SLURM_NODEID": str(rank)},
    )
    assert run.returncode in (0, 1), run.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, driver_stubs: DriverStubs) -> Path:
    """Five nodes: three healthy, one whose venv lacks nvidia-nccl-cu13, one on an old
    driver (the stand-in's config). Returns the reports directory."""
    root = tmp_path_factory.mktemp("cluster")
    healthy = FakeEnv.create(root / "healthy")
    healthy.install_healthy_cu130()
    missing = FakeEnv.create(root / "missing-nccl")
    missing.install_healthy_cu130(skip=["nvidia-nccl-cu13"])
    reports = root / "reports"
    reports.mkdir()
    good = driver_stubs.env(Driver())
    for rank in range(3):
        _node_report(healthy, reports, rank, good)
    _node_report(missing, reports, 3, good)
    _node_report(healthy, reports, 4, driver_stubs.env(OLD_DRIVER))
    return reports


def test_compare_names_the_odd_nodes_and_exactly_what_differs(cluster: Path) -> None:
    run = run_doctor("compare", str(cluster), "--format", "json", cwd=cluster.parent)
    assert run.returncode == 1, run.stderr
    data = run.json
    jsonschema.validate(data, COMPARE_SCHEMA)
    assert data["verdict"] == "differ"
    assert data["reports"] == 5
    assert [n.split(" ")[-1] for n in data["majority"]["nodes"]] == ["0)", "1)", "2)"]
    assert data["majority"]["fingerprint"]["driver"] == "580.95.05"
    assert data["majority"]["fingerprint"]["wheel nvidia-nccl-cu13"]
    groups = {tuple(g["nodes"]): g["differences"] for g in data["minorities"]}
    assert len(groups) == 2
    by_rank = {nodes[0].split("rank ")[1].rstrip(")"): diffs for nodes, diffs in groups.items()}
    nccl_facts = {d["fact"]: d for d in by_rank["3"]}
    assert set(nccl_facts) == {"wheel nvidia-nccl-cu13", "NCCL"}
    # a wheel the node lacks reads "not installed" (a variable it lacks: "(not set)")
    assert nccl_facts["wheel nvidia-nccl-cu13"]["here"] == "(not installed)"
    assert nccl_facts["NCCL"]["here"] == "none"
    assert [(d["fact"], d["here"], d["majority"]) for d in by_rank["4"]] == [
        ("driver", "535.104.05", "580.95.05")
    ]
    findings = {n["node"].split("rank ")[1].rstrip(")"): n for n in data["node_findings"]}
    errors = {rank for rank, n in findings.items() if n["verdict"] == "error"}
    assert errors == {"3", "4"}
    assert "missing-cuda-wheel" in [f["id"] for f in findings["3"]["findings"]]
    assert "driver-too-old" in [f["id"] for f in findings["4"]["findings"]]


def test_the_terminal_view_shows_the_majority_the_odd_nodes_and_their_findings(
    cluster: Path,
) -> None:
    run = run_doctor("compare", str(cluster), cwd=cluster.parent)
    assert run.returncode == 1
    out = run.stdout
    assert "5 reports, 3 agree, 2 differ in 2 groups, 2 with errors" in out
    assert "Majority configuration (3 nodes)" in out
    assert re.search(r"driver\s+535\.104\.05\s+\(majority: 580\.95\.05\)", out)
    assert re.search(r"wheel nvidia-nccl-cu13\s+\(not installed\)\s+\(majority: ", out)
    assert "missing-cuda-wheel" in out and "driver-too-old" in out


def test_markdown_is_redacted_and_hosts_stay_one_pseudonym(cluster: Path, tmp_path: Path) -> None:
    # Unredacted reports (the real host name in them and in their file names) ...
    plain = tmp_path / "plain"
    plain.mkdir()
    for report in sorted(cluster.iterdir())[:2]:
        data = json.loads(report.read_text())
        data["facts"]["node"]["identity"]["host"] = "gpunode17"
        (
            plain
            / f"gpunode17-{data['facts']['node']['identity']['launcher_ids']['SLURM_PROCID']}.json"
        ).write_text(json.dumps(data))
    run = run_doctor(
        "compare", str(plain), "--format", "markdown", cwd=tmp_path, env={"SLURM_JOB_ID": "77"}
    )
    assert run.returncode == 0, run.stdout
    # ... become the pseudonym the nodes' own redacted reports use in job 77.
    from doctor.redact import host_pseudonym

    assert "gpunode17" not in run.stdout
    assert host_pseudonym("gpunode17", "77") in run.stdout
    assert "all agree" in run.stdout


def test_at_80_columns_the_odd_nodes_come_first_and_a_shared_finding_is_said_once(
    cluster: Path, tmp_path: Path
) -> None:
    """What a platform engineer reads: which node differs and how, before the majority's
    27 facts; a finding every node has once ("on all 6 nodes"), not one line per node (a
    thousand for a thousand nodes) burying the one node's error; prose wrapped at 80
    columns; and the node whose report an older torch-doctor wrote, named."""
    nodes = tmp_path / "nodes"
    shutil.copytree(cluster, nodes)
    older = json.loads((nodes / f"{HOST_PSEUDONYM(cluster)}-0.json").read_text())
    older["version"] = "0.0.9"
    older["facts"]["node"]["identity"]["launcher_ids"]["SLURM_PROCID"] = "5"
    (nodes / "older.json").write_text(json.dumps(older))
    run = run_doctor("compare", str(nodes), cwd=tmp_path, env={"COLUMNS": "80"})
    assert run.returncode == 1, run.stderr
    out = run.stdout
    assert out.index("Differs: 1 node:") < out.index("Findings") < out.index("Majority config")
    assert all(len(line) <= 80 for line in out.splitlines()), out
    findings = out.split("Findings\n", 1)[1].split("\n\n", 1)[0]
    # errors first, each once with its node; no node listed twice for one finding
    assert findings.index("✗ driver-too-old") < findings.index("! ")
    assert findings.count("missing-cuda-wheel") == 1
    assert re.search(r"✗ missing-cuda-wheel: .*\n +on \S+ \(rank 3\)\n", findings), findings
    assert len(findings.splitlines()) <= 8, findings
    note = out.split("note: ", 1)[1]
    assert re.match(
        r"reports from several torch-doctor versions: 0\.0\.9 \(1:\s+\S+\s+\(rank\s+5\)\)",
        note,
    ), note


def test_on_a_wide_terminal_without_columns_the_view_uses_its_width(
    cluster: Path, tmp_path: Path
) -> None:
    """Shells do not export COLUMNS: the terminal's own width is used, not 80."""
    import fcntl
    import struct
    import subprocess
    import sys
    import termios

    from tests.factory import doctor_env
    from tests.test_progress import read_terminal

    env = doctor_env({})
    env.pop("COLUMNS", None)
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "doctor", "compare", str(cluster)],
        cwd=tmp_path,
        env=env,
        stdout=secondary,
        stderr=subprocess.DEVNULL,
    )
    os.close(secondary)
    proc.wait(timeout=60)
    out = read_terminal(primary).replace("\r\n", "\n")
    [title] = [line for line in out.splitlines() if "missing-cuda-wheel:" in line]
    assert title.endswith("1 CUDA wheel required by torch not installed"), out
    assert re.search(r"Majority configuration \(3 nodes\): [^\n]+\(rank 2\)\n", out), out


def test_healthy_nodes_agree_and_exit_0(cluster: Path, tmp_path: Path) -> None:
    healthy = tmp_path / "healthy"
    healthy.mkdir()
    for report in sorted(cluster.iterdir()):
        if report.stem.endswith(("-0", "-1", "-2")):
            shutil.copy(report, healthy / report.name)
    run = run_doctor("compare", *map(str, sorted(healthy.iterdir())), cwd=tmp_path)
    assert run.returncode == 0, run.stdout
    assert "3 reports, all agree" in run.stdout


def test_files_that_are_not_reports_get_one_line_each(cluster: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    first = sorted(cluster.iterdir())[0]
    shutil.copy(first, mixed / "a.json")
    shutil.copy(first, mixed / "b-duplicate.json")
    (mixed / "empty.json").write_text("")
    (mixed / "truncated.json").write_text(first.read_text()[:500])
    (mixed / "slurm-1234.out").write_text("srun: error: node3: task 3: Exited\n")
    other = json.loads(first.read_text())
    other["schema"], other["version"] = "https://torch-doctor.dev/schemas/report-2.json", "9.0"
    (mixed / "newer.json").write_text(json.dumps(other))
    (mixed / "array.json").write_text("[1, 2]")
    (mixed / ".a.json.x1y2.tmp").write_text("{")  # a report still being written
    run = run_doctor("compare", str(mixed), str(tmp_path / "gone.json"), cwd=tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = run.stdout.split("Reports that could not be compared\n", 1)[1]
    lines = re.sub(r"\n    (?=\S)", " ", lines)  # a long line wraps under its file's name
    expected = {
        "b-duplicate.json": "a second report of",
        "empty.json": "empty file",
        "truncated.json": "incomplete JSON (truncated?)",
        "slurm-1234.out": "not JSON",
        "newer.json": "another schema (https://torch-doctor.dev/schemas/report-2.json, "
        "torch-doctor 9.0)",
        "array.json": "not a torch-doctor report",
        "gone.json": "no such file or directory",
    }
    for name, text in expected.items():
        assert re.search(rf"{re.escape(name)}: .*{re.escape(text)}", lines), (name, lines)
    assert ".tmp" not in run.stdout
    assert "1 report," in run.stdout


def test_no_readable_report_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("")
    run = run_doctor("compare", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 2
    assert "no report could be read" in run.stdout


def test_compare_keeps_summaries_not_reports() -> None:
    """Memory stays bounded: a group keeps each node's label, not its facts."""
    base = {
        "schema": "https://torch-doctor.dev/schemas/report-1.json",
        "version": "0.1.0",
        "verdict": "ok",
        "exit_code": 0,
        "findings": [],
        "facts": {
            "interpreter": {"version": "3.11.7"},
            "distributions": [],
            "node": {"identity": {"host": "n", "launcher_ids": {}}},
        },
    }
    summaries = []
    for i in range(3):
        data = json.loads(json.dumps(base))
        data["facts"]["node"]["identity"]["host"] = f"n{i}"
        summaries.append(summarise(data, f"n{i}.json"))
    comparison = compare_reports(iter(summaries))
    assert comparison.exit_code == 0
    assert comparison.majority is not None and comparison.majority.nodes == ("n0", "n1", "n2")


def test_the_node_with_an_nccl_net_plugin_is_the_odd_one(
    tmp_path: Path, driver_stubs: DriverStubs
) -> None:
    """NVIDIA/nccl#1634: one node finds an HPC-X libnccl-net.so, the others none."""
    from tests.elf_fixtures import ElfBuilder, StandIn

    plugin = ElfBuilder(tmp_path / "build").build(StandIn("libnccl-net.so"))
    venv = FakeEnv.create(tmp_path / "venv")
    venv.install_healthy_cu130()
    reports = tmp_path / "reports"
    reports.mkdir()
    stubs = driver_stubs.env(Driver())
    _node_report(venv, reports, 0, stubs)
    _node_report(venv, reports, 1, stubs)
    with_plugin = {**stubs, "LD_LIBRARY_PATH": f"{stubs['LD_LIBRARY_PATH']}:{plugin.parent}"}
    _node_report(venv, reports, 2, with_plugin)
    node = json.loads(next(reports.glob("*-2.json")).read_text())["facts"]["node"]
    assert node["nccl"]["plugin"] == str(plugin.resolve())
    run = run_doctor("compare", str(reports), "--format", "json", cwd=tmp_path)
    assert run.returncode == 1
    (odd,) = run.json["minorities"]
    assert odd["nodes"][0].endswith("(rank 2)")
    assert odd["differences"] == [
        {"fact": "NCCL net plugin", "majority": "none", "here": "libnccl-net.so"}
    ]


def test_nccl_net_plugin_names_the_library_nccl_loads(tmp_path: Path) -> None:
    from doctor.probe.node import probe_node
    from tests.elf_fixtures import ElfBuilder, StandIn

    plugin = ElfBuilder(tmp_path / "build").build(StandIn("libnccl-net-aws-ofi.so"))
    env = {"LD_LIBRARY_PATH": str(plugin.parent), "NCCL_NET_PLUGIN": "aws-ofi"}
    nccl = probe_node(environ=env).nccl
    assert nccl is not None
    assert (nccl.plugin_name, nccl.plugin) == ("libnccl-net-aws-ofi.so", str(plugin.resolve()))
    assert probe_node(environ={"LD_LIBRARY_PATH": str(plugin.parent)}).nccl.plugin is None  # type: ignore[union-attr]


def test_a_nodes_findings_are_its_root_causes_only() -> None:
    report = {
        "schema": "https://torch-doctor.dev/schemas/report-1.json",
        "version": "0.1.0",
        "verdict": "error",
        "exit_code": 1,
        "findings": [
            {"id": "missing-cuda-wheel", "root": None, "severity": "error", "title": "a"},
            {
                "id": "library-not-found",
                "root": "missing-cuda-wheel",
                "severity": "error",
                "title": "b",
            },
        ],
        "facts": {"node": {"identity": {"host": "n1", "launcher_ids": {}}}},
    }
    summary = summarise(report, "n1.json")
    assert not isinstance(summary, Problem)
    assert [f.id for f in summary.findings] == ["missing-cuda-wheel"]
