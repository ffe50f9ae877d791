"""Wheel findings, end to end: real venvs, the CLI as a subprocess."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.factory import FakeEnv, run_doctor


def test_healthy_cu130_environment_has_no_findings(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert run.json["verdict"] == "ok"
    assert run.finding_ids() == []


def test_missing_cudnn_wheel_is_named_with_its_pin(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert run.returncode == 1
    finding = run.finding("missing-cuda-wheel")
    assert finding["severity"] == "error"
    assert any("nvidia-cudnn-cu13==9.24.0.43" in line for line in finding["evidence"])
    assert [m["name"] for m in finding["data"]["missing"]] == ["nvidia-cudnn-cu13"]
    command = finding["remedies"][-1]["text"]
    assert "nvidia-cudnn-cu13==9.24.0.43" in command
    assert str(env.python) in command
