"""A uv project's venv that `uv pip install` broke, while uv.lock is right: the broken wheel is
the root cause, its remedy is the sync that puts back what the lock records, and the
warning that "the next `uv sync` changes" the venv hangs under it instead of telling the
user to keep uv from syncing. Real uv, wheels served on 127.0.0.1; the printed command is
run literally and the next run is clean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.factory import TORCH_2_6_CU126_NVIDIA, DoctorRun, paste_as_printed, run_doctor
from tests.index_server import serve_index
from tests.test_uv_lock_metadata import UV, _uv_env
from tests.uv_torch_project import Project
from tests.wheelhouse import CPYTHON_TAG, WheelSpec, build_wheels, founding_case_wheels

pytestmark = [
    pytest.mark.uv,
    pytest.mark.timeout(300),
    pytest.mark.skipif(UV is None, reason="uv is not installed"),
    pytest.mark.skipif(sys.platform != "linux", reason="the CUDA wheels are Linux x86_64 ones"),
]

NCCL = "nvidia-nccl-cu12"
# Findings about this machine (no driver in the container, the nvcc on PATH), not the venv.
MACHINE = {"no-nvidia-driver", "nvcc-cuda-mismatch", "several-cuda-toolkits"}


def _torchvision(version: str, torch: str) -> WheelSpec:
    return WheelSpec(
        "torchvision",
        version,
        tag=f"{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_x86_64",
        requires_dist=(f"torch=={torch}",),
        files={"torchvision/__init__.py": b""},
    )


# torchvision 0.21.0 is built for torch 2.6.0, 0.20.1 for torch 2.5.1 (their real pins);
# nvidia-nccl-cu12 2.21.4 is not the 2.21.5 torch 2.6.0+cu126 pins.
BROKEN = [
    _torchvision("0.20.1+cu124", "2.5.1"),
    # A CUDA 13 cuDNN: it installs into nvidia/cudnn/lib as torch's nvidia-cudnn-cu12 does.
    WheelSpec(
        "nvidia-cudnn-cu13",
        "9.24.0.43",
        tag="py3-none-manylinux_2_17_x86_64",
        files={"nvidia/cudnn/lib/placeholder": b"nvidia-cudnn-cu13\n"},
    ),
    WheelSpec(
        NCCL,
        "2.21.4",
        tag="py3-none-manylinux_2_17_x86_64",
        files={"nvidia/nccl/lib/placeholder": b"2.21.4\n"},
    ),
]

PYPROJECT = """\
[project]
name = "demo"
version = "0.1.0"
requires-python = "=={python}.*"
dependencies = ["torch==2.6.0"{torchvision}]

[tool.uv.sources]
torch = [{{ index = "pytorch-cu126" }}]
torchvision = [{{ index = "pytorch-cu126" }}]

[[tool.uv.index]]
name = "pytorch-cu126"
url = "{cuda}"
explicit = true

[[tool.uv.index]]
name = "local"
url = "{plain}"
default = true
{extra}"""


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[Callable[..., tuple[Project, str]]]:
    """make(with_torchvision, extra="") -> (the project synced from its lock, the URL of an
    index with the wrong builds to `uv pip install` over it); ``extra`` is appended to
    pyproject.toml, ``{broken}`` in it naming that index."""
    wheels = founding_case_wheels(aarch64_declares_nvidia=True)
    cuda = [w for w in wheels if w.name == "torch"] + [_torchvision("0.21.0+cu126", "2.6.0")]
    plain = [w for w in wheels if w.name != "torch"]
    with ExitStack() as stack:
        served = {
            name: stack.enter_context(serve_index(build_wheels(specs, tmp_path / name))).url
            for name, specs in (("cuda", cuda), ("plain", plain), ("broken", BROKEN))
        }

        def make(with_torchvision: bool, extra: str = "") -> tuple[Project, str]:
            root = tmp_path / "demo"
            root.mkdir()
            (root / "pyproject.toml").write_text(
                PYPROJECT.format(
                    python=f"{sys.version_info[0]}.{sys.version_info[1]}",
                    torchvision=', "torchvision"' if with_torchvision else "",
                    cuda=served["cuda"],
                    plain=served["plain"],
                    extra=extra.replace("{broken}", served["broken"]),
                )
            )
            env = _uv_env(tmp_path)
            env.pop("VIRTUAL_ENV", None)  # the test runner's own venv: never touched
            project = Project(root, env)
            project.uv("lock")
            project.uv("sync")
            assert project.torch_here() == "2.6.0+cu126"
            return project, served["broken"]

        yield make


def _roots(run: DoctorRun) -> list[str]:
    return [f["id"] for f in run.json["findings"] if f["root"] is None and f["id"] not in MACHINE]


def _uv_pip_install(project: Project, index: str, spec: str) -> None:
    """What broke the venv: `uv pip install` of another build into the project's venv."""
    venv = str(project.root / ".venv")
    project.uv("pip", "install", "--python", venv, "--no-deps", "--index-url", index, spec)


def _shell(finding: dict[str, Any]) -> list[str]:
    return [r["text"] for r in finding["remedies"] if r["kind"] == "shell"]


def test_a_cuda_wheel_uv_pip_replaced_is_one_root_whose_remedy_is_the_sync(
    synced: Callable[..., tuple[Project, str]],
) -> None:
    project, extra = synced(False)
    _uv_pip_install(project, extra, f"{NCCL}==2.21.4")

    broken = project.doctor()
    # Was: a second root, venv-lock-drift "the next `uv sync` replaces torch's CUDA
    # wheels", whose remedy was `uv run --no-sync` (keep the broken wheel).
    assert _roots(broken) == ["cuda-wheel-version-mismatch"]
    drift = broken.finding("venv-lock-drift")
    assert drift["root"] == "cuda-wheel-version-mismatch" and drift["remedies"] == []
    assert drift["title"] == f"the next `uv sync` replaces {NCCL}"
    root = broken.finding("cuda-wheel-version-mismatch")
    [command] = _shell(root)
    assert command == f"uv sync --reinstall-package {NCCL}"

    paste_as_printed(command, project.env, project.root)
    healed = project.doctor()
    assert _roots(healed) == [] and healed.returncode == 0
    venv = str(project.root / ".venv")
    installed = project.uv("pip", "freeze", "--python", venv).stdout
    assert f"{NCCL}=={TORCH_2_6_CU126_NVIDIA[NCCL]}" in installed


def test_the_sync_printed_for_a_project_inspected_from_elsewhere_runs_there_as_pasted(
    synced: Callable[..., tuple[Project, str]], tmp_path: Path
) -> None:
    """`--python <project>/.venv` from another directory: the printed block starts with `cd`
    to the project, so pasted where the doctor ran, `uv sync` syncs that project."""
    project, extra = synced(False)
    _uv_pip_install(project, extra, f"{NCCL}==2.21.4")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    venv = str(project.root / ".venv")
    args = ("--python", venv, "--format", "json", "--no-load")

    broken = run_doctor(*args, cwd=elsewhere)
    [command] = _shell(broken.finding("cuda-wheel-version-mismatch"))
    assert command == f"cd {project.root}\nuv sync --reinstall-package {NCCL}"

    paste_as_printed(command, project.env, elsewhere)
    healed = run_doctor(*args, cwd=elsewhere)
    assert _roots(healed) == [] and healed.returncode == 0


def test_a_torchvision_uv_pip_replaced_is_put_back_by_uv_sync_when_the_lock_has_the_right_one(
    synced: Callable[..., tuple[Project, str]],
) -> None:
    project, extra = synced(True)
    _uv_pip_install(project, extra, "torchvision==0.20.1+cu124")

    broken = project.doctor()
    assert _roots(broken) == ["torch-companion-mismatch"]
    assert broken.finding("venv-lock-drift")["root"] == "torch-companion-mismatch"
    assert broken.finding("venv-lock-drift")["title"] == "the next `uv sync` replaces torchvision"
    root = broken.finding("torch-companion-mismatch")
    # Was: a [[tool.uv.index]]/[tool.uv.sources] block for the PyTorch index and a
    # re-lock: an edit to a project whose lock was right all along.
    assert [r["kind"] for r in root["remedies"]] == ["shell"]
    assert "uv.lock records torchvision 0.21.0+cu126" in root["remedies"][0]["summary"]
    [command] = _shell(root)
    assert command == "uv sync"

    paste_as_printed(command, project.env, project.root)
    healed = project.doctor()
    assert _roots(healed) == [] and healed.returncode == 0


def test_a_torchvision_the_project_does_not_depend_on_is_added_at_the_release_for_torch(
    synced: Callable[..., tuple[Project, str]],
) -> None:
    """torchvision put in with `uv pip`: re-locking would not record it, and the sync after
    it would remove it. The remedy makes it a dependency, at the release built for torch."""
    project, extra = synced(False)
    _uv_pip_install(project, extra, "torchvision==0.20.1+cu124")

    broken = project.doctor()
    assert _roots(broken) == ["torch-companion-mismatch"]
    drift = broken.finding("venv-lock-drift")
    assert drift["root"] == "torch-companion-mismatch"
    assert drift["title"] == "the next `uv sync` removes torchvision"
    root = broken.finding("torch-companion-mismatch")
    commands = _shell(root)
    assert commands[-1] == "uv add 'torchvision==0.21.*'\n"
    assert not any("uv lock" in c for c in commands)


OVERRIDE = """
[[tool.uv.index]]
name = "broken"
url = "{broken}"

[tool.uv]
index-strategy = "unsafe-best-match"
override-dependencies = ["nvidia-nccl-cu12==2.21.4"]
"""


def test_a_wheel_version_forced_in_the_lock_is_not_given_a_sync_that_puts_it_back(
    synced: Callable[..., tuple[Project, str]],
) -> None:
    """uv.lock itself records nccl 2.21.4 (an override): `uv sync --reinstall-package` was
    the remedy, and it installs 2.21.4 again; the override-dependencies advice was TOML
    inside a sentence. The remedy now says what forces it, and re-locks after the edit."""
    project, _ = synced(False, OVERRIDE)
    broken = project.doctor()
    assert _roots(broken) == ["cuda-wheel-version-mismatch"]
    root = broken.finding("cuda-wheel-version-mismatch")
    assert not any("--reinstall-package" in r["text"] for r in root["remedies"])
    text, shell = root["remedies"]
    assert text["kind"] == "text"
    assert text["summary"] == f"uv.lock itself records {NCCL} 2.21.4, which torch rejects"
    assert "override-dependencies" in text["text"] and "= [" not in text["text"]
    assert (
        shell["kind"] == "shell" and shell["text"] == f"uv lock --upgrade-package {NCCL}\nuv sync\n"
    )
    assert f"{NCCL}==2.21.5" in shell["summary"]

    # As the remedy says: make the entry torch's pin, then run the block.
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("==2.21.4", "==2.21.5"))
    paste_as_printed(shell["text"], project.env, project.root)
    healed = project.doctor()
    assert _roots(healed) == [] and healed.returncode == 0


def test_a_cudnn_of_another_major_over_torchs_is_removed_by_a_sync_that_reinstalls_torchs(
    synced: Callable[..., tuple[Project, str]],
) -> None:
    """nvidia-cudnn-cu13 put with `uv pip` beside torch 2.6.0+cu126's nvidia-cudnn-cu12:
    both install nvidia/cudnn/lib. The remedy was a plain `uv sync`, which removes the
    CUDA 13 wheel and its files, the ones the CUDA 12 wheel needs (the next run: missing
    files). `uv sync --reinstall-package` removes it and puts torch's wheel back."""
    project, extra = synced(False)
    _uv_pip_install(project, extra, "nvidia-cudnn-cu13==9.24.0.43")

    broken = project.doctor()
    assert _roots(broken) == ["mixed-cuda-majors"]
    [command] = _shell(broken.finding("mixed-cuda-majors"))
    assert command == "uv sync --reinstall-package nvidia-cudnn-cu12"

    paste_as_printed(command, project.env, project.root)
    healed = project.doctor()
    assert _roots(healed) == [] and healed.returncode == 0
