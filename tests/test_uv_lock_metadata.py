"""The founding case (uv#11945), end to end, with the real uv against a local index.

How the real uv reproduces the bug (uv 0.13.9, verified by the index's request log):
in universal resolution (`uv lock`) uv has no platform tags to rank wheels by, so every
wheel of torch 2.6.0+cu126 is equally "compatible" and uv reads the core metadata of
just one of them: the first of the version's files in uv's own order, which is by file
name, not the order the index page lists them in (renaming the x86_64 wheel to
`linux_x86_64`, which sorts first, makes uv read that one instead). Here
`...-manylinux_2_28_aarch64.whl` sorts before `...-manylinux_2_28_x86_64.whl`, so uv
reads the aarch64 wheel's METADATA, which declares no nvidia wheels, and records torch
without them for every platform. `uv sync` on x86_64 then installs the x86_64 wheel,
whose own METADATA does declare them, and none of them: exactly uv#11945. No
`environments` setting is needed; each wheel's metadata is served byte for byte as in
the wheel, as on the real index.

torch-doctor runs from this repository's venv (`python -m doctor`, cwd = the project)
and finds the project's .venv itself. Installing torch-doctor into the project venv
for `uv run torch-doctor` would need its own dependencies and a build backend from
PyPI, and these tests never touch the network: uv only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import tomlkit
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.factory import REPO, TORCH_2_6_CU126_NVIDIA, DoctorRun, run_doctor
from tests.index_server import SimpleIndex, serve_index
from tests.wheelhouse import CPYTHON_TAG, WheelSpec, build_wheels, founding_case_wheels

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]


def _uv_executable() -> str | None:
    local = REPO / ".venv" / "bin" / "uv"
    return str(local) if local.exists() else shutil.which("uv")


UV = _uv_executable()
# What torch 2.6.0+cu126 declares for Linux x86_64 and the lock loses (uv#11945).
CUDA_WHEELS = sorted({*TORCH_2_6_CU126_NVIDIA, "triton"})

pytestmark = [
    pytest.mark.uv,
    pytest.mark.timeout(180),
    pytest.mark.skipif(UV is None, reason="uv is not installed"),
    pytest.mark.skipif(
        sys.platform != "linux" or platform.machine() != "x86_64",
        reason="torch 2.6.0+cu126 declares its nvidia wheels for Linux x86_64 only",
    ),
]


@dataclass
class UvProject:
    root: Path
    index: SimpleIndex
    env: dict[str, str]

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    def uv(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert UV is not None
        proc = subprocess.run(
            [UV, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"uv {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    def locked(self, name: str) -> dict[str, Any]:
        lock = tomllib.loads((self.root / "uv.lock").read_text(encoding="utf-8"))
        entries = [p for p in lock["package"] if p["name"] == name]
        assert len(entries) == 1, f"uv.lock has {len(entries)} entries for {name}"
        return dict(entries[0])

    def locked_dependencies(self, name: str) -> set[str]:
        return {d["name"] for d in self.locked(name).get("dependencies", [])}

    @property
    def site_packages(self) -> Path:
        return next((self.root / ".venv" / "lib").glob("python3*/site-packages"))

    def installed(self) -> set[str]:
        return {
            canonicalize_name(d.name[: -len(".dist-info")].rsplit("-", 1)[0])
            for d in self.site_packages.glob("*.dist-info")
        }

    def doctor(self) -> DoctorRun:
        return run_doctor("--format", "json", cwd=self.root)


_DROPPED = ("VIRTUAL_ENV", "CONDA_PREFIX", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _uv_env(tmp_path: Path) -> dict[str, str]:
    """uv isolated from this machine's configuration, caches and indexes."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "PIP_")) and k.upper() not in _DROPPED
    }
    env.update(
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
        UV_PYTHON=sys.executable,
        UV_NO_MANAGED_PYTHON="1",
        UV_PYTHON_DOWNLOADS="never",
        # No user uv.toml adding indexes (UV_NO_CONFIG would ignore [tool.uv] too).
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        # Anything but the local index goes to a dead proxy and fails at once.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        ALL_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1",
        UV_LINK_MODE="copy",
        UV_NO_PROGRESS="1",
        UV_HTTP_RETRIES="0",
    )
    return env


PYPROJECT = """\
[project]
name = "founding-case"
version = "0.1.0"
requires-python = "=={python}.*"
dependencies = ["torch==2.6.0+cu126"]

# The local index replaces PyPI: nothing is resolved from anywhere else.
[[tool.uv.index]]
name = "local"
url = "{index}"
default = true
"""


@pytest.fixture
def uv_project(tmp_path: Path) -> Iterator[Callable[[Sequence[WheelSpec]], UvProject]]:
    """A uv project whose only index serves the given wheels on 127.0.0.1."""
    with ExitStack() as stack:

        def make(wheels: Sequence[WheelSpec]) -> UvProject:
            paths = build_wheels(wheels, tmp_path / "wheels")
            index = stack.enter_context(serve_index(paths))
            root = tmp_path / "project"
            root.mkdir()
            python = f"{sys.version_info[0]}.{sys.version_info[1]}"
            (root / "pyproject.toml").write_text(
                PYPROJECT.format(python=python, index=index.url), encoding="utf-8"
            )
            return UvProject(root, index, _uv_env(tmp_path))

        yield make


def package_findings(run: DoctorRun) -> list[str]:
    """Findings about wheels and the lock (the driver's depend on this machine's GPU)."""
    families = {c["id"]: c["family"] for c in run.json["checks"]}
    return [f for f in run.finding_ids() if families.get(f) in ("wheels", "lock")]


def _names(requirements: Sequence[str]) -> list[str]:
    return sorted(canonicalize_name(Requirement(r).name) for r in requirements)


def test_uv_locks_torch_without_its_nvidia_wheels_and_the_doctor_block_fixes_the_lock(
    uv_project: Callable[[Sequence[WheelSpec]], UvProject],
) -> None:
    project = uv_project(founding_case_wheels())

    # 1. The real uv reproduces uv#11945.
    project.uv("lock")
    read = [p for p in project.index.requests if p.startswith("/files/torch-")]
    aarch64 = f"torch-2.6.0+cu126-{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_aarch64.whl"
    assert read == [f"/files/{aarch64}.metadata"], (
        "uv no longer reads only the aarch64 wheel's metadata in universal resolution; "
        f"this setup no longer reproduces uv#11945 (it read {read})"
    )
    assert project.locked_dependencies("torch").isdisjoint(CUDA_WHEELS)
    project.uv("sync")
    assert project.installed().isdisjoint(CUDA_WHEELS)
    # uv installed the x86_64 wheel, whose own METADATA declares what the lock lacks.
    [torch_info] = project.site_packages.glob("torch-*.dist-info")
    assert "manylinux_2_28_x86_64" in (torch_info / "WHEEL").read_text()
    assert "Requires-Dist: nvidia-cudnn-cu12==" in (torch_info / "METADATA").read_text()

    # 2. The doctor names every lost requirement and the missing wheels.
    run = project.doctor()
    assert run.returncode == 1, run.stderr
    lock_finding = run.finding("lock-missing-dependencies")
    assert _names(lock_finding["data"]["missing"]) == CUDA_WHEELS
    for name in CUDA_WHEELS:
        assert any(line.startswith(f"{name}==") for line in lock_finding["evidence"]), name
    wheel_finding = run.finding("missing-cuda-wheel")
    assert sorted(m["name"] for m in wheel_finding["data"]["missing"]) == CUDA_WHEELS
    # One cause: the lock. The missing wheels hang under it, with no remedy of their own
    # (installing them would be undone by the next `uv sync`).
    assert lock_finding["root"] is None and wheel_finding["root"] == lock_finding["id"]
    assert wheel_finding["remedies"] == []
    assert run.json["findings"][0]["id"] == "lock-missing-dependencies"

    # 3. Its TOML block, appended as printed, makes the real uv lock them.
    [block] = [r for r in lock_finding["remedies"] if r["kind"] == "toml"]
    assert block["target"] == str(project.pyproject)
    with project.pyproject.open("a", encoding="utf-8") as handle:
        handle.write("\n" + block["text"])
    # Before re-locking, the doctor sees the block is there and asks only for `uv lock`.
    stale = project.doctor().finding("lock-missing-dependencies")
    assert [(r["kind"], r["text"]) for r in stale["remedies"]] == [("shell", "uv lock\nuv sync")]
    # The printed commands, pasted as they are.
    [command] = [r["text"] for r in stale["remedies"]]
    pasted = subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pasted.returncode == 0, pasted.stderr
    # A key uv does not know makes it warn and ignore all of [tool.uv], the index too.
    assert "warning" not in pasted.stderr.lower(), pasted.stderr
    assert project.locked_dependencies("torch") >= set(CUDA_WHEELS)
    assert project.installed() >= set(CUDA_WHEELS)

    # 4. And the doctor is satisfied.
    healed = project.doctor()
    assert healed.returncode == 0, healed.stdout
    assert package_findings(healed) == []


def test_lock_check_is_quiet_when_the_index_metadata_is_consistent(
    uv_project: Callable[[Sequence[WheelSpec]], UvProject],
) -> None:
    project = uv_project(founding_case_wheels(aarch64_declares_nvidia=True))
    project.uv("lock")
    assert project.locked_dependencies("torch") >= set(CUDA_WHEELS)
    project.uv("sync")

    run = project.doctor()
    assert run.returncode == 0, run.stdout
    assert package_findings(run) == []
    [lock_check] = [c for c in run.json["checks"] if c["id"] == "lock-missing-dependencies"]
    assert lock_check["status"] == "passed", lock_check


def test_an_incomplete_entry_for_the_same_version_must_be_replaced_not_appended_to(
    uv_project: Callable[[Sequence[WheelSpec]], UvProject],
) -> None:
    # An entry pasted by hand from the wrong wheel: the aarch64 one, without nvidia pins.
    wheels = founding_case_wheels()
    [aarch64] = [w for w in wheels if w.name == "torch" and w.tag.endswith("aarch64")]
    project = uv_project(wheels)
    pasted = {
        "name": "torch",
        "version": aarch64.version,
        "requires-dist": list(aarch64.requires_dist),
    }
    with project.pyproject.open("a", encoding="utf-8") as handle:
        handle.write("\n" + tomlkit.dumps({"tool": {"uv": {"dependency-metadata": [pasted]}}}))
    project.uv("lock")
    project.uv("sync")

    finding = project.doctor().finding("lock-missing-dependencies")
    assert _names(finding["data"]["missing"]) == CUDA_WHEELS
    [block] = [r for r in finding["remedies"] if r["kind"] == "toml"]
    assert block["summary"].startswith("replace the [[tool.uv.dependency-metadata]] entry")
    original = project.pyproject.read_text(encoding="utf-8")

    # Why replace: uv uses the first entry for a version and ignores the appended one.
    project.pyproject.write_text(original + "\n" + block["text"], encoding="utf-8")
    project.uv("lock")
    assert project.locked_dependencies("torch").isdisjoint(CUDA_WHEELS)

    # Replacing it, as the remedy says, works.
    document = tomlkit.parse(original)
    entries = document["tool"]["uv"]["dependency-metadata"]
    entries.clear()
    entries.extend(tomlkit.parse(block["text"])["tool"]["uv"]["dependency-metadata"])
    project.pyproject.write_text(tomlkit.dumps(document), encoding="utf-8")
    project.uv("lock")
    assert project.locked_dependencies("torch") >= set(CUDA_WHEELS)
    project.uv("sync")
    healed = project.doctor()
    assert healed.returncode == 0, healed.stdout
    assert package_findings(healed) == []
