"""`fix` in hostile projects (issue 11): symlinks, CRLF, a BOM, a booby-trapped backup name.

Each test sets the project up as a user's checkout would be, runs `torch-doctor fix --yes`
as a subprocess, and checks the file, the link, the backup and where nothing was written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_fix import COMMENTED_PYPROJECT, backups, fix, make_lock_project, torch_entries


def test_symlinked_pyproject_keeps_its_link_and_its_target_is_edited(tmp_path: Path) -> None:
    # A dotfiles repository: the project's pyproject.toml is a link into it.
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    project = make_lock_project(tmp_path / "demo")
    real = dotfiles / "demo-pyproject.toml"
    (project / "pyproject.toml").rename(real)
    (project / "pyproject.toml").symlink_to(real)
    original = real.read_bytes()
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    link = project / "pyproject.toml"
    assert link.is_symlink() and Path(os.readlink(link)) == real
    assert len(torch_entries(real)) == 1  # the target holds the edit
    [backup] = backups(project)  # the backup is in the project, not beside the target
    assert backup.read_bytes() == original
    assert not [p for p in dotfiles.iterdir() if p != real]  # no stray file beside it
    assert str(real) in run.stdout


def test_crlf_line_endings_and_a_bom_are_kept(tmp_path: Path) -> None:
    crlf = COMMENTED_PYPROJECT.replace("\n", "\r\n")
    project = make_lock_project(tmp_path / "demo")
    pyproject = project / "pyproject.toml"
    pyproject.write_bytes(b"\xef\xbb\xbf" + crlf.encode())
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    data = pyproject.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    body = data[3:]
    assert b"dependency-metadata" in body
    assert body.count(b"\n") == body.count(b"\r\n")  # every line ends in CRLF
    assert not body.startswith(b"\xef\xbb\xbf")
    # And the doctor (like uv) reads the BOM file: the next fix has nothing to do.
    again = fix(project, "--yes")
    assert again.returncode == 0, again.stderr
    assert "already up to date" in again.stdout or "Nothing to change" in again.stdout


def test_a_dangling_backup_symlink_is_never_written_through(tmp_path: Path) -> None:
    project = make_lock_project(tmp_path / "demo")
    outside = tmp_path / "outside" / "stolen.toml"
    outside.parent.mkdir()
    # The old backup name and every place a backup could go, booby-trapped.
    (project / "pyproject.toml.bak").symlink_to(outside)
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    assert not outside.exists()
    assert (project / "pyproject.toml.bak").is_symlink()  # left alone
    [backup] = (project / ".torch-doctor" / "backups").iterdir()
    assert not backup.is_symlink()


def test_a_symlinked_backup_directory_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    project = make_lock_project(tmp_path / "demo")
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / ".torch-doctor").mkdir()
    (project / ".torch-doctor" / "backups").symlink_to(outside)
    before = (project / "pyproject.toml").read_bytes()
    run = fix(project, "--yes")
    assert run.returncode == 2
    assert "symlink" in run.stderr and "nothing was changed" in run.stderr
    assert "Traceback" not in run.stderr
    assert (project / "pyproject.toml").read_bytes() == before
    assert list(outside.iterdir()) == []


def test_backups_are_ignored_by_git(tmp_path: Path) -> None:
    import shutil
    import subprocess

    git = shutil.which("git")
    project = make_lock_project(tmp_path / "demo")
    assert fix(project, "--yes").returncode == 0
    assert backups(project)
    if git is None:
        pytest.skip("git is not installed (the .gitignore is checked in test_fix.py)")
    subprocess.run([git, "init", "-q"], cwd=project, check=True)
    status = subprocess.run(
        [git, "status", "--porcelain", "--untracked-files=all"],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert ".torch-doctor" not in status
    assert "pyproject.toml" in status
