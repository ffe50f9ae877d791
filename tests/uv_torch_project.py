"""A uv project whose torch comes from one of two explicit indexes on 127.0.0.1 (a CPU
build, and the CUDA build whose nvidia wheels are on the default index), chosen by the
given `[project.optional-dependencies]` / `[dependency-groups]` / `[tool.uv]` text.
Used by the drift and uv-configuration tests with the real uv.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.factory import TORCH_2_6_CU126_NVIDIA, DoctorRun, run_doctor
from tests.index_server import serve_index
from tests.test_uv_lock_metadata import UV, _uv_env
from tests.wheelhouse import CPYTHON_TAG, WheelSpec, build_wheels, founding_case_wheels

__all__ = ["PYPROJECT", "Project", "torch_projects"]


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

    def uv(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert UV is not None
        done = subprocess.run(
            [UV, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert not check or done.returncode == 0, f"uv {' '.join(args)}:\n{done.stderr}"
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


@contextmanager
def torch_projects(tmp_path: Path) -> Iterator[Callable[..., Project]]:
    """make(choice, lock=True, torch_machines=...): the project in tmp_path/drift, its
    indexes served until the block ends; the CUDA index has torch wheels for the given
    machines (x86_64 and aarch64 by default)."""
    with ExitStack() as stack:

        def make(
            choice: str, lock: bool = True, torch_machines: tuple[str, ...] = ("x86_64", "aarch64")
        ) -> Project:
            wheels = founding_case_wheels(aarch64_declares_nvidia=True)
            torch_cuda = [w for w in wheels if w.name == "torch" and w.tag.endswith(torch_machines)]
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
                    python=python, choice=choice, cpu=cpu.url, cuda=cuda.url, plain=rest.url
                )
            )
            made = Project(root, _uv_env(tmp_path))
            if lock:
                made.uv("lock")
            return made

        yield make
