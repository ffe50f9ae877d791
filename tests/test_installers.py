"""The installers' versions in the facts and the ticket: read from the venv's own files
(pyvenv.cfg written by the real uv, pip's dist-info from the real ensurepip)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import run_doctor


def _installers(venv: Path, workdir: Path) -> dict[str, str | None]:
    run = run_doctor("--python", str(venv), "--format", "json", "--no-load", cwd=workdir)
    installers: dict[str, str | None] = run.json["facts"]["installers"]
    return installers


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")
def test_a_venv_made_by_uv_records_uv_s_version(tmp_path: Path, workdir: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None
    venv = tmp_path / "uv-venv"
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    version = subprocess.run(
        [uv, "--version"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    assert _installers(venv, workdir) == {"venv_uv_version": version, "pip_version": None}


def test_a_stdlib_venv_with_pip_records_pip_s_version(tmp_path: Path, workdir: Path) -> None:
    venv = tmp_path / "pip-venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--version"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    installers = _installers(venv, workdir)
    assert installers == {"venv_uv_version": None, "pip_version": pip}
    markdown = run_doctor("--python", str(venv), "--format", "markdown", cwd=workdir).stdout
    assert f"pip `{pip}` in the venv" in markdown
