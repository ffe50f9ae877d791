"""The benchmarks still run: bench/bench_default_run.py --quick and bench/bench_compare.py
--nodes 20 on the real torch venv.

Smoke tests, not timed ones: one round of every command, the scale cases shrunk; the
speed targets live in bench/ and are read from its output by a person, never asserted here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import FakeEnv

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_default_run.py"
BENCH_COMPARE = BENCH.with_name("bench_compare.py")


@pytest.mark.slow
def test_benchmark_quick_mode_prints_every_ratio_beside_its_target(
    real_torch_venv: FakeEnv,
) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--venv", str(real_torch_venv.root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for line in (
        "default run / bare loads (the floor)",
        "default run / collect_env",
        "default run / import torch",
        "extra distributions / plain venv",
        "8 GPUs / 1 GPU",
    ):
        assert line in out, out
    assert "target <= 1.25x" in out and "target <= 0.20x" in out
    assert "target <= 1.30x" in out and "target <= 1.20x" in out
    assert "pyelftools' public API" in out
    # The extra distributions went into a copy: the shared venv is as it was.
    assert not list(real_torch_venv.site_packages.glob("bench_extra_*")), "venv changed"


@pytest.mark.slow
def test_compare_benchmark_copies_a_real_report_and_measures_compare_alone(
    real_torch_venv: FakeEnv,
) -> None:
    # Its base report is the real doctor's on the real venv (the fixture built it).
    proc = subprocess.run(
        [sys.executable, str(BENCH_COMPARE), "--nodes", "20"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert "20 reports, " in out, out + proc.stderr
    # The copies differ as written: one node's NCCL wheel, one truncated report.
    assert "compare: exit 1, 20 reports, 19 agree, 1 differ in 1 group, 1 problem" in out
    # The peak is compare's own (not the base report's run, which maps torch's libraries):
    # 20 reports sit far inside the budget, so the benchmark's verdict is 0.
    assert "budget 5.0 s" in out and "(budget 250 MB)" in out
    assert proc.returncode == 0, out + proc.stderr
