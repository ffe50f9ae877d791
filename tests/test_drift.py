"""venv-lock-drift: what the next `uv sync` / `uv run` would change, with the real uv.

A project whose torch comes from one of two explicit indexes on 127.0.0.1 (a CPU build
and the CUDA build with its nvidia wheels), chosen by an extra or a dependency group
with `[tool.uv] conflicts`, as uv's PyTorch guide sets it up. The venv is synced with
the CUDA choice; the doctor predicts what a plain `uv run` does, and the real uv then
does exactly that.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.factory import TORCH_2_6_CU126_NVIDIA, run_doctor
from tests.test_uv_lock_metadata import UV
from tests.uv_torch_project import Project, torch_projects

pytestmark = [
    pytest.mark.uv,
    pytest.mark.timeout(300),
    pytest.mark.skipif(UV is None, reason="uv is not installed"),
    pytest.mark.skipif(sys.platform != "linux", reason="the CUDA wheels are Linux x86_64 ones"),
]

CPU_ONLY = """\
[dependency-groups]
cpu = ["torch==2.6.0"]

[tool.uv]
default-groups = ["cpu"]

[tool.uv.sources]
torch = [{ index = "torch-cpu", group = "cpu" }]
"""

CHOICE = {
    "extra": """\
[project.optional-dependencies]
cpu = ["torch==2.6.0"]
cu126 = ["torch==2.6.0"]

[tool.uv]
conflicts = [[{ extra = "cpu" }, { extra = "cu126" }]]

[tool.uv.sources]
torch = [
    { index = "torch-cpu", extra = "cpu" },
    { index = "torch-cu126", extra = "cu126" },
]
""",
    "group": """\
[dependency-groups]
cpu = ["torch==2.6.0"]
cu126 = ["torch==2.6.0"]

[tool.uv]
default-groups = ["cpu"]
conflicts = [[{ group = "cpu" }, { group = "cu126" }]]

[tool.uv.sources]
torch = [
    { index = "torch-cpu", group = "cpu" },
    { index = "torch-cu126", group = "cu126" },
]
""",
}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Callable[..., Project]]:
    with torch_projects(tmp_path) as make:
        yield make


def test_a_venv_synced_with_the_cuda_extra_loses_torch_on_the_next_plain_uv_run(
    project: Callable[..., Project],
) -> None:
    drift = project(CHOICE["extra"])
    drift.uv("sync", "--extra", "cu126")
    assert drift.torch_here() == "2.6.0+cu126"

    finding = drift.doctor().finding("venv-lock-drift")
    assert finding["title"].startswith("the next `uv sync` removes torch 2.6.0+cu126")
    removed = {c["name"] for c in finding["data"]["changes"] if c["next"] is None}
    assert removed >= {"torch", *TORCH_2_6_CU126_NVIDIA, "triton"}
    assert finding["data"]["keep_extras"] == ["cu126"]
    assert any("extras installed by default: none" in e for e in finding["evidence"])
    assert any("conflicts: extra cpu / extra cu126" in e for e in finding["evidence"])
    shells = [r["text"] for r in finding["remedies"] if r["kind"] == "shell"]
    assert "uv sync --extra cu126" in shells[0]

    # The remedies, run literally, keep this venv as it is.
    drift.uv("sync", "--extra", "cu126")
    drift.uv("run", "--no-sync", "python", "-c", "pass")
    assert drift.torch_here() == "2.6.0+cu126"
    # And the prediction: a plain `uv sync` removes torch and every nvidia wheel.
    drift.uv("sync")
    site = next((drift.root / ".venv" / "lib").glob("python3*/site-packages"))
    assert not list(site.glob("torch-*.dist-info"))
    assert not list(site.glob("nvidia_*.dist-info"))


def test_a_cuda_group_replaced_by_the_default_cpu_group_and_default_groups_fixes_it(
    project: Callable[..., Project],
) -> None:
    drift = project(CHOICE["group"])
    drift.uv("sync", "--no-default-groups", "--group", "cu126")
    assert drift.torch_here() == "2.6.0+cu126"

    run = drift.doctor()
    finding = run.finding("venv-lock-drift")
    assert "replaces torch 2.6.0+cu126 with 2.6.0+cpu" in finding["title"]
    assert any("default groups: cpu ([tool.uv] default-groups)" in e for e in finding["evidence"])
    [toml] = [r for r in finding["remedies"] if r["kind"] == "toml"]
    assert 'default-groups = ["cu126"]' in toml["text"]
    # `torch-doctor fix` first, and the follow-up after it (the shell remedies before the
    # edit are alternatives to it).
    assert toml["summary"].startswith("or run `torch-doctor fix`: it writes this")
    assert toml["summary"].endswith("then `uv sync`")
    after = finding["remedies"][finding["remedies"].index(toml) + 1 :]
    assert [(r["kind"], r["text"]) for r in after] == [("shell", "uv sync")]

    # `torch-doctor fix` writes it and names that follow-up, not an alternative.
    fixed = run_doctor("fix", "--yes", "--no-load", cwd=drift.root)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.split("Next, run", 1)[1].splitlines()[1:] == ["  uv sync"], fixed.stdout
    # A plain `uv run` then keeps the CUDA build.
    drift.uv("run", "python", "-c", "pass")
    assert drift.torch_here() == "2.6.0+cu126"
    assert "venv-lock-drift" not in drift.doctor().finding_ids()


def test_no_drift_when_the_defaults_select_what_is_installed(
    project: Callable[..., Project],
) -> None:
    drift = project(CHOICE["group"])
    drift.uv("sync")  # the default group: cpu
    assert drift.torch_here() == "2.6.0+cpu"
    run = drift.doctor()
    [check] = [c for c in run.json["checks"] if c["id"] == "venv-lock-drift"]
    assert check["status"] == "passed", check


def test_wheels_the_lock_no_longer_has_are_named(project: Callable[..., Project]) -> None:
    drift = project(CHOICE["group"])
    drift.uv("sync", "--no-default-groups", "--group", "cu126")
    assert drift.torch_here() == "2.6.0+cu126"
    # The CUDA group is dropped and the project re-locked: uv.lock holds only the CPU build.
    (drift.root / "pyproject.toml").write_text(
        (drift.root / "pyproject.toml").read_text().replace(CHOICE["group"], CPU_ONLY)
    )
    drift.uv("lock")

    finding = drift.doctor().finding("venv-lock-drift")
    assert "replaces torch 2.6.0+cu126 with 2.6.0+cpu" in finding["title"]
    gone = " (uv.lock no longer has this version)"
    assert f"torch 2.6.0+cu126 → 2.6.0+cpu{gone}" in finding["evidence"]
    cudnn = TORCH_2_6_CU126_NVIDIA["nvidia-cudnn-cu12"]
    assert f"nvidia-cudnn-cu12 {cudnn}: removed{gone}" in finding["evidence"]
    assert set(finding["data"]["not_in_lock"]) >= {"torch", *TORCH_2_6_CU126_NVIDIA}
    assert finding["data"]["keep_extras"] == [] and finding["data"]["keep_groups"] == []

    # And the real uv does exactly that.
    drift.uv("sync")
    assert drift.torch_here() == "2.6.0+cpu"
