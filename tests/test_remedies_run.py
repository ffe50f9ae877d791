"""Remedies run literally: the printed command, pasted into a shell, fixes the environment
that was inspected, and the next run is clean.

The venvs are real; the wheels come from an index served on 127.0.0.1 (uv is pointed at it
by UV_INDEX_URL, as a user's uv.toml or pip.conf would), or, for the real torch, from this
machine's disk through pip's own configuration.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.factory import TORCH_2_14_WHEELS, DoctorRun, FakeEnv, paste_as_printed, run_doctor
from tests.index_server import serve_index
from tests.test_uv_lock_metadata import UV, _uv_env
from tests.wheelhouse import WheelSpec, build_wheels

CUDNN = "nvidia-cudnn-cu13"
NCCL = "nvidia-nccl-cu13"
CUDNN_FILES = {
    f"nvidia/cudnn/lib/libcudnn{part}.so.9": b"\x7fELF stand-in"
    for part in ("", "_ops", "_cnn", "_adv", "_graph")
}


def _wheel(name: str, version: str, files: dict[str, bytes] | None = None) -> WheelSpec:
    module = name.replace("-", "_")
    return WheelSpec(name, version, files=files or {f"{module}/__init__.py": b""})


@pytest.fixture
def local_index(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment a pasted command runs in: uv pointed at wheels on 127.0.0.1 only."""
    wheels = build_wheels(
        [
            _wheel(CUDNN, TORCH_2_14_WHEELS[CUDNN], CUDNN_FILES),
            _wheel(NCCL, TORCH_2_14_WHEELS[NCCL]),
        ],
        tmp_path / "wheels",
    )
    with serve_index(wheels) as index:
        env = _uv_env(tmp_path)
        env["UV_INDEX_URL"] = index.url
        yield env


def _root_remedy(run: DoctorRun, finding_id: str) -> str:
    """The first command of the root cause, exactly as the report prints it."""
    finding = run.finding(finding_id)
    assert finding["root"] is None, f"{finding_id} is not a root cause here"
    commands = [r["text"] for r in finding["remedies"] if r["kind"] == "shell"]
    assert commands, f"{finding_id} has no command to run"
    return str(commands[0])


def _error_roots(run: DoctorRun) -> list[str]:
    return [f["id"] for f in run.json["findings"] if f["root"] is None and f["severity"] == "error"]


def _json(env: FakeEnv, workdir: Path) -> DoctorRun:
    # Unredacted, as the terminal prints it (JSON redacts the home directory by default).
    return run_doctor("--python", str(env.root), "--format", "json", "--no-redact", cwd=workdir)


@pytest.mark.uv
@pytest.mark.skipif(UV is None, reason="uv is not installed")
@pytest.mark.parametrize(
    ("fault", "root"),
    [
        ("missing wheel", "missing-cuda-wheel"),
        ("deleted file", "cuda-wheel-files-missing"),
        ("wrong version", "cuda-wheel-version-mismatch"),
    ],
)
def test_the_printed_command_fixes_a_uv_managed_venv(
    fault: str,
    root: str,
    make_env: Callable[..., FakeEnv],
    workdir: Path,
    local_index: dict[str, str],
) -> None:
    env = make_env()
    if fault == "missing wheel":
        env.install_healthy_cu130(skip=[CUDNN])
    elif fault == "deleted file":
        env.install_healthy_cu130(skip=[CUDNN])
        env.install(CUDNN, TORCH_2_14_WHEELS[CUDNN], files=dict(CUDNN_FILES))
        (env.site_packages / "nvidia/cudnn/lib/libcudnn_adv.so.9").unlink()
    else:
        env.install_healthy_cu130(skip=[NCCL])
        env.install(NCCL, "2.29.7")
    broken = _json(env, workdir)
    assert broken.returncode == 1 and _error_roots(broken) == [root]
    command = _root_remedy(broken, root)
    assert command.startswith(f"uv pip install --python {env.python} ")

    paste_as_printed(command, local_index, workdir)

    healed = _json(env, workdir)
    assert _error_roots(healed) == [], healed.json["findings"]
    assert healed.returncode == 0


@pytest.mark.slow
def test_the_printed_pip_command_brings_back_the_real_cudnn(
    real_torch_venv: FakeEnv, workdir: Path
) -> None:
    pin = f"{CUDNN}=={TORCH_2_14_WHEELS[CUDNN]}"
    subprocess.run(
        [str(real_torch_venv.python), "-m", "pip", "uninstall", "-q", "-y", CUDNN], check=True
    )
    try:
        broken = _json(real_torch_venv, workdir)
        assert _error_roots(broken) == ["missing-cuda-wheel"]
        command = _root_remedy(broken, "missing-cuda-wheel")
        assert command == f"{real_torch_venv.python} -m pip install {pin}"
        # pip takes the wheel from this machine's disk, through its own configuration.
        import os

        paste_as_printed(command, dict(os.environ), workdir)
    finally:
        subprocess.run([str(real_torch_venv.python), "-m", "pip", "install", "-q", pin], check=True)
    healed = _json(real_torch_venv, workdir)
    assert _error_roots(healed) == [] and healed.returncode == 0


@pytest.mark.uv
@pytest.mark.skipif(UV is None, reason="uv is not installed")
def test_removing_a_leftover_cudnn_of_another_major_puts_back_the_files_torch_needs(
    make_env: Callable[..., FakeEnv], workdir: Path, local_index: dict[str, str]
) -> None:
    """nvidia-cudnn-cu12 left beside torch's nvidia-cudnn-cu13: both install
    nvidia/cudnn/lib/libcudnn*.so.9. The printed uninstall alone deleted the files the
    CUDA 13 wheel needs (the next run: cuda-wheel-files-missing); the block now puts them
    back in its second line, and the next run is clean."""
    env = make_env()
    env.install_healthy_cu130(skip=[CUDNN])
    env.install(CUDNN, TORCH_2_14_WHEELS[CUDNN], files=dict(CUDNN_FILES))
    env.install("nvidia-cudnn-cu12", "9.10.2.21", files=dict(CUDNN_FILES))  # over the same files
    broken = _json(env, workdir)
    mixed = broken.finding("mixed-cuda-majors")
    assert any("install the same files" in line for line in mixed["evidence"])
    command = _root_remedy(broken, "mixed-cuda-majors")
    assert command == (
        f"uv pip uninstall --python {env.python} nvidia-cudnn-cu12\n"
        f"uv pip install --python {env.python} --reinstall --no-deps "
        f"{CUDNN}=={TORCH_2_14_WHEELS[CUDNN]}"
    )

    paste_as_printed(command, local_index, workdir)

    healed = _json(env, workdir)
    assert _error_roots(healed) == []
    assert not {"mixed-cuda-majors", "cuda-wheel-files-missing"} & set(healed.finding_ids())
