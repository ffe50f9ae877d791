"""`torch-doctor lock`: the founding case caught from uv.lock alone, before anyone syncs.

Real parts only: wheels built by tests/wheelhouse.py, locked by the real uv against
indexes on 127.0.0.1 of both kinds: tests/index_server.py (PEP 658 metadata files
with their hashes) and the real nginx serving a static PEP 503 tree (no metadata
files; torch-doctor reads METADATA through HTTP range requests, which nginx answers).
No test creates a venv: the command needs none.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.factory import TORCH_2_6_CU126_NVIDIA, DoctorRun, run_doctor
from tests.index_server import serve_index
from tests.static_index import NGINX, serve_static_index
from tests.test_uv_lock_metadata import PYPROJECT, UV, _uv_env
from tests.wheelhouse import CPYTHON_TAG, WheelSpec, build_wheels, founding_case_wheels

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]

# What torch 2.6.0+cu126's x86_64 wheel declares and uv.lock loses (uv#11945).
LOST = sorted({*TORCH_2_6_CU126_NVIDIA, "triton"})
X86_64 = f"torch-2.6.0+cu126-{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_x86_64.whl"
AARCH64 = f"torch-2.6.0+cu126-{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_aarch64.whl"

pytestmark = [
    pytest.mark.uv,
    pytest.mark.timeout(300),
    pytest.mark.skipif(UV is None, reason="uv is not installed"),
    pytest.mark.skipif(sys.platform != "linux", reason="nginx and the wheels are Linux ones"),
]
# CI installs nginx (.ci/run); elsewhere the range-read tests say why they do not run.
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")


@dataclass
class Project:
    root: Path
    url: str
    env: dict[str, str]
    requests: Callable[[], list[str]]
    cache: Path

    def uv(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert UV is not None
        proc = subprocess.run(
            [UV, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"uv {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    def lock_check(self, *args: str, env: dict[str, str] | None = None) -> DoctorRun:
        return run_doctor(
            "lock",
            "--project",
            str(self.root),
            *args,
            env={**self.env, "TORCH_DOCTOR_CACHE_DIR": str(self.cache), **(env or {})},
        )

    def locked_dependencies(self, name: str) -> set[str]:
        lock = tomllib.loads((self.root / "uv.lock").read_text(encoding="utf-8"))
        [entry] = [p for p in lock["package"] if p["name"] == name]
        return {d["name"] for d in entry.get("dependencies", [])}


def _project(tmp_path: Path, url: str, requests: Callable[[], list[str]]) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    (root / "pyproject.toml").write_text(PYPROJECT.format(python=python, index=url))
    return Project(root, url, _uv_env(tmp_path), requests, tmp_path / "td-cache")


Served = Callable[..., Project]


@pytest.fixture
def pep658(tmp_path: Path) -> Iterator[Served]:
    """A project on tests/index_server.py (PEP 658 metadata files), not yet locked."""
    with ExitStack() as stack:

        def make(consistent: bool = False, credentials: tuple[str, str] | None = None) -> Project:
            wheels = build_wheels(
                founding_case_wheels(aarch64_declares_nvidia=consistent), tmp_path / "wheels"
            )
            index = stack.enter_context(serve_index(wheels, credentials))
            project = _project(tmp_path, index.url, lambda: list(index.requests))
            return project

        yield make


@pytest.fixture
def static(tmp_path: Path) -> Iterator[Served]:
    """A project on a static tree served by nginx (range requests, no metadata files)."""
    with ExitStack() as stack:

        def make(consistent: bool = False) -> Project:
            wheels = build_wheels(
                founding_case_wheels(aarch64_declares_nvidia=consistent), tmp_path / "wheels"
            )
            index = stack.enter_context(serve_static_index(wheels, tmp_path / "static"))
            project = _project(tmp_path, index.url, lambda: index.requests)
            return project

        yield make


def _lacking(run: DoctorRun) -> dict[str, list[str]]:
    """platform -> the package names uv.lock lacks there, from --format json."""
    [finding] = [f for f in run.json["findings"] if f["id"] == "lock-metadata-inconsistent"]
    return {
        d["platform"]: sorted(re.split(r"[ ;=<>~!\[]", m, maxsplit=1)[0] for m in d["missing"])
        for d in finding["data"]["differences"]
    }


def _caught_then_fixed(project: Project, via: str) -> None:
    project.uv("lock")
    assert project.locked_dependencies("torch").isdisjoint(LOST)

    # 1. Caught from the lock alone: the x86_64 wheel's dependencies are missing.
    run = project.lock_check("--format", "json")
    assert run.returncode == 1, run.stdout + run.stderr
    assert _lacking(run) == {"linux x86_64": LOST}
    vias = {w["wheel"]["filename"]: w["via"] for w in run.json["wheels"]}
    assert vias[X86_64] == via and vias[AARCH64] == via

    # 2. The terminal report: network said first, the platform x package table.
    text = project.lock_check()
    assert text.returncode == 1
    first = text.stdout.splitlines()[0]
    assert first.startswith("torch-doctor lock: uses the network"), first
    assert re.search(
        r"linux x86_64 \(py [0-9.]+\) +torch 2\.6\.0\+cu126 +lacks nvidia-cublas-cu12==",
        text.stdout,
    )

    # 3. lock --fix writes the entry (diff, backup); uv lock accepts it; the check is clean.
    fixed = project.lock_check("--fix", "--yes")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # the lock itself is still old
    backups = list((project.root / ".torch-doctor" / "backups").glob("pyproject.toml.*.bak"))
    assert "Wrote " in fixed.stdout and len(backups) == 1, fixed.stdout
    relock = project.uv("lock")
    assert "warning" not in relock.stderr.lower(), relock.stderr
    assert project.locked_dependencies("torch") >= set(LOST)
    healed = project.lock_check()
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "uv.lock records what every checked wheel declares" in healed.stdout
    # torch's wheels came from the cache; triton, now locked, from the index. Once more:
    # every wheel from the cache, no request at all, and the same offline.
    before = len(project.requests())
    assert project.lock_check().returncode == 0
    assert project.lock_check("--offline").returncode == 0
    assert len(project.requests()) == before
    assert not (project.root / ".venv").exists()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="uv must lock on x86_64 like CI")
def test_founding_case_through_pep658_metadata_files_is_caught_and_fixed(pep658: Served) -> None:
    project = pep658()
    _caught_then_fixed(project, "metadata-file")
    torch_requests = [p for p in project.requests() if p.startswith("/files/torch-")]
    # Only uv's read of the aarch64 metadata and ours of both; never a wheel.
    assert set(torch_requests) == {f"/files/{AARCH64}.metadata", f"/files/{X86_64}.metadata"}


@needs_nginx
def test_founding_case_through_range_reads_on_nginx_is_caught_and_fixed(static: Served) -> None:
    project = static()
    _caught_then_fixed(project, "range")
    ours = [line for line in project.requests() if f"/files/{X86_64} " in line]
    assert ours and all(" 206 " in line and "bytes=" in line for line in ours), ours
    assert not any(".metadata" in line for line in project.requests())


def test_a_consistent_lock_is_clean_and_the_second_run_makes_no_request(pep658: Served) -> None:
    project = pep658(consistent=True)
    project.uv("lock")
    offline = project.lock_check("--offline")
    assert offline.returncode == 2, offline.stdout
    assert offline.stdout.splitlines()[0].startswith("torch-doctor lock: offline")
    assert "not in the cache" in offline.stdout
    # What to do about it: the run that fills the cache, as a command of its own line.
    fill = "fill the cache, run once with the network:\n"
    fill += f"  torch-doctor lock --project {project.root}\n"
    assert fill in offline.stdout, offline.stdout

    first = project.lock_check()
    assert first.returncode == 0, first.stdout + first.stderr
    seen = len(project.requests())
    second = project.lock_check()
    assert second.returncode == 0, second.stdout
    assert len(project.requests()) == seen
    assert "[linux x86_64]  cache" in second.stdout
    assert project.lock_check("--offline").returncode == 0


def test_the_finding_wraps_its_prose_at_80_columns(pep658: Served) -> None:
    """The title, the explanation and each remedy's summary wrap at the terminal's width
    (they were cut at 98 columns whatever COLUMNS said); the wheel lines, the table and the
    pyproject.toml block stay whole, to paste."""
    project = pep658()
    project.uv("lock")
    run = project.lock_check(env={"COLUMNS": "80"})
    assert run.returncode == 1
    finding = run.stdout.split("\n\n", 1)[1]
    prose = [
        line
        for line in finding.splitlines()
        if not line.startswith("    ")  # the TOML block and the commands: code
        and " lacks " not in line  # the platform x package table
        and not line.lstrip().startswith(("platform ", "https://"))
    ]
    assert prose and all(len(line) <= 80 for line in prose), "\n".join(prose)
    assert any(line.startswith("  → declare the metadata per platform") for line in prose)
    block = run.stdout.split("[[tool.uv.dependency-metadata]]", 1)[1]
    assert '        "nvidia-cudnn-cu12==9.5.1.17; platform_system == \\"Linux\\" and ' in block


def test_after_the_fix_but_before_uv_lock_the_remedy_is_uv_lock(pep658: Served) -> None:
    """pyproject.toml already declares the metadata (`lock --fix` ran), uv.lock predates it:
    the remedy is to re-lock, not the same block again and `lock --fix`, which would write
    nothing and leave the user where they were."""
    project = pep658()
    project.uv("lock")
    stale = (project.root / "uv.lock").read_text()
    assert project.lock_check("--fix", "--yes").returncode == 1
    (project.root / "uv.lock").write_text(stale)  # as if `uv lock` had not run since
    run = project.lock_check()
    assert run.returncode == 1, run.stdout + run.stderr
    assert "pyproject.toml already declares" in run.stdout, run.stdout
    assert "[[tool.uv.dependency-metadata]]" not in run.stdout
    assert "lock --fix` writes it" not in run.stdout
    assert re.search(r"^    uv lock$", run.stdout, re.M), run.stdout
    again = project.lock_check("--fix", "--yes")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "already declares this metadata; nothing to write" in again.stdout, again.stdout
    assert not again.stderr


# --- Wheels the lock never installs (issue 14) --------------------------------------------------


def test_a_wheel_outside_the_locks_environments_is_not_checked(pep658: Served) -> None:
    """uv.lock's `supported-markers` ([tool.uv] environments) exclude a wheel the lock still
    lists (uv now prunes such wheels when it locks; locks written before, or edited, keep
    them): that wheel is said to be out of scope and never read; the others are checked."""
    project = pep658()
    project.uv("lock")
    every_wheel = (project.root / "uv.lock").read_text()
    [aarch64_line] = [
        line for line in every_wheel.splitlines() if AARCH64.replace("+", "%2B") in line
    ]

    pyproject = project.root / "pyproject.toml"
    x86_64_only = "sys_platform == 'linux' and platform_machine == 'x86_64'"
    pyproject.write_text(pyproject.read_text() + f'\n[tool.uv]\nenvironments = ["{x86_64_only}"]\n')
    project.uv("lock")
    lock = project.root / "uv.lock"
    pruned = lock.read_text()
    assert "supported-markers" in pruned and AARCH64.replace("+", "%2B") not in pruned
    # The wheel back in the lock, as a uv that kept every wheel wrote it.
    [x86_64_line] = [line for line in pruned.splitlines() if X86_64.replace("+", "%2B") in line]
    lock.write_text(pruned.replace(x86_64_line, f"{aarch64_line}\n{x86_64_line}"))

    before = len(project.requests())
    run = project.lock_check()
    assert run.returncode == 1, run.stdout + run.stderr  # x86_64 is checked: the founding case
    [line] = [x for x in run.stdout.splitlines() if x.strip().startswith(AARCH64)]
    assert "not checked: outside the lock's [tool.uv] environments" in line, line
    assert f"/files/{AARCH64}.metadata" not in project.requests()[before:]
    assert _lacking(project.lock_check("--format", "json")) == {"linux x86_64": LOST}


# --- --package and --all: a package other than torch whose wheels differ by platform ------------

ACCEL = "accel"


def _accel_wheels() -> list[WheelSpec]:
    """accel 1.0: its x86_64 wheel needs accel-runtime, its aarch64 wheel does not (as
    torch 2.6.0+cu126's did); accel-runtime itself is a pure wheel."""
    return [
        WheelSpec(
            ACCEL,
            "1.0",
            tag=f"{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_{machine}",
            requires_dist=("accel-runtime==1.0",) if machine == "x86_64" else (),
            files={"accel/__init__.py": b""},
        )
        for machine in ("x86_64", "aarch64")
    ] + [WheelSpec("accel-runtime", "1.0", files={"accel_runtime/__init__.py": b""})]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="uv must lock on x86_64 like CI")
def test_package_and_all_check_another_package_whose_wheels_differ(tmp_path: Path) -> None:
    specs = [*founding_case_wheels(aarch64_declares_nvidia=True), *_accel_wheels()]
    wheels = build_wheels(specs, tmp_path / "wheels")
    with serve_index(wheels) as index:
        project = _project(tmp_path, index.url, lambda: list(index.requests))
        pyproject = project.root / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text().replace(
                '"torch==2.6.0+cu126"]', '"torch==2.6.0+cu126", "accel==1.0"]'
            )
        )
        project.uv("lock")
        assert "accel-runtime" not in project.locked_dependencies(ACCEL)  # uv#11945's shape

        # The torch family alone is consistent: accel's wheels are not even read.
        family = project.lock_check()
        assert family.returncode == 0, family.stdout + family.stderr
        assert "accel-1.0" not in family.stdout

        for args in (("--package", ACCEL), ("--all",)):
            run = project.lock_check("--format", "json", *args)
            assert run.returncode == 1, (args, run.stdout, run.stderr)
            [finding] = run.json["findings"]
            assert [
                (d["package"], d["platform"], d["missing"]) for d in finding["data"]["differences"]
            ] == [(ACCEL, "linux x86_64", ["accel-runtime==1.0"])], args
            checked = {w["wheel"]["filename"] for w in run.json["wheels"]}
            assert {f"accel-1.0-{CPYTHON_TAG}-{CPYTHON_TAG}-manylinux_2_28_x86_64.whl"} <= checked
        # --all adds only packages with wheels for several platforms to the torch family:
        # not the pure accel-runtime, nor the x86_64-only nvidia wheels.
        names = {w["wheel"]["package"] for w in run.json["wheels"]}
        assert names == {"torch", "triton", ACCEL}, names

        # The remedy is accel's own dependency-metadata entry; uv lock accepts it.
        fixed = project.lock_check("--package", ACCEL, "--fix", "--yes")
        assert fixed.returncode == 1 and "Wrote " in fixed.stdout, fixed.stdout + fixed.stderr
        project.uv("lock")
        assert "accel-runtime" in project.locked_dependencies(ACCEL)
        assert project.lock_check("--all").returncode == 0
