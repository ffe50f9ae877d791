from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factory import FakeEnv


@pytest.fixture
def make_env(tmp_path: Path) -> Callable[..., FakeEnv]:
    """Create real venvs under tmp_path: make_env("name") -> FakeEnv."""

    def make(name: str = "venv") -> FakeEnv:
        return FakeEnv.create(tmp_path / name)

    return make


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory with no pyproject.toml above it."""
    path = tmp_path / "work"
    path.mkdir()
    return path


REAL_TORCH_VERSION = "2.14.1"


@pytest.fixture(scope="session")
def real_torch_venv() -> FakeEnv:
    """A venv with the real CUDA build of torch 2.14.1 (CUDA 13), installed by pip.

    pip takes torch and its nvidia wheels from this machine's disk (no download). The
    venv is kept in a cache directory and reused by later runs; tests that change it
    must put it back as they found it.
    """
    import fcntl
    import os
    import subprocess
    import sys

    cache = Path(
        os.environ.get("TORCH_DOCTOR_TEST_CACHE", Path.home() / ".cache" / "torch-doctor-tests")
    )
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"torch-{REAL_TORCH_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"
    venv = cache / tag
    done = cache / f"{tag}.done"
    with open(cache / f"{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes build it once
        if not done.exists():
            import shutil

            shutil.rmtree(venv, ignore_errors=True)
            # The stdlib venv module, from the base interpreter: a venv with pip in it.
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"torch=={REAL_TORCH_VERSION}",
                ],
                check=True,
            )
            done.write_text("ok\n")
    return FakeEnv(venv)


# --- The NVIDIA driver stand-ins (tests/driver_stub.py, tests/c/) -------------------

from tests.driver_stub import Driver, DriverStubs, compile_stubs  # noqa: E402


@pytest.fixture(scope="session")
def driver_stubs(tmp_path_factory: pytest.TempPathFactory) -> DriverStubs:
    """libnvidia-ml.so.1 and libcuda.so.1 compiled from tests/c, once per session.

    ``driver_stubs.env(Driver(...))`` is the environment for ``run_doctor(env=...)``:
    e.g. ``driver_stubs.env(Driver())`` is a healthy H100 on a 580 driver (CUDA 13.0).
    """
    root = tmp_path_factory.mktemp("driver-stubs")
    return DriverStubs(compile_stubs(root / "lib"), root / "scenarios")


@pytest.fixture
def healthy_driver_env(driver_stubs: DriverStubs) -> dict[str, str]:
    """A healthy machine for scenario tests that expect no findings: H100, driver 580."""
    return driver_stubs.env(Driver())
