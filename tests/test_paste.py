"""Paste-safe output: every remedy the JSON report carries appears in the terminal report
line for line, unbroken, at 80 and 200 columns, to a pipe and to a file; TOML cut out of
the terminal parses, shell passes `bash -n`; the report ends with the first command to run.

Each scenario is one the suite already builds (real venvs, the CLI as a subprocess, the C
stand-ins of the driver, stand-in CUDA libraries compiled here).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from tests.driver_stub import H100, Driver, DriverStubs, Gpu
from tests.elf_fixtures import CudaTorchKit, ElfBuilder, compiler, cudnn
from tests.factory import PLAIN_DEPENDENCIES, DoctorRun, FakeEnv, run_doctor
from tests.test_scenarios_wheels import PYPROJECT, _uv_lock

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CODE_KINDS = ("toml", "shell", "env")
# A library's status, whole, at the end of its row (CudaLibraryFacts.status).
STATUS = re.compile(
    r"  (loaded|load failed|not found|not loaded|not probed|timed out|"
    r"crashed \(\w+\)|resolves \([\w ]+\))$"
)


@dataclass
class Scenario:
    """How to run the doctor on a broken environment: its arguments, environment, cwd."""

    args: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    @cached_property
    def reference(self) -> DoctorRun:
        """The JSON report: the remedies as the doctor means them."""
        return self.run("--format", "json")

    def run(self, *extra: str, columns: int | None = None) -> DoctorRun:
        if columns is None:
            # A pipe with no COLUMNS: the width rich assumes when it cannot ask (80).
            return _run_without_columns([*self.args, *extra], self.cwd, self.env)
        return run_doctor(
            *self.args, *extra, cwd=self.cwd, env={**self.env, "COLUMNS": str(columns)}
        )


def _run_without_columns(args: list[str], cwd: Path, env: dict[str, str]) -> DoctorRun:
    from tests.factory import doctor_env

    full = doctor_env(env)
    full.pop("COLUMNS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "doctor", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return DoctorRun(proc.returncode, proc.stdout, proc.stderr)


def _missing_wheel(make_env: Callable[..., FakeEnv], workdir: Path, **_: Any) -> Scenario:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    return Scenario(["--python", str(env.root)], workdir)


def _deleted_file(make_env: Callable[..., FakeEnv], workdir: Path, **_: Any) -> Scenario:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    libs = {f"nvidia/cudnn/lib/libcudnn{p}.so.9": b"\x7fELF stand-in" for p in ("", "_cnn")}
    env.install("nvidia-cudnn-cu13", "9.24.0.43", files=libs)
    (env.site_packages / "nvidia" / "cudnn" / "lib" / "libcudnn_cnn.so.9").unlink()
    return Scenario(["--python", str(env.root)], workdir)


def _wrong_version(make_env: Callable[..., FakeEnv], workdir: Path, **_: Any) -> Scenario:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-nccl-cu13"])
    env.install("nvidia-nccl-cu13", "2.29.7", installer="pip")
    return Scenario(["--python", str(env.root)], workdir)


def _lock_lacks_dependencies(tmp_path: Path, **_: Any) -> Scenario:
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "uv.lock").write_text(_uv_lock(sorted(PLAIN_DEPENDENCIES)))
    FakeEnv.create(project / ".venv").install_healthy_cu130()
    # No --python: found from the working directory, as `uv run torch-doctor` would.
    return Scenario([], project)


def _cpu_torch_with_a_gpu(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs, **_: Any
) -> Scenario:
    env = make_env()
    env.install_torch("2.14.1+cpu", cuda=None, requires_dist=())
    return Scenario(["--python", str(env.root)], workdir, driver_stubs.env(Driver()))


def _old_driver(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs, **_: Any
) -> Scenario:
    env = make_env()
    env.install_healthy_cu130()
    driver = Driver(version="535.104.05", cuda=12020)
    return Scenario(["--python", str(env.root)], workdir, driver_stubs.env(driver))


def _shadowing_preload(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path, **_: Any
) -> Scenario:
    if compiler() is None:
        pytest.skip("needs a C compiler")
    builder = ElfBuilder(tmp_path / "elf-stand-ins")
    env = make_env()
    CudaTorchKit(builder).install(env, CudaTorchKit(builder).healthy_wheels())
    old = cudnn(builder, 90000)
    return Scenario(["--python", str(env.root)], workdir, {"LD_PRELOAD": str(old)})


def _fabric_not_up(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs, **_: Any
) -> Scenario:
    """Stack: an HGX node whose NVSwitch fabric is not up (cuInit 802)."""
    env = make_env()
    env.install_healthy_cu130()
    hgx = tuple(Gpu("NVIDIA H100 80GB HBM3", "9.0", fabric="1") for _ in range(2))
    driver = Driver(gpus=hgx, cu_init_error=802, fabric_v=False)
    return Scenario(["--python", str(env.root)], workdir, driver_stubs.env(driver))


def _extension_for_another_torch(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path, **_: Any
) -> Scenario:
    """Extensions: a compiled extension pinned to torch 2.13.0 that needs a symbol the
    installed torch (stand-in libraries compiled here) does not export."""
    from tests.extension_objects import TORCH_DEFINES, USES_REMOVED, compile_shared

    if compiler() is None:
        pytest.skip("needs a C compiler")
    lib = tmp_path / "torch-lib"
    compile_shared(TORCH_DEFINES, lib / "libc10.so", soname="libc10.so")
    compile_shared("", lib / "libtorch_cpu.so", soname="libtorch_cpu.so")
    extension = compile_shared(
        USES_REMOVED, tmp_path / "objects" / "_C.so", link_dir=lib, libraries=("c10", "torch_cpu")
    )
    env = make_env()
    env.install_healthy_cu130()
    env.install_torch(lib_files={n: lib / n for n in ("libc10.so", "libtorch_cpu.so")})
    env.install(
        "demo-ext",
        "1.0.0",
        requires_dist=["torch==2.13.0"],
        files={"demo_ext/_C.so": extension},
    )
    return Scenario(["--python", str(env.root), "--no-load"], workdir)


def _local_rank_past_its_gpu(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs, **_: Any
) -> Scenario:
    """Node: a Slurm task whose SLURM_LOCALID points past the one GPU bound to it."""
    env = make_env()
    env.install_healthy_cu130()
    four = driver_stubs.env(Driver(gpus=(H100,) * 4))
    return Scenario(
        ["--python", str(env.root), "--no-load"],
        workdir,
        {**four, "CUDA_VISIBLE_DEVICES": "1", "SLURM_LOCALID": "1"},
    )


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "missing-wheel": _missing_wheel,
    "deleted-file": _deleted_file,
    "wrong-version": _wrong_version,
    "lock-lacks-dependencies": _lock_lacks_dependencies,
    "cpu-torch-with-a-gpu": _cpu_torch_with_a_gpu,
    "old-driver": _old_driver,
    "shadowing-preload": _shadowing_preload,
    "fabric-not-up": _fabric_not_up,
    "extension-for-another-torch": _extension_for_another_torch,
    "local-rank-past-its-gpu": _local_rank_past_its_gpu,
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    driver_stubs: DriverStubs,
) -> Scenario:
    """Each scenario built once for the module's tests (they only read it)."""
    root = tmp_path_factory.mktemp(request.param)
    workdir = root / "work"
    workdir.mkdir()

    def make_env(name: str = "venv") -> FakeEnv:
        return FakeEnv.create(root / name)

    build = SCENARIOS[request.param]
    return build(make_env=make_env, workdir=workdir, tmp_path=root, driver_stubs=driver_stubs)


def code_remedies(run: DoctorRun) -> list[dict[str, Any]]:
    """The code remedies of the root causes (consequences carry none of their own)."""
    return [
        remedy
        for finding in run.json["findings"]
        if finding["root"] is None
        for remedy in finding["remedies"]
        if remedy["kind"] in CODE_KINDS
    ]


def cut_out(output: str, code: str) -> str:
    """``code`` as it stands in ``output``: consecutive whole lines, at one indent, dedented.

    Fails when any line of the code is missing, broken or moved (what a paste would get).
    """
    lines = [line.rstrip() for line in output.splitlines()]
    wanted = code.rstrip("\n").split("\n")
    for start, line in enumerate(lines):
        stripped = line.lstrip(" ")
        if stripped != wanted[0].rstrip() or not wanted[0]:
            continue
        indent = line[: len(line) - len(stripped)]
        block = lines[start : start + len(wanted)]
        if block == [(indent + w).rstrip() for w in wanted]:
            return "\n".join(b[len(indent) :] for b in block)
    raise AssertionError(f"not found whole in the terminal output:\n{code}\n---\n{output}")


def assert_pastes(output: str, remedies: list[dict[str, Any]]) -> None:
    for remedy in remedies:
        pasted = cut_out(output, remedy["text"])
        if remedy["kind"] == "toml":
            tomllib.loads(pasted)
        else:
            bash = shutil.which("bash")
            assert bash is not None
            checked = subprocess.run([bash, "-n"], input=pasted, text=True, capture_output=True)
            assert checked.returncode == 0, (pasted, checked.stderr)


def assert_only_code_and_links_overflow(output: str, width: int, remedies: list[str]) -> None:
    code_lines = {line.strip() for text in remedies for line in text.split("\n")}
    for line in output.splitlines():
        line = line.rstrip()
        if len(line) <= width:
            continue
        body = line.strip()
        assert (
            body in code_lines
            or body.startswith(("https://", "<site> = ", "loaded from ", "resolves to "))
            or body.startswith("torch-doctor fix")
        ), f"a prose or table line is wider than {width} columns: {line!r}"


def test_every_code_remedy_pastes_from_the_terminal_at_any_width(scenario: Scenario) -> None:
    reference = scenario.reference
    assert reference.returncode in (0, 1), reference.stderr
    remedies = code_remedies(reference)
    assert remedies, f"no code remedy in {reference.root_ids()}"
    texts = [r["text"] for r in remedies]
    for columns in (80, 200, None):
        run = scenario.run(columns=columns)
        assert run.returncode == reference.returncode, run.stderr
        assert_pastes(run.stdout, remedies)
        assert_only_code_and_links_overflow(run.stdout, columns or 80, texts)


def test_the_terminal_report_written_to_a_file_pastes(scenario: Scenario, tmp_path: Path) -> None:
    reference = scenario.reference
    report = tmp_path / "report.txt"
    run = scenario.run("--output", str(report), columns=80)
    assert run.returncode == reference.returncode, run.stderr
    assert_pastes(report.read_text(encoding="utf-8"), code_remedies(reference))


def test_the_report_ends_with_the_root_causes_and_the_first_command(scenario: Scenario) -> None:
    reference = scenario.reference
    roots = [f for f in reference.json["findings"] if f["root"] is None]
    output = scenario.run(columns=80).stdout
    tail = output[output.rindex("\nSummary\n") :]
    for root in roots:
        assert re.search(rf"^. {root['id']}: ", tail, re.MULTILINE), (root["id"], tail)
    [first] = [line for line in tail.splitlines() if line.startswith("First, for ")]
    chosen = reference.finding(first[len("First, for ") :].rstrip(":"))
    rank = {"error": 2, "warning": 1, "info": 0}
    assert rank[chosen["severity"]] == max(rank[f["severity"]] for f in roots)
    code = [r for r in chosen["remedies"] if r["kind"] in CODE_KINDS]
    assert code, chosen
    last = [line.strip() for line in tail.splitlines() if line.strip()][-1]
    if code[0]["kind"] == "toml":
        # A pyproject.toml block is applied by `fix`, on the environment this run inspected.
        assert last == " ".join(["torch-doctor", "fix", *scenario.args, "--sync"])
    else:
        assert last == code[0]["text"].rstrip("\n").split("\n")[-1].strip()


def test_library_table_keeps_sonames_and_statuses_whole_at_80_columns(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path
) -> None:
    scenario = _shadowing_preload(make_env=make_env, workdir=workdir, tmp_path=tmp_path)
    rows = scenario.run("--format", "json").json["facts"]["libraries"]["cuda"]
    assert rows
    for columns in (80, 200):
        lines = scenario.run(columns=columns).stdout.splitlines()
        table = lines[lines.index("CUDA libraries") + 1 :]
        for row in rows:
            [line] = [line for line in table if line.split(" ", 1)[0] == row["soname"]]
            assert STATUS.search(line.rstrip()), line
            assert len(line.rstrip()) <= columns
