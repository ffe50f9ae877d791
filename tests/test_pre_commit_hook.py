"""The `.pre-commit-hooks.yaml` hook, run by the real pre-commit from PyPI.

A temporary git clone of this repository is the hook repository (pre-commit installs it
into its own environment, as a user's project would: from PyPI, so this test needs
PyPI); a consumer project locked by the real uv against an index on 127.0.0.1 runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import REPO
from tests.index_server import serve_index
from tests.test_lock_command import _project
from tests.test_uv_lock_metadata import UV
from tests.wheelhouse import build_wheels, founding_case_wheels

PRE_COMMIT = shutil.which("pre-commit", path=str(Path(sys.executable).parent)) or shutil.which(
    "pre-commit"
)
GIT = shutil.which("git")

pytestmark = [
    pytest.mark.uv,
    pytest.mark.pypi,
    pytest.mark.timeout(600),
    pytest.mark.skipif(UV is None, reason="uv is not installed"),
    pytest.mark.skipif(GIT is None, reason="git is not installed"),
    pytest.mark.skipif(PRE_COMMIT is None, reason="pre-commit is not installed (dev group)"),
    pytest.mark.skipif(sys.platform != "linux", reason="the wheels are Linux ones"),
]


def _git(cwd: Path, *args: str) -> str:
    assert GIT is not None
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(
        [GIT, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_pre_commit_hook_fails_on_the_founding_case_and_passes_after_the_fix(
    tmp_path: Path,
) -> None:
    # The hook repository: a clone of this repository's committed state.
    hooks = tmp_path / "torch-doctor"
    _git(tmp_path, "clone", "--quiet", str(REPO), str(hooks))
    revision = _git(hooks, "rev-parse", "HEAD")

    wheels = build_wheels(founding_case_wheels(), tmp_path / "wheels")
    with serve_index(wheels) as index:
        project = _project(tmp_path, index.url, lambda: index.requests)
        project.uv("lock")
        (project.root / ".pre-commit-config.yaml").write_text(
            "repos:\n"
            f"  - repo: {hooks}\n"
            f"    rev: {revision}\n"
            "    hooks:\n"
            "      - id: torch-doctor-lock\n"
        )
        _git(project.root, "init", "--quiet")
        _git(project.root, "add", "-A")
        # pre-commit installs the hook from PyPI; uv's dead proxy is only for uv.
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_", "PIP_"))
        }
        env.update(
            PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
            TORCH_DOCTOR_CACHE_DIR=str(tmp_path / "td-cache"),
            NO_PROXY="127.0.0.1",
        )

        def hook() -> subprocess.CompletedProcess[str]:
            assert PRE_COMMIT is not None
            return subprocess.run(
                [PRE_COMMIT, "run", "--all-files", "--color", "never"],
                cwd=project.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=500,
            )

        failed = hook()
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "torch-doctor lock" in failed.stdout and "Failed" in failed.stdout
        assert "lock-metadata-inconsistent" in failed.stdout
        assert "lacks nvidia-cudnn-cu12==9.5.1.17" in failed.stdout

        fixed = project.lock_check("--fix", "--yes")
        assert "Wrote " in fixed.stdout, fixed.stdout + fixed.stderr
        project.uv("lock")
        _git(project.root, "add", "-A")
        passed = hook()
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "Passed" in passed.stdout
