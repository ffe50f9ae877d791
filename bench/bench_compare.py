"""How long `torch-doctor compare` takes over 1,000 nodes' reports, and its peak memory.

Not a test: run it by hand (see bench/README.md). The base report is the real doctor's
JSON report of a real venv (``--report FILE``; by default the doctor is run once on the
real torch 2.14.1 venv the slow tests use, with its library load). It is copied N times
(default 1,000) with each copy's host and Slurm ids changed, a few nodes given another
nvidia-nccl-cu13 version and one a missing report, into a temporary directory. Then
`torch-doctor compare DIR --format json` runs as a subprocess: its wall time and the peak
resident memory of the process are printed, and the exit status is 1 when either exceeds
its budget (a few seconds; memory bounded by a few reports, not by N).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = 5.0
BUDGET_PEAK_MB = 250.0


def base_report(path: str | None) -> dict[str, Any]:
    if path:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return data
    sys.path.insert(0, str(REPO))
    from tests.factory import real_torch_venv_path

    print("the real torch venv (built once, about a minute, if missing) ...", flush=True)
    venv = real_torch_venv_path()
    run = subprocess.run(
        [sys.executable, "-m", "doctor", "--python", str(venv), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    data = json.loads(run.stdout)
    return data


def write_reports(base: dict[str, Any], directory: Path, nodes: int) -> int:
    """N reports of ``base``, as N nodes' `check --output reports/{host}.json` would."""
    text = json.dumps(base, indent=2)
    total = 0
    for rank in range(nodes):
        data = json.loads(text)
        identity = data["facts"]["node"]["identity"]
        identity["host"] = f"node{rank:04d}"
        identity["launcher_ids"] = {"SLURM_JOB_ID": "1", "SLURM_PROCID": str(rank)}
        if rank % 250 == 7:  # a few nodes synced from an older lock
            for dist in data["facts"]["distributions"]:
                if dist["name"] == "nvidia-nccl-cu13":
                    dist["version"] = "2.27.3"
        out = json.dumps(data, indent=2)
        total += len(out)
        (directory / f"node{rank:04d}.json").write_text(out)
    (directory / "node9999.json").write_text(text[: len(text) // 3])  # a truncated one
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", help="a `check --format json` report to copy")
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    base = base_report(args.report)
    with tempfile.TemporaryDirectory(prefix="td-bench-compare-") as temporary:
        directory = Path(temporary)
        size = write_reports(base, directory, args.nodes)
        print(
            f"{args.nodes} reports, {size / 1e6:.0f} MB of JSON "
            f"({size / args.nodes / 1e3:.0f} kB each)"
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            [sys.executable, "-m", "doctor", "--version"], env=env, check=True, capture_output=True
        )  # warm the bytecode cache
        start = time.perf_counter()
        # The peak of this process alone (wait4): RUSAGE_CHILDREN would also hold the
        # doctor run that made the base report, whose library load maps hundreds of MB.
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "doctor", "compare", str(directory), "--format", "json"],
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
                cwd=REPO,
            )
            assert proc.stdout is not None
            stdout = proc.stdout.read()
            proc.stdout.close()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        peak_mb = usage.ru_maxrss / 1024
    data = json.loads(stdout)
    print(f"compare: exit {proc.returncode}, {data['summary']}")
    print(
        f"wall {seconds:.2f} s (budget {BUDGET_SECONDS} s), "
        f"peak RSS {peak_mb:.0f} MB (budget {BUDGET_PEAK_MB:.0f} MB)"
    )
    return 0 if seconds <= BUDGET_SECONDS and peak_mb <= BUDGET_PEAK_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
