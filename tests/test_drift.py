"""venv-lock-drift: what the next `uv sync` / `uv run` would change, with the real uv.

A project whose torch comes from one of two explicit indexes on 127.0.0.1 (a CPU build
and the CUDA build with its nvidia wheels), chosen by an extra or a dependency group
with `[tool.uv] conflicts`, as uv's PyTorch guide sets it up. The venv is synced with
the CUDA choice; the doctor predicts what a plain `uv run` does, and the real uv then
does exactly that.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.factory import TORCH_2_6_CU126_NVIDIA, DoctorRun, run_doctor
from tests.index_server import serve_index
from tests.test_uv_lock_metadata import UV, _uv_env
from tests.wheelhouse import (
    CPYTHON_TAG,
    WheelSpec,
    build_wheels,
    founding_case_wheels,
)

pytestmark = [
    pytest.mark.uv,
    pytest.mark.timeout(300),
    pytest.mark.skipif(UV is None, reason="uv is not installed"),
    pytest.mark.skipif(sys.platform != "linux", reason="the CUDA wheels are Linux x86_64 ones"),
]

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

PYPROJECT = """\
[project]
name = "drift"
version = "0.1.0"
requires-python = "=={python}.*"
dependencies = []

{choice}
[[tool.uv.index]]
name = "torch-cpu"
url = "{cpu}"
explicit = true

[[tool.uv.index]]
name = "torch-cu126"
url = "{cuda}"
explicit = true

[[tool.uv.index]]
name = "local"
url = "{plain}"
default = true
"""


def _torch_cpu() -> WheelSpec:
    [cuda] = [w for w in founding_case_wheels() if w.tag.endswith("x86_64") and w.name == "torch"]
    nvidia = {*TORCH_2_6_CU126_NVIDIA, "triton"}
    return WheelSpec(
        "torch",
        "2.6.0+cpu",
        tag=f"{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_x86_64",
        requires_dist=tuple(r for r in cuda.requires_dist if r.split("=")[0] not in nvidia),
        provides_extra=cuda.provides_extra,
        requires_python=cuda.requires_python,
        files={**cuda.files, "torch/version.py": b"__version__ = '2.6.0+cpu'\ncuda = None\n"},
    )


class Project:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def uv(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert UV is not None
        done = subprocess.run(
            [UV, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"uv {' '.join(args)}:\n{done.stderr}"
        return done

    def torch_here(self) -> str:
        return self.uv(
            "run",
            "--no-sync",
            "python",
            "-c",
            "import importlib.metadata as m; print(m.version('torch'))",
        ).stdout.strip()

    def doctor(self, *args: str) -> DoctorRun:
        return run_doctor(*args, "--format", "json", "--no-load", cwd=self.root)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Callable[[str], Project]]:
    with ExitStack() as stack:

        def make(choice: str) -> Project:
            wheels = founding_case_wheels(aarch64_declares_nvidia=True)
            torch_cuda = [w for w in wheels if w.name == "torch"]
            plain = [w for w in wheels if w.name != "torch"]
            serve = lambda specs, d: stack.enter_context(  # noqa: E731
                serve_index(build_wheels(specs, tmp_path / d))
            )
            cpu, cuda, rest = (
                serve([_torch_cpu()], "cpu"),
                serve(torch_cuda, "cu"),
                serve(plain, "p"),
            )
            root = tmp_path / "drift"
            root.mkdir()
            python = f"{sys.version_info[0]}.{sys.version_info[1]}"
            (root / "pyproject.toml").write_text(
                PYPROJECT.format(
                    python=python, choice=CHOICE[choice], cpu=cpu.url, cuda=cuda.url, plain=rest.url
                )
            )
            made = Project(root, _uv_env(tmp_path))
            made.uv("lock")
            return made

        yield make


def test_a_venv_synced_with_the_cuda_extra_loses_torch_on_the_next_plain_uv_run(
    project: Callable[[str], Project],
) -> None:
    drift = project("extra")
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
    project: Callable[[str], Project],
) -> None:
    drift = project("group")
    drift.uv("sync", "--no-default-groups", "--group", "cu126")
    assert drift.torch_here() == "2.6.0+cu126"

    run = drift.doctor()
    finding = run.finding("venv-lock-drift")
    assert "replaces torch 2.6.0+cu126 with 2.6.0+cpu" in finding["title"]
    assert any("default groups: cpu ([tool.uv] default-groups)" in e for e in finding["evidence"])
    [toml] = [r for r in finding["remedies"] if r["kind"] == "toml"]
    assert 'default-groups = ["cu126"]' in toml["text"]

    # `torch-doctor fix` writes it; a plain `uv run` then keeps the CUDA build.
    fixed = run_doctor("fix", "--yes", "--no-load", cwd=drift.root)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    drift.uv("run", "python", "-c", "pass")
    assert drift.torch_here() == "2.6.0+cu126"
    assert "venv-lock-drift" not in drift.doctor().finding_ids()


def test_no_drift_when_the_defaults_select_what_is_installed(
    project: Callable[[str], Project],
) -> None:
    drift = project("group")
    drift.uv("sync")  # the default group: cpu
    assert drift.torch_here() == "2.6.0+cpu"
    run = drift.doctor()
    [check] = [c for c in run.json["checks"] if c["id"] == "venv-lock-drift"]
    assert check["status"] == "passed", check
