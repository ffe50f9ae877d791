from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factory import FakeEnv, real_torch_venv_path


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


@pytest.fixture(scope="session")
def real_torch_venv() -> FakeEnv:
    """A venv with the real CUDA build of torch 2.14.1 (CUDA 13), installed by pip.

    Shared and cached (tests/factory.py `real_torch_venv_path`): tests that change it
    must put it back as they found it.
    """
    return FakeEnv(real_torch_venv_path())


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
