"""Hostile environments (issue 11): the doctor keeps its bounds, whatever it inspects.

Each test builds the hostile thing as a user's machine would have it (a wrapper interpreter
that leaves a daemon, a FIFO in the venv, an endless writer, a driver that forks or
answers in bytes that are not UTF-8, a signal from `timeout` or `docker stop`, …), runs the
CLI as a subprocess and asserts the bound: the time within `--timeout` plus a margin, the
peak RSS under a cap, no process the test's scenario started left alive, the report there,
the exit code documented. Nothing in the containment code is monkeypatched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.driver_stub import H100, Driver, DriverStubs, Gpu
from tests.factory import FakeEnv, doctor_env

# Seconds a run may take beyond its --timeout (start-up, the report, a loaded machine).
MARGIN = 4.0
# Peak RSS of the doctor and every child it waited for.
RSS_CAP_MB = 400
# Runs the doctor and reports the peak RSS of it and its children (ru_maxrss, KiB).
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "sys.stderr.write('\\nPEAK_RSS_KB=%d\\n' % peak)\n"
    "sys.exit(code)\n"
)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float

    @property
    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.stdout)
        return data

    def failures(self) -> list[str]:
        facts = self.json["facts"]
        assert isinstance(facts, dict)
        return [f"{f['probe']}: {f['reason']}" for f in facts["failures"]]


def run(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    wall: float = 120,
    stdout: int | None = subprocess.PIPE,
) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "doctor", *args],
        cwd=cwd,
        env=doctor_env(env),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        timeout=wall,
    )
    seconds = time.monotonic() - started
    stderr, _, peak = proc.stderr.rpartition("\nPEAK_RSS_KB=")
    assert "Traceback" not in stderr, stderr
    return Run(proc.returncode, proc.stdout or "", stderr, seconds, int(peak.strip()) / 1024)


def gone(pid: int, wait: float = 10.0) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def kill_leftovers(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wrapper_python(directory: Path, body: str) -> Path:
    """An interpreter wrapper (as pyenv, conda or a site's module system install them)."""
    path = directory / "python"
    path.write_text(f'#!/bin/sh\n{body}\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


# --- time ------------------------------------------------------------------------------------


def test_wrapper_that_leaves_a_daemon_holding_stdout_does_not_extend_the_run(
    workdir: Path,
) -> None:
    pids = workdir / "daemon.pids"
    # The daemon leaves the process group (setsid) and keeps the probe's stdout open.
    python = wrapper_python(workdir, f"setsid sleep 40 & echo $! >> {pids}")
    try:
        result = run("--python", str(python), "--timeout", "3", "--format", "json", cwd=workdir)
        assert result.seconds < 3 + MARGIN
        assert result.returncode in (0, 1), result.stderr
        # The probes finished: no "did not finish" for a probe that had.
        assert not [f for f in result.failures() if "did not finish" in f]
        assert read_pids(pids) and all(gone(pid) for pid in read_pids(pids))
    finally:
        kill_leftovers(read_pids(pids))


def test_pth_file_that_starts_a_daemon_is_contained(make_env: Callable[..., FakeEnv]) -> None:
    env = make_env()
    env.install_healthy_cu130()
    pids = env.root / "daemon.pids"
    # A .pth line runs at every start of the venv's interpreter: the inside probe's and
    # the load probe's. Its daemon inherits their stdout.
    (env.site_packages / "evil.pth").write_text(
        "import subprocess; p = subprocess.Popen(['sleep', '40'], start_new_session=True); "
        f"open({str(pids)!r}, 'a').write('%d\\n' % p.pid)\n"
    )
    try:
        result = run("--python", str(env.root), "--timeout", "3", "--format", "json", cwd=env.root)
        assert result.seconds < 3 + MARGIN
        assert result.returncode in (0, 1), result.stderr
        assert read_pids(pids) and all(gone(pid) for pid in read_pids(pids))
    finally:
        kill_leftovers(read_pids(pids))


def test_fifos_where_project_files_and_a_library_should_be_do_not_block(
    make_env: Callable[..., FakeEnv], tmp_path: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    project = tmp_path / "project"
    project.mkdir()
    os.mkfifo(project / "pyproject.toml")
    os.mkfifo(project / "uv.lock")
    cudnn = next(env.site_packages.glob("nvidia_cudnn*.dist-info"))
    for fifo in (
        env.site_packages / "torch" / "lib" / "libtorch_cuda.so",
        env.site_packages / "nvidia" / "cu13" / "lib" / "libcudnn.so.9",
        cudnn / "METADATA",
    ):
        fifo.parent.mkdir(parents=True, exist_ok=True)
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
    result = run(
        "--python", str(env.root), "--project", str(project), "--timeout", "3",
        "--format", "json", cwd=project,
    )  # fmt: skip
    assert result.seconds < 3 + MARGIN
    failures = " ".join(result.failures())
    assert "pyproject.toml: is a FIFO, not a regular file" in failures
    assert "uv.lock: is a FIFO, not a regular file" in failures
    assert "METADATA is not a regular file" in failures


def test_an_interpreter_that_writes_without_end_stays_within_memory(workdir: Path) -> None:
    python = workdir / "python"
    python.write_text("#!/bin/sh\nexec yes 'an endless line of output'\n")
    python.chmod(0o755)
    result = run("--python", str(python), "--timeout", "3", "--format", "json", cwd=workdir)
    assert result.seconds < 3 + MARGIN
    assert result.peak_rss_mb < RSS_CAP_MB
    assert result.returncode == 2
    [reason] = [f for f in result.failures() if f.startswith("interpreter")]
    assert "did not finish within 3 s" in reason and "bytes beyond" in reason


def test_a_20_mb_stderr_line_is_cut_in_every_report(workdir: Path) -> None:
    python = workdir / "python"
    python.write_text(
        "#!/bin/sh\n"
        "head -c 20000000 /dev/zero | tr '\\0' 'x' >&2\n"
        "printf '\\n\\033]0;owned\\007' >&2\n"
        "exit 3\n"
    )
    python.chmod(0o755)
    for fmt, cap in (("json", 64_000), ("markdown", 64_000), ("terminal", 64_000)):
        result = run("--python", str(python), "--format", fmt, cwd=workdir)
        assert result.returncode == 2
        assert len(result.stdout.encode()) < cap, fmt
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
        assert "more bytes" in result.stdout


def test_sigint_sigterm_and_sighup_stop_the_run_and_its_children(workdir: Path) -> None:
    pids = workdir / "pids"
    python = wrapper_python(workdir, f"echo $$ >> {pids}; sleep 60")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        pids.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "doctor", "--python", str(python), "--timeout", "60"],
            cwd=workdir,
            env=doctor_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while len(read_pids(pids)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # the inside probe and the load probe are running
            assert len(read_pids(pids)) >= 2
            sent = time.monotonic()
            proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=10)
            assert time.monotonic() - sent < MARGIN
            assert proc.returncode == 128 + signum
            said = "interrupted" if signum == signal.SIGINT else "stopped by"
            assert f"torch-doctor: {said}" in stderr
            assert signum == signal.SIGINT or signal.Signals(signum).name in stderr
            assert "Traceback" not in stderr
            left = [pid for pid in read_pids(pids) if not gone(pid)]
            assert not left, [Path(f"/proc/{pid}/stat").read_text() for pid in left]
        finally:
            proc.kill()
            proc.wait()
            kill_leftovers(read_pids(pids))


def test_a_library_constructor_that_forks_does_not_hold_the_run(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.elf_fixtures import CudaTorchKit, ElfBuilder, compiler

    if compiler() is None:
        pytest.skip("no C compiler (cc) to build the stand-in libraries")
    kit = CudaTorchKit(ElfBuilder(tmp_path_factory.mktemp("forking-stand-ins")))
    env = make_env()
    kit.install(env, [*kit.healthy_wheels(), kit.curand(constructor="CONSTRUCTOR_FORKS")])
    pids = workdir / "forked.pids"
    try:
        result = run("--python", str(env.root), "--format", "json", "--timeout", "8",
                     cwd=workdir, env={"TORCH_DOCTOR_FORK_PIDFILE": str(pids)})  # fmt: skip
        assert result.seconds < 8 + MARGIN
        assert result.returncode in (0, 1), result.stderr
        assert not [f for f in result.failures() if "did not finish" in f]
        assert read_pids(pids) and all(gone(pid) for pid in read_pids(pids))
    finally:
        kill_leftovers(read_pids(pids))


def test_a_killed_doctor_leaves_no_hanging_load_probe_behind(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.elf_fixtures import CudaTorchKit, ElfBuilder, compiler

    if compiler() is None:
        pytest.skip("no C compiler (cc) to build the stand-in libraries")
    kit = CudaTorchKit(ElfBuilder(tmp_path_factory.mktemp("hanging-stand-ins")))
    env = make_env()
    kit.install(env, [*kit.healthy_wheels(), kit.curand(constructor="CONSTRUCTOR_HANGS")])
    doctor = subprocess.Popen(
        [sys.executable, "-m", "doctor", "--python", str(env.root), "--timeout", "60"],
        cwd=workdir,
        env=doctor_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = f"TORCH_DOCTOR_CONTAINED={doctor.pid}-".encode()

    def children() -> list[int]:
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    environ = Path(f"/proc/{name}/environ").read_bytes()
                except OSError:
                    continue
                if any(v.startswith(marker) for v in environ.split(b"\0")):
                    found.append(int(name))
        return found

    try:
        deadline = time.monotonic() + 30
        while not children() and time.monotonic() < deadline:
            time.sleep(0.1)

        def hanging() -> bool:  # the load probe is in the constructor that hangs
            for pid in children():
                with contextlib.suppress(OSError):
                    if b"libcurand" in Path(f"/proc/{pid}/maps").read_bytes():
                        return True
            return False

        while not hanging() and time.monotonic() < deadline:
            time.sleep(0.1)
        started = children()
        assert started
        doctor.kill()  # SIGKILL: the doctor cannot clean up
        doctor.wait()
        left = [pid for pid in started if not gone(pid)]
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
    finally:
        doctor.kill()
        doctor.wait()
        kill_leftovers(children())


# --- the driver ------------------------------------------------------------------------------


def test_driver_names_that_are_not_utf8_or_hold_escapes_are_reported_clean(
    driver_stubs: DriverStubs, workdir: Path
) -> None:
    gpu = Gpu("NVIDIA H100\x1b]0;owned\x07", "9.0")
    env = driver_stubs.env(Driver(gpus=(gpu,), raw_byte=255))
    result = run("--format", "json", "--no-load", cwd=workdir, env=env)
    machine = result.json["facts"]["machine"]  # type: ignore[index]
    [found] = machine["nvml"]["gpus"]  # type: ignore[index]
    assert found["name"] == "NVIDIA H100]0;owned\ufffd"
    assert machine["nvml"]["driver_version"] == "580.95.05\ufffd"  # type: ignore[index]
    assert not [f for f in result.failures() if f.startswith("nvml")]
    text = run("--no-load", cwd=workdir, env=env)
    assert "\x1b" not in text.stdout and "\x07" not in text.stdout


def test_a_driver_that_forks_in_nvml_init_does_not_hold_the_run(
    driver_stubs: DriverStubs, workdir: Path
) -> None:
    pidfile = workdir / "driver-daemon.pid"
    env = driver_stubs.env(Driver(gpus=(H100,), init_fork=40, fork_pidfile=str(pidfile)))
    try:
        result = run("--format", "json", "--no-load", "--timeout", "3", cwd=workdir, env=env)
        assert result.seconds < 3 + MARGIN
        assert not [f for f in result.failures() if "did not finish" in f]
        assert result.json["facts"]["machine"]["nvml"]["gpus"]  # type: ignore[index]
        assert read_pids(pidfile) and all(gone(pid) for pid in read_pids(pidfile))
    finally:
        kill_leftovers(read_pids(pidfile))


# --- output and arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--python", ""), "--python needs a path"),
        (("--project", ""), "--project needs a path"),
        (("--timeout", "nan"), "above 0"),
        (("--timeout", "inf"), "above 0"),
        (("--timeout", "1e308"), "above 0"),
        (("--timeout", "0"), "above 0"),
    ],
)
def test_bad_arguments_are_usage_errors(args: tuple[str, str], message: str, workdir: Path) -> None:
    result = run(*args, cwd=workdir)
    assert result.returncode == 2
    assert message in result.stderr


def test_stdout_that_cannot_encode_the_glyphs_gets_ascii(workdir: Path) -> None:
    for encoding in ("ascii", "latin-1"):
        result = run("--no-load", cwd=workdir, env={"PYTHONIOENCODING": encoding})
        assert result.returncode in (0, 1), result.stderr
        assert "torch-doctor" in result.stdout and "Checks" in result.stdout
        assert all(ord(c) < 128 for c in result.stdout)
        markdown = run("--no-load", "--format", "markdown", cwd=workdir,
                       env={"PYTHONIOENCODING": encoding})  # fmt: skip
        assert markdown.returncode in (0, 1) and "torch-doctor" in markdown.stdout


@pytest.mark.parametrize("columns", ["0", "-5", "100000", "wide"])
def test_columns_outside_a_sane_range_are_ignored(columns: str, workdir: Path) -> None:
    result = run("--no-load", cwd=workdir, env={"COLUMNS": columns})
    assert result.returncode in (0, 1), result.stderr
    assert "Checks" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 1000
    assert len(result.stdout) < 64_000


def test_closed_or_full_stdout_is_exit_2_with_a_message(workdir: Path) -> None:
    closed = subprocess.run(
        [sys.executable, "-m", "doctor", "--no-load"],
        cwd=workdir,
        env=doctor_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=(),
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert closed.returncode == 2
    assert "standard output is closed" in closed.stderr
    with open("/dev/full", "w") as full:
        result = run("--no-load", cwd=workdir, stdout=full.fileno())
    assert result.returncode == 2
    assert "cannot write the report" in result.stderr


# --- text from the environment ---------------------------------------------------------------


def test_escape_sequences_in_installer_never_reach_the_reports(
    make_env: Callable[..., FakeEnv],
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    torch_info = next(env.site_packages.glob("torch-*.dist-info"))
    (torch_info / "INSTALLER").write_text("pip\x1b]0;owned\x07\x1b[2J\u202e\n")
    for fmt in ("terminal", "markdown", "json"):
        result = run("--python", str(env.root), "--no-load", "--format", fmt, cwd=env.root)
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, fmt
        assert "\u202e" not in result.stdout and "\\u202e" not in result.stdout, fmt
        assert "\\u001b" not in result.stdout, fmt


def test_url_passwords_with_at_signs_do_not_leak(
    make_env: Callable[..., FakeEnv],
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    secret = {"UV_INDEX_URL": "https://user:Pa@ss@host.example/simple"}
    for fmt in ("json", "markdown"):
        result = run(
            "--python", str(env.root), "--no-load", "--format", fmt, cwd=env.root, env=secret
        )
        assert "Pa@ss" not in result.stdout and "ss@host" not in result.stdout, fmt
        assert "<redacted>@host.example/simple" in result.stdout, fmt


def test_home_is_redacted_only_as_a_leading_path(tmp_path: Path) -> None:
    home = tmp_path / "home" / "qz7alice"
    home.mkdir(parents=True)
    # A venv whose path holds the home directory's path in its middle, not at its start.
    elsewhere = Path(f"{tmp_path}/srv{home}/venv")
    env = FakeEnv.create(elsewhere)
    env.install_healthy_cu130()
    result = run("--python", str(env.root), "--no-load", "--format", "markdown",
                 cwd=tmp_path, env={"HOME": str(home)})  # fmt: skip
    assert "srv~" not in result.stdout
    assert f"{tmp_path}/srv{tmp_path}/home/" in result.stdout  # the path, not ~


# --- project files ---------------------------------------------------------------------------


def _project(tmp_path: Path, pyproject: bytes | None = None, lock: bytes | None = None) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    if pyproject is not None:
        (project / "pyproject.toml").write_bytes(pyproject)
    if lock is not None:
        (project / "uv.lock").write_bytes(lock)
    return project


def test_deeply_nested_toml_is_could_not_inspect(tmp_path: Path) -> None:
    deep = b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n"
    project = _project(tmp_path, b'[project]\nname = "p"\n' + deep, b"version = 1\n" + deep)
    result = run("--project", str(project), "--no-load", "--format", "json", cwd=project)
    assert result.returncode in (0, 1, 2)
    failures = " ".join(result.failures())
    assert "pyproject.toml: nested too deeply" in failures
    assert "uv.lock: nested too deeply" in failures


def test_project_files_linked_to_devices_are_refused_at_once(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "pyproject.toml").symlink_to("/dev/zero")
    (project / "uv.lock").symlink_to("/dev/urandom")
    result = run("--project", str(project), "--no-load", "--format", "json", "--timeout", "5",
                 cwd=project)  # fmt: skip
    assert result.seconds < 5 + MARGIN
    assert result.peak_rss_mb < RSS_CAP_MB
    failures = " ".join(result.failures())
    assert "is a character device, not a regular file" in failures


def test_a_huge_project_file_hits_its_cap(tmp_path: Path) -> None:
    project = _project(tmp_path, b"# " + b"x" * (5 * 1024 * 1024) + b"\n")
    result = run("--project", str(project), "--no-load", "--format", "json", cwd=project)
    assert "larger than the 4 MiB a pyproject.toml may be" in " ".join(result.failures())


def test_a_lock_of_an_unknown_version_is_not_judged(tmp_path: Path) -> None:
    project = _project(tmp_path, b'[project]\nname = "p"\nversion = "0"\n', b"version = 9\n")
    result = run("--project", str(project), "--no-load", "--format", "json", cwd=project)
    assert "lock format version 9, which this doctor does not know" in " ".join(result.failures())


def test_a_pyproject_with_a_bom_is_read_as_uv_reads_it(tmp_path: Path) -> None:
    project = _project(tmp_path, b'\xef\xbb\xbf[project]\nname = "p"\nversion = "0"\n')
    result = run("--project", str(project), "--no-load", "--format", "json", cwd=project)
    assert not [f for f in result.failures() if f.startswith("project")]
    assert result.json["facts"]["project"]["name"] == "p"  # type: ignore[index]


def test_a_hundred_thousand_requirements_stay_within_time_and_size(
    make_env: Callable[..., FakeEnv],
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    env.install("sprawl", "1.0", requires_dist=[f"dep{i}>=1" for i in range(100_000)])
    result = run("--python", str(env.root), "--no-load", "--format", "json", "--timeout", "10",
                 cwd=env.root)  # fmt: skip
    assert result.seconds < 10 + MARGIN
    assert len(result.stdout) < 2_000_000
    assert "Requires-Dist entries; 2000 were read" in " ".join(result.failures())
