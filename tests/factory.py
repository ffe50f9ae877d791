"""A fixture factory: real venvs holding hand-made distributions.

Each distribution gets a real ``.dist-info`` (METADATA, RECORD, INSTALLER, WHEEL) and
real files, so scenarios run through the CLI as a subprocess exactly as for a user.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

REPO = Path(__file__).resolve().parents[1]

# torch 2.14.1+cu130 as this machine installs it (CUDA 13 style: cuda-toolkit extras).
TORCH_2_14_REQUIRES = (
    "filelock",
    "typing-extensions>=4.10.0",
    "setuptools>=77.0.3",
    "sympy>=1.13.3",
    "networkx>=2.5.1",
    "jinja2",
    "fsspec>=0.8.5",
    "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]"
    '==13.0.3; platform_system == "Linux"',
    'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
    'nvidia-cudnn-cu13==9.24.0.43; platform_system == "Linux"',
    'nvidia-cusparselt-cu13==0.8.1; platform_system == "Linux"',
    'nvidia-nccl-cu13==2.30.7; platform_system == "Linux"',
    'nvidia-nvshmem-cu13==3.4.5; platform_system == "Linux"',
    'triton~=3.8.0; platform_system == "Linux" and python_version < "3.15"',
    'optree>=0.13.0; extra == "optree"',
    'opt-einsum>=3.3; extra == "opt-einsum"',
    'pyyaml; extra == "pyyaml"',
)
TORCH_2_14_EXTRAS = ("optree", "opt-einsum", "pyyaml")

_LINUX = (
    "(sys_platform == 'linux' and platform_machine == 'aarch64' or sys_platform == 'linux' "
    "and platform_machine == 'x86_64' or sys_platform == 'win32' and platform_machine == 'AMD64')"
)
# cuda-toolkit 13.0.3's extras, as its METADATA states them (a subset of its 40 extras).
CUDA_TOOLKIT_EXTRAS: dict[str, tuple[str, ...]] = {
    "cublas": ("nvidia-cublas==13.1.1.3.*", "nvidia-cuda-nvrtc==13.0.88.*"),
    "cudart": ("nvidia-cuda-runtime==13.0.96.*",),
    "cufft": ("nvidia-cufft==12.0.0.61.*", "nvidia-nvjitlink<14,>=13.0.88"),
    "cufile": ("nvidia-cufile==1.15.1.6.*",),
    "cupti": ("nvidia-cuda-cupti==13.0.85.*",),
    "curand": ("nvidia-curand==10.4.0.35.*",),
    "cusolver": (
        "nvidia-cublas==13.1.1.3.*",
        "nvidia-cusolver==12.0.4.66.*",
        "nvidia-cusparse==12.6.3.3.*",
        "nvidia-nvjitlink<14,>=13.0.88",
    ),
    "cusparse": ("nvidia-cusparse==12.6.3.3.*", "nvidia-nvjitlink<14,>=13.0.88"),
    "nvjitlink": ("nvidia-nvjitlink<14,>=13.0.88",),
    "nvrtc": ("nvidia-cuda-nvrtc==13.0.88.*",),
    "nvtx": ("nvidia-nvtx==13.0.85.*",),
    "npp": ("nvidia-npp==13.0.1.2.*",),
}


def cuda_toolkit_requires() -> list[str]:
    return [
        f"{req}; {_LINUX} and extra == '{extra}'"
        for extra, reqs in CUDA_TOOLKIT_EXTRAS.items()
        for req in reqs
    ]


# The versions installed alongside torch 2.14.1 (what pip picks on this machine).
TORCH_2_14_WHEELS: dict[str, str] = {
    "cuda-toolkit": "13.0.3.0",
    "cuda-bindings": "13.5.0",
    "nvidia-cublas": "13.1.1.3",
    "nvidia-cuda-nvrtc": "13.0.88",
    "nvidia-cuda-runtime": "13.0.96",
    "nvidia-cufft": "12.0.0.61",
    "nvidia-nvjitlink": "13.5.37",
    "nvidia-cufile": "1.15.1.6",
    "nvidia-cuda-cupti": "13.0.85",
    "nvidia-curand": "10.4.0.35",
    "nvidia-cusolver": "12.0.4.66",
    "nvidia-cusparse": "12.6.3.3",
    "nvidia-nvtx": "13.0.85",
    "nvidia-cudnn-cu13": "9.24.0.43",
    "nvidia-cusparselt-cu13": "0.8.1",
    "nvidia-nccl-cu13": "2.30.7",
    "nvidia-nvshmem-cu13": "3.4.5",
    "triton": "3.8.0",
}
PLAIN_DEPENDENCIES = {
    "filelock": "3.16.1",
    "typing-extensions": "4.12.2",
    "setuptools": "80.0.0",
    "sympy": "1.14.0",
    "networkx": "3.4",
    "jinja2": "3.1.6",
    "fsspec": "2025.1.0",
}

# torch 2.6.0+cu126 for Linux x86_64: the founding case (uv#11945).
_X86 = 'platform_system == "Linux" and platform_machine == "x86_64"'
TORCH_2_6_CU126_NVIDIA = {
    "nvidia-cuda-nvrtc-cu12": "12.6.77",
    "nvidia-cuda-runtime-cu12": "12.6.77",
    "nvidia-cuda-cupti-cu12": "12.6.80",
    "nvidia-cudnn-cu12": "9.5.1.17",
    "nvidia-cublas-cu12": "12.6.4.1",
    "nvidia-cufft-cu12": "11.3.0.4",
    "nvidia-curand-cu12": "10.3.7.77",
    "nvidia-cusolver-cu12": "11.7.1.2",
    "nvidia-cusparse-cu12": "12.5.4.2",
    "nvidia-cusparselt-cu12": "0.6.3",
    "nvidia-nccl-cu12": "2.21.5",
    "nvidia-nvtx-cu12": "12.6.77",
    "nvidia-nvjitlink-cu12": "12.6.85",
}
TORCH_2_6_CU126_REQUIRES = (
    "filelock",
    "typing-extensions>=4.10.0",
    "networkx",
    "jinja2",
    "fsspec",
    *(f"{name}=={version}; {_X86}" for name, version in TORCH_2_6_CU126_NVIDIA.items()),
    f"triton==3.2.0; {_X86}",
    'sympy==1.13.1; python_version >= "3.9"',
    'opt-einsum>=3.3; extra == "opt-einsum"',
    'optree>=0.13.0; extra == "optree"',
)

FileContent = Union[bytes, str, Path]


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


@dataclass
class FakeEnv:
    """A real venv (no pip) whose site-packages we fill by hand."""

    root: Path

    @classmethod
    def create(cls, root: Path, python: str = sys.executable) -> FakeEnv:
        subprocess.run(
            [python, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True
        )
        return cls(root)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        found = sorted((self.root / "lib").glob("python3*/site-packages"))
        assert found, f"no site-packages under {self.root}"
        return found[0]

    def install(
        self,
        name: str,
        version: str,
        *,
        requires_dist: Iterable[str] = (),
        provides_extra: Iterable[str] = (),
        requires_python: str | None = None,
        files: Mapping[str, FileContent] | None = None,
        installer: str | None = "uv",
        wheel_tag: str = "py3-none-any",
        record: bool = True,
        metadata_text: str | None = None,
    ) -> Path:
        """Install a distribution: files (paths relative to site-packages) and its dist-info."""
        site = self.site_packages
        dist_name = name.replace("-", "_")
        dist_info = site / f"{dist_name}-{version}.dist-info"
        dist_info.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[str, str, str]] = []
        for relative, content in (files or {}).items():
            path = site / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                data = content.read_bytes()
            elif isinstance(content, str):
                data = content.encode()
            else:
                data = content
            path.write_bytes(data)
            if isinstance(content, Path) and os.access(content, os.X_OK):
                path.chmod(0o755)
            rows.append((relative, _record_hash(data), str(len(data))))
        if metadata_text is None:
            lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
            if requires_python:
                lines.append(f"Requires-Python: {requires_python}")
            lines += [f"Provides-Extra: {e}" for e in provides_extra]
            lines += [f"Requires-Dist: {r}" for r in requires_dist]
            metadata_text = "\n".join(lines) + "\n\n"
        meta_files = {
            "METADATA": metadata_text,
            "WHEEL": f"Wheel-Version: 1.0\nGenerator: torch-doctor-tests\n"
            f"Root-Is-Purelib: false\nTag: {wheel_tag}\n",
        }
        if installer is not None:
            meta_files["INSTALLER"] = installer + "\n"
        for file_name, text in meta_files.items():
            (dist_info / file_name).write_text(text)
            rows.append(
                (f"{dist_info.name}/{file_name}", _record_hash(text.encode()), str(len(text)))
            )
        if record:
            rows.append((f"{dist_info.name}/RECORD", "", ""))
            (dist_info / "RECORD").write_text("".join(f"{a},{b},{c}\n" for a, b, c in rows))
        return dist_info

    def install_torch(
        self,
        version: str = "2.14.1+cu130",
        *,
        cuda: str | None = "13.0",
        requires_dist: Sequence[str] = TORCH_2_14_REQUIRES,
        provides_extra: Sequence[str] = TORCH_2_14_EXTRAS,
        lib_files: Mapping[str, FileContent] | None = None,
        installer: str | None = "uv",
        requires_python: str = ">=3.10",
    ) -> Path:
        """A torch distribution: torch/__init__.py, torch/version.py, torch/lib/*."""
        cuda_literal = repr(cuda)
        version_py = (
            "from typing import Optional\n\n"
            "__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip']\n"
            f"__version__ = {version!r}\n"
            "debug = False\n"
            f"cuda: Optional[str] = {cuda_literal}\n"
            "git_version = '5c4886908584029761b579af026dcfb627c84070'\n"
            "hip: Optional[str] = None\n"
        )
        files: dict[str, FileContent] = {
            "torch/__init__.py": "raise ImportError('torch-doctor must never import torch')\n",
            "torch/version.py": version_py,
        }
        if lib_files is None:
            lib_files = {"libtorch_cuda.so": b"\x7fELF stand-in"} if cuda else {}
        for lib_name, content in lib_files.items():
            files[f"torch/lib/{lib_name}"] = content
        return self.install(
            "torch",
            version,
            requires_dist=requires_dist,
            provides_extra=provides_extra,
            requires_python=requires_python,
            files=files,
            installer=installer,
            wheel_tag="cp311-cp311-manylinux_2_28_x86_64",
        )

    def install_healthy_cu130(self, skip: Iterable[str] = (), installer: str = "uv") -> None:
        """torch 2.14.1+cu130 with every wheel it requires at its pinned version."""
        skipped = set(skip)
        self.install_torch(installer=installer)
        for name, version in {**PLAIN_DEPENDENCIES, **TORCH_2_14_WHEELS}.items():
            if name in skipped:
                continue
            requires: list[str] = cuda_toolkit_requires() if name == "cuda-toolkit" else []
            self.install(
                name,
                version,
                requires_dist=requires,
                provides_extra=tuple(CUDA_TOOLKIT_EXTRAS) if name == "cuda-toolkit" else (),
                files={f"{name.replace('-', '_')}/__init__.py": ""},
                installer=installer,
            )

    def uninstall(self, name: str) -> None:
        """Remove a distribution's files and metadata, as pip uninstall would."""
        import csv
        import shutil

        site = self.site_packages
        prefix = name.replace("-", "_").lower() + "-"
        for dist_info in site.glob("*.dist-info"):
            if dist_info.name.lower().startswith(prefix):
                with open(dist_info / "RECORD", newline="") as handle:
                    for row in csv.reader(handle):
                        target = site / row[0]
                        if target.is_file():
                            target.unlink()
                shutil.rmtree(dist_info, ignore_errors=True)


@dataclass
class DoctorRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data

    def finding_ids(self) -> list[str]:
        return [f["id"] for f in self.json["findings"]]

    def root_ids(self) -> list[str]:
        """The root causes: what the verdict counts and what carries remedies."""
        return [f["id"] for f in self.json["findings"] if f["root"] is None]

    def finding(self, finding_id: str) -> dict[str, Any]:
        for finding in self.json["findings"]:
            if finding["id"] == finding_id:
                return dict(finding)
        raise AssertionError(f"no {finding_id} finding in {self.finding_ids()}")


def doctor_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the CLI under test (no venv of ours leaking in)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "LD_LIBRARY_PATH", "LD_PRELOAD")
    }
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "100"
    env.update(extra or {})
    return env


def paste_as_printed(command: str, env: Mapping[str, str] | None, cwd: Path) -> None:
    """Run a printed command as a user pastes it: one bash, the lines as printed, stopping
    at the first that fails."""
    done = subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{command!r} failed:\n{done.stderr}"


def run_doctor(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> DoctorRun:
    """Run the torch-doctor CLI as a subprocess, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "doctor", *args],
        cwd=str(cwd) if cwd else None,
        env=doctor_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return DoctorRun(proc.returncode, proc.stdout, proc.stderr)


REAL_TORCH_VERSION = "2.14.1"


def real_torch_venv_path(version: str = REAL_TORCH_VERSION) -> Path:
    """A venv with the real CUDA build of torch, installed by pip, built once and cached.

    pip takes torch and its nvidia wheels from this machine's disk (no download). The
    venv lives in ``$TORCH_DOCTOR_TEST_CACHE`` (default ~/.cache/torch-doctor-tests) and is
    reused by later runs; the tests and bench/ share it. A lock makes parallel callers
    build it once.
    """
    import fcntl
    import shutil

    cache = Path(
        os.environ.get("TORCH_DOCTOR_TEST_CACHE", Path.home() / ".cache" / "torch-doctor-tests")
    )
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"torch-{version}-py{sys.version_info[0]}{sys.version_info[1]}"
    venv = cache / tag
    done = cache / f"{tag}.done"
    with open(cache / f"{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
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
                    f"torch=={version}",
                ],
                check=True,
            )
            done.write_text("ok\n")
    return venv
