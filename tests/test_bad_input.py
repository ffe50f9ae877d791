"""Bad input never gives a traceback: a clear message, and the exit code says what happened.

Every test runs the CLI as a subprocess, as a user would, and checks both streams for
"Traceback". Exit codes: 0/1 when the environment could be judged, 2 when the doctor
could not do its work (bad arguments, an interpreter that cannot be probed).

Permissions: the test suite runs as root here, and root reads files whatever their mode,
so `chmod 000` proves nothing under root. The chmod test therefore runs only as a normal
user; the root-proof tests make a file unreadable in a way that binds root too (METADATA
that is a directory, a dangling symlink, a dist-info that is a file).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.factory import DoctorRun, FakeEnv, doctor_env, run_doctor


def assert_no_traceback(run: DoctorRun) -> None:
    assert "Traceback" not in run.stdout, run.stdout
    assert "Traceback" not in run.stderr, run.stderr


def json_run(env: FakeEnv, cwd: Path, *extra: str) -> DoctorRun:
    run = run_doctor("--python", str(env.root), "--format", "json", *extra, cwd=cwd)
    assert_no_traceback(run)
    return run


def terminal_run(env: FakeEnv, cwd: Path) -> DoctorRun:
    run = run_doctor("--python", str(env.root), cwd=cwd)
    assert_no_traceback(run)
    return run


def failures(run: DoctorRun) -> list[str]:
    return [f"{f['probe']}: {f['reason']}" for f in run.json["facts"]["failures"]]


def check_status(run: DoctorRun, check_id: str) -> tuple[str, str | None]:
    for check in run.json["checks"]:
        if check["id"] == check_id:
            return check["status"], check["reason"]
    raise AssertionError(check_id)


@pytest.fixture
def healthy(make_env: Callable[..., FakeEnv]) -> FakeEnv:
    env = make_env()
    env.install_healthy_cu130()
    return env


def dist_info(env: FakeEnv, prefix: str) -> Path:
    [found] = [p for p in env.site_packages.glob("*.dist-info") if p.name.startswith(prefix)]
    return found


# --- corrupt distribution metadata ----------------------------------------------------


def test_binary_garbage_metadata_of_a_wheel_is_reported_not_fatal(
    healthy: FakeEnv, workdir: Path
) -> None:
    (dist_info(healthy, "nvidia_cudnn_cu13-") / "METADATA").write_bytes(
        bytes(range(256)) * 8 + b"\x00\xff\xfe\n\n"
    )
    run = json_run(healthy, workdir)
    assert run.returncode == 0
    assert any("nvidia_cudnn_cu13-9.24.0.43.dist-info" in f for f in failures(run))
    assert any("no Name field" in f for f in failures(run))


def test_torch_metadata_without_name_skips_the_wheel_checks_with_the_reason(
    healthy: FakeEnv, workdir: Path
) -> None:
    metadata = dist_info(healthy, "torch-") / "METADATA"
    lines = metadata.read_text().splitlines()
    metadata.write_text("\n".join(line for line in lines if not line.startswith("Name:")) + "\n")
    run = json_run(healthy, workdir)
    # A damaged torch install is an error of its own (torch-metadata-damaged), and the
    # checks that need its requirements say why they skip.
    assert run.returncode == 1
    errors = [f["id"] for f in run.json["findings"] if f["severity"] == "error"]
    assert errors == ["torch-metadata-damaged"]
    status, reason = check_status(run, "missing-cuda-wheel")
    assert status == "skipped"
    assert reason is not None and "no Name field" in reason
    text = terminal_run(healthy, workdir)
    assert "no Name field" in text.stdout


@pytest.mark.parametrize("breakage", ["directory", "dangling-symlink"])
def test_unreadable_metadata_is_reported_even_for_root(
    healthy: FakeEnv, workdir: Path, breakage: str
) -> None:
    metadata = dist_info(healthy, "nvidia_nccl_cu13-") / "METADATA"
    metadata.unlink()
    if breakage == "directory":
        metadata.mkdir()
    else:
        metadata.symlink_to(metadata.parent / "gone")
    run = json_run(healthy, workdir)
    assert run.returncode in (0, 1)
    assert any("cannot read METADATA" in f for f in failures(run))


def test_dist_info_that_is_a_file_is_reported(healthy: FakeEnv, workdir: Path) -> None:
    (healthy.site_packages / "stray-1.0.dist-info").write_text("not a directory\n")
    run = json_run(healthy, workdir)
    assert run.returncode == 0
    assert any("stray-1.0.dist-info" in f for f in failures(run))


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads files whatever their mode: chmod 000 cannot make them unreadable",
)
def test_dist_info_with_mode_000_is_reported(healthy: FakeEnv, workdir: Path) -> None:
    broken = dist_info(healthy, "nvidia_nccl_cu13-")
    broken.chmod(0)
    try:
        run = json_run(healthy, workdir)
    finally:
        broken.chmod(stat.S_IRWXU)
    assert any("cannot read METADATA" in f for f in failures(run))


def test_record_that_is_not_csv_is_reported(healthy: FakeEnv, workdir: Path) -> None:
    # A field longer than the csv module accepts: csv.Error, not a list of files.
    (dist_info(healthy, "nvidia_cublas-") / "RECORD").write_text('"' + "x" * 200_000 + "\n")
    run = json_run(healthy, workdir)
    assert run.returncode == 0
    assert any("cannot parse RECORD" in f and "nvidia_cublas" in f for f in failures(run))


def test_record_of_binary_garbage_is_reported_not_listed_as_missing_files(
    healthy: FakeEnv, workdir: Path
) -> None:
    (dist_info(healthy, "nvidia_cublas-") / "RECORD").write_bytes(b"\x00\xff\xfe\x80" * 500)
    run = json_run(healthy, workdir)
    assert run.returncode == 0
    assert any("cannot parse RECORD: not UTF-8 text" in f for f in failures(run))
    assert "cuda-wheel-files-missing" not in run.finding_ids()


def test_record_with_nul_bytes_is_reported(healthy: FakeEnv, workdir: Path) -> None:
    (dist_info(healthy, "nvidia_cublas-") / "RECORD").write_bytes(b"a.py,,\n\x00\x00\n")
    run = json_run(healthy, workdir)
    assert any("cannot parse RECORD: it contains NUL bytes" in f for f in failures(run))


# --- torch's version.py ----------------------------------------------------------------


def test_torch_version_py_with_a_syntax_error_is_reported(healthy: FakeEnv, workdir: Path) -> None:
    (healthy.site_packages / "torch" / "version.py").write_text("__version__ = '2.14.1+cu130\n")
    run = json_run(healthy, workdir)
    assert run.returncode == 0
    status, reason = check_status(run, "cpu-only-torch")
    assert status == "skipped"
    assert reason is not None and "version.py" in reason
    assert any("torch/version.py" in f for f in failures(run))
    text = terminal_run(healthy, workdir)
    assert "version.py" in text.stdout


# --- project files ---------------------------------------------------------------------


def test_unparsable_pyproject_and_lock_are_reported(healthy: FakeEnv, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project\nname = 'demo'\n")
    (project / "uv.lock").write_bytes(b"version = \xff\xfe\n")
    run = json_run(healthy, project, "--project", str(project))
    assert run.returncode == 0
    reasons = failures(run)
    assert any("pyproject.toml" in f and "not valid TOML" in f for f in reasons)
    assert any("uv.lock" in f and "not UTF-8" in f for f in reasons)
    status, reason = check_status(run, "lock-missing-dependencies")
    assert status == "skipped" and reason is not None and "uv.lock" in reason


def test_lock_with_an_unexpected_structure_is_reported(healthy: FakeEnv, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "uv.lock").write_text(
        'version = 1\n[[package]]\nname = "torch"\ndependencies = "not a list"\n'
    )
    run = json_run(healthy, project, "--project", str(project))
    assert run.returncode == 0
    assert any("uv.lock: unexpected structure" in f for f in failures(run))
    status, reason = check_status(run, "lock-missing-dependencies")
    assert status == "skipped" and reason is not None and "unexpected structure" in reason


def test_sources_of_the_wrong_shape_crash_no_check(healthy: FakeEnv, tmp_path: Path) -> None:
    # uv would refuse this pyproject.toml; the doctor still reports, check by check.
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        "[project]\nname = 'demo'\ndependencies = ['torch', 5]\n"
        "[[tool.uv.index]]\nname = 'pytorch-cu130'\n"
        "url = 'https://download.pytorch.org/whl/cu130'\nexplicit = true\n"
        "[tool.uv.sources]\ntorch = [{ index = 7, marker = 3 }, 'junk']\n"
        "torchvision = 'weird'\n"
    )
    (project / "uv.lock").write_text(
        'version = 1\n[[package]]\nname = "torch"\nversion = "2.14.1"\n'
        'source = { registry = "https://pypi.org/simple" }\n'
    )
    healthy.install("torchvision", "0.29.1+cpu", requires_dist=("torch==2.14.1",))
    run = json_run(healthy, project, "--project", str(project))
    assert_no_traceback(run)
    crashed = [c["id"] for c in run.json["checks"] if c["status"] == "crashed"]
    assert crashed == []
    assert "torch-index-not-used" in run.finding_ids()
    assert "torch-companion-mismatch" in run.finding_ids()


# --- arguments -------------------------------------------------------------------------


def usage_error(*args: str, cwd: Path) -> str:
    run = run_doctor(*args, cwd=cwd)
    assert_no_traceback(run)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stdout == ""
    assert run.stderr.startswith("torch-doctor: error: ")
    return run.stderr


def test_python_pointing_at_nothing_is_a_usage_error(workdir: Path) -> None:
    message = usage_error("--python", str(workdir / "nope"), cwd=workdir)
    assert "no such interpreter or virtual environment" in message


def test_python_pointing_at_a_plain_directory_is_a_usage_error(workdir: Path) -> None:
    (workdir / "plain").mkdir()
    message = usage_error("--python", str(workdir / "plain"), cwd=workdir)
    assert "not a virtual environment" in message


def test_python_pointing_at_a_non_executable_file_is_a_usage_error(workdir: Path) -> None:
    (workdir / "python").write_text("print('hi')\n")
    message = usage_error("--python", str(workdir / "python"), cwd=workdir)
    assert "not executable" in message


def test_project_pointing_at_nothing_is_a_usage_error(workdir: Path) -> None:
    message = usage_error("--project", str(workdir / "nope"), cwd=workdir)
    assert "no such directory" in message


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_bad_timeout_is_a_usage_error(workdir: Path, value: str) -> None:
    run = run_doctor("--timeout", value, cwd=workdir)
    assert_no_traceback(run)
    assert run.returncode == 2
    assert "timeout" in run.stderr


# --- interpreters that misbehave --------------------------------------------------------


def fake_python(directory: Path, script: str) -> Path:
    path = directory / "python"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def test_hanging_interpreter_times_out_and_the_report_says_so(workdir: Path) -> None:
    python = fake_python(workdir, "sleep 60")
    run = run_doctor("--python", str(python), "--timeout", "1", "--format", "json", cwd=workdir)
    assert_no_traceback(run)
    assert run.returncode == 2
    [reason] = failures(run)
    assert "did not finish within 1 s (--timeout)" in reason
    assert run.json["verdict"] != "ok"
    text = run_doctor("--python", str(python), "--timeout", "1", cwd=workdir)
    assert_no_traceback(text)
    assert text.returncode == 2
    words = " ".join(text.stdout.split())  # the terminal wraps long lines
    assert "did not finish within 1 s (--timeout)" in words
    assert "could not be inspected" in words


def test_crashing_interpreter_is_reported_with_its_signal(workdir: Path) -> None:
    python = fake_python(workdir, "kill -SEGV $$")
    run = run_doctor("--python", str(python), "--format", "json", cwd=workdir)
    assert_no_traceback(run)
    assert run.returncode == 2
    assert "crashed with SIGSEGV" in failures(run)[0]


def test_interpreter_that_prints_garbage_is_reported(workdir: Path) -> None:
    python = fake_python(workdir, "echo 'Python 2.7 says hello'")
    run = run_doctor("--python", str(python), "--format", "json", cwd=workdir)
    assert_no_traceback(run)
    assert run.returncode == 2
    assert "printed no JSON report" in failures(run)[0]


def test_executable_that_is_not_a_program_is_reported(workdir: Path) -> None:
    python = workdir / "python"
    python.write_bytes(b"\x00\x01 not an executable format")
    python.chmod(0o755)
    run = run_doctor("--python", str(python), "--format", "json", cwd=workdir)
    assert_no_traceback(run)
    assert run.returncode == 2
    assert "could not start" in failures(run)[0]


# --- odd environment variables ----------------------------------------------------------


def run_with_environ(
    env: FakeEnv, cwd: Path, extra: Mapping[bytes, bytes], *args: str
) -> DoctorRun:
    environ = {os.fsencode(k): os.fsencode(v) for k, v in doctor_env().items()}
    environ.update(extra)
    proc = subprocess.run(
        [sys.executable, "-m", "doctor", "--python", str(env.root), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        timeout=120,
    )
    run = DoctorRun(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
    assert_no_traceback(run)
    return run


@pytest.mark.parametrize("fmt", ["json", "terminal"])
def test_non_utf8_bytes_in_ld_library_path_are_harmless(
    healthy: FakeEnv, workdir: Path, fmt: str
) -> None:
    odd = {b"LD_LIBRARY_PATH": b"/opt/\xff\xfe/lib:/usr/lib", b"CUDA_HOME": b"/opt/cuda-\xe9"}
    run = run_with_environ(healthy, workdir, odd, "--format", fmt)
    assert run.returncode == 0, run.stderr
    if fmt == "json":
        assert "/opt/" in run.json["facts"]["environment"]["LD_LIBRARY_PATH"]


def test_huge_environment_values_are_harmless(healthy: FakeEnv, workdir: Path) -> None:
    huge = {
        b"LD_LIBRARY_PATH": b":".join([b"/opt/lib"] * 12_000),
        b"PYTHONWARNINGS": b"x" * 100_000,
    }
    run = run_with_environ(healthy, workdir, huge, "--format", "json")
    assert run.returncode == 0, run.stderr
    assert len(run.json["facts"]["environment"]["LD_LIBRARY_PATH"]) > 90_000


def test_venv_whose_base_python_is_gone_is_a_usage_error(workdir: Path) -> None:
    venv = workdir / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/nonexistent/python3.11")
    message = usage_error("--python", str(venv), cwd=workdir)
    assert "broken link to /nonexistent/python3.11" in message
    message = usage_error("--python", str(venv / "bin" / "python"), cwd=workdir)
    assert "the Python this virtual environment was made from is gone" in message
