"""`torch-doctor lock` on bad input: every wheel it cannot check says why, in one line,
and the run exits 2 ("could not check"), never 0 and never with a traceback.

One founding-case project is locked by the real uv once per module; each test then
breaks the index (tests/index_server.py overrides, the real nginx, a dead port) or the
lock, with an empty metadata cache of its own.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factory import DoctorRun, run_doctor
from tests.index_server import SimpleIndex, serve_index
from tests.static_index import NGINX, serve_static_index
from tests.test_lock_command import AARCH64, X86_64, _project
from tests.test_uv_lock_metadata import UV
from tests.wheelhouse import build_wheels, founding_case_wheels

pytestmark = [
    pytest.mark.uv,
    pytest.mark.timeout(300),
    pytest.mark.skipif(UV is None, reason="uv is not installed"),
    pytest.mark.skipif(sys.platform != "linux", reason="the wheels are Linux ones"),
]


@dataclass
class Locked:
    root: Path
    index: SimpleIndex
    env: dict[str, str]

    def run(self, cache: Path, *args: str, env: dict[str, str] | None = None) -> DoctorRun:
        return run_doctor(
            "lock",
            "--project",
            str(self.root),
            *args,
            env={**self.env, "TORCH_DOCTOR_CACHE_DIR": str(cache), **(env or {})},
            timeout=60,
        )


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    tmp = tmp_path_factory.mktemp("locked")
    wheels = build_wheels(founding_case_wheels(), tmp / "wheels")
    with serve_index(wheels) as index:
        project = _project(tmp, index.url, lambda: index.requests)
        project.uv("lock")
        yield Locked(project.root, index, project.env)


@pytest.fixture
def index(locked: Locked) -> Iterator[SimpleIndex]:
    yield locked.index
    locked.index.overrides.clear()
    locked.index.credentials = None


def _line(run: DoctorRun, wheel: str) -> str:
    [line] = [x for x in run.stdout.splitlines() if x.strip().startswith(wheel)]
    return line


def _moved(locked: Locked, tmp_path: Path, url: str) -> Path:
    """A copy of the project whose uv.lock names another index URL."""
    root = tmp_path / "moved"
    root.mkdir()
    (root / "pyproject.toml").write_text((locked.root / "pyproject.toml").read_text())
    text = (locked.root / "uv.lock").read_text()
    (root / "uv.lock").write_text(text.replace(locked.index.url.rsplit("/simple", 1)[0], url))
    return root


def test_an_unreachable_index_is_could_not_check(locked: Locked, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = _moved(locked, tmp_path, f"http://127.0.0.1:{port}")
    run = run_doctor(
        "lock",
        "--project",
        str(root),
        env={**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")},
    )
    assert run.returncode == 2, run.stdout
    assert "COULD NOT CHECK: cannot reach" in _line(run, X86_64)
    assert "the lock is not known to be clean" in run.stdout
    assert "Traceback" not in run.stderr


def test_an_index_that_never_answers_times_out(locked: Locked, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        root = _moved(locked, tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
        run = run_doctor(
            "lock",
            "--project",
            str(root),
            "--timeout",
            "0.5",
            env={**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")},
        )
    assert run.returncode == 2, run.stdout
    assert "timed out after 0.5 s" in _line(run, X86_64)


def test_a_404_on_the_metadata_file(locked: Locked, index: SimpleIndex, tmp_path: Path) -> None:
    index.overrides[f"/files/{X86_64}.metadata"] = (404, "text/plain", b"not here")
    run = locked.run(tmp_path / "c")
    assert run.returncode == 2, run.stdout
    assert "COULD NOT CHECK: HTTP 404" in _line(run, X86_64)
    assert "metadata file" in _line(run, AARCH64)  # the other wheel was checked


def test_401_without_credentials_then_credentials_as_uv_reads_them(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    secret = "s3cret-Pa55"
    index.credentials = ("ci-user", secret)
    run = locked.run(tmp_path / "c1")
    assert run.returncode == 2, run.stdout
    assert "HTTP 401" in _line(run, X86_64) and "no credentials found" in run.stdout

    # UV_INDEX_<NAME>_USERNAME/PASSWORD for the index named "local" in pyproject.toml.
    variables = {"UV_INDEX_LOCAL_USERNAME": "ci-user", "UV_INDEX_LOCAL_PASSWORD": secret}
    with_env = locked.run(tmp_path / "c2", "--format", "json", env=variables)
    assert with_env.returncode == 1, with_env.stdout  # checked: the founding case
    # netrc, as uv reads it.
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login ci-user password {secret}\n")
    netrc.chmod(0o600)
    with_netrc = locked.run(tmp_path / "c3", env={"NETRC": str(netrc)})
    assert with_netrc.returncode == 1, with_netrc.stdout
    for output in (run, with_env, with_netrc):
        assert secret not in output.stdout + output.stderr


def test_an_index_page_that_is_not_html(locked: Locked, index: SimpleIndex, tmp_path: Path) -> None:
    index.overrides["/simple/torch/"] = (200, "text/plain", b"Service temporarily unavailable")
    run = locked.run(tmp_path / "c")
    assert run.returncode == 2, run.stdout
    assert "answered text/plain, not an index page" in _line(run, X86_64)


def test_html_where_the_metadata_should_be(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    index.overrides[f"/files/{X86_64}.metadata"] = (200, "text/html", b"<html>login</html>")
    run = locked.run(tmp_path / "c")
    assert run.returncode == 2, run.stdout
    assert "answered an HTML page, not the wheel's metadata" in _line(run, X86_64)


def test_a_metadata_file_whose_hash_does_not_match_is_refused(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    forged = b"Metadata-Version: 2.1\nName: torch\nVersion: 2.6.0+cu126\n\n"
    index.overrides[f"/files/{X86_64}.metadata"] = (200, "binary/octet-stream", forged)
    cache = tmp_path / "c"
    run = locked.run(cache)
    assert run.returncode == 2, run.stdout
    assert "refused" in _line(run, X86_64) and "sha256" in _line(run, X86_64)
    # Nothing refused is cached: the next run asks the index again.
    index.overrides.clear()
    assert locked.run(cache).returncode == 1


def test_an_unknown_lock_version_is_refused(locked: Locked, tmp_path: Path) -> None:
    root = _moved(locked, tmp_path, "http://127.0.0.1:9")
    lock = root / "uv.lock"
    lock.write_text(lock.read_text().replace("version = 1\n", "version = 99\n", 1))
    run = run_doctor("lock", "--project", str(root), env=locked.env)
    assert run.returncode == 2
    assert "lock format version 99" in run.stderr and "Traceback" not in run.stderr


def test_no_lock_at_all(tmp_path: Path) -> None:
    run = run_doctor("lock", "--project", str(tmp_path))
    assert run.returncode == 2
    assert "no uv.lock" in run.stderr


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")
def test_a_wheel_cut_in_half_is_caught_by_range_read_and_by_download(tmp_path: Path) -> None:
    wheels = build_wheels(founding_case_wheels(), tmp_path / "wheels")
    with serve_static_index(wheels, tmp_path / "static") as static:
        project = _project(tmp_path, static.url, lambda: static.requests)
        project.uv("lock")
        wheel = static.file(X86_64)
        data = wheel.read_bytes()
        wheel.write_bytes(data[: len(data) // 2])

        run = project.lock_check()
        assert run.returncode == 2, run.stdout
        assert "not a complete wheel" in _line(run, X86_64)
        assert "--download reads the whole wheel" in _line(run, X86_64)

        downloaded = project.lock_check("--download")
        assert downloaded.returncode == 2, downloaded.stdout
        assert f"downloading {X86_64}" in downloaded.stderr
        line = _line(downloaded, X86_64)
        assert "is not the" in line and "uv.lock records; refused" in line
