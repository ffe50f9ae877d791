"""The benchmark still runs: bench/bench_default_run.py --quick on the real torch venv.

A smoke test, not a timed one: one round of every command, the scale cases shrunk; the
speed targets live in bench/ and are read from its output by a person, never asserted here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import FakeEnv

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_default_run.py"


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
