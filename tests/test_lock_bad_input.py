"""`torch-doctor lock` on bad input: every wheel it cannot check says why, in one line,
and the run exits 2 ("could not check"), never 0 and never with a traceback.

One founding-case project is locked by the real uv once per module; each test then
breaks the index (tests/index_server.py overrides, the real nginx, a dead port) or the
lock, with an empty metadata cache of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.factory import DoctorRun, doctor_env, run_doctor
from tests.index_server import SimpleIndex, serve_index
from tests.static_index import NGINX, serve_static_index
from tests.test_hostile import Run, run
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
    locked.index.streams.clear()
    locked.index.metadata_files = True
    locked.index.credentials = None


Stream = Callable[[BaseHTTPRequestHandler], None]


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
    # The wheel itself is still there: the line says how to check it anyway, and
    # --download does (this server ignores Range, so only the whole wheel can be read).
    assert "(--download reads the whole wheel)" in _line(run, X86_64)
    downloaded = locked.run(tmp_path / "d", "--download")
    assert downloaded.returncode == 1, downloaded.stdout + downloaded.stderr  # the founding case
    assert _line(downloaded, X86_64).endswith("whole wheel"), _line(downloaded, X86_64)


def test_401_without_credentials_then_credentials_as_uv_reads_them(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    secret = "s3cret-Pa55"
    index.credentials = ("ci-user", secret)
    run = locked.run(tmp_path / "c1")
    assert run.returncode == 2, run.stdout
    assert "HTTP 401" in _line(run, X86_64) and "no credentials found" in run.stdout
    # The variables to set are named for this index ("local"), ready to export, not as
    # a pattern the user has to work out from uv's docs.
    assert "UV_INDEX_LOCAL_USERNAME and UV_INDEX_LOCAL_PASSWORD" in _line(run, X86_64)
    assert "<NAME>" not in run.stdout

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


# --- Where the report goes: stdout closed, full, or ASCII only (issue 11) --------------------


def test_a_closed_or_full_stdout_is_exit_2_with_a_message(locked: Locked, tmp_path: Path) -> None:
    env = doctor_env({**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")})
    command = [sys.executable, "-m", "doctor", "lock", "--project", str(locked.root)]
    closed = subprocess.run(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
        timeout=60,
    )
    assert closed.returncode == 2, closed.stderr
    assert "standard output is closed" in closed.stderr and "internal error" not in closed.stderr
    # JSON is written after the requests: the failure comes at the end, still exit 2.
    for args in ((), ("--format", "json")):
        with open("/dev/full", "w") as full:
            result = subprocess.run(
                [*command, *args], env=env, stdout=full, stderr=subprocess.PIPE, text=True
            )
        assert result.returncode == 2, (args, result.stderr)
        assert "cannot write the report" in result.stderr, result.stderr
        assert "internal error" not in result.stderr


def test_a_stdout_that_takes_only_ascii_gets_ascii_glyphs(locked: Locked, tmp_path: Path) -> None:
    run = locked.run(tmp_path / "c", env={"PYTHONIOENCODING": "ascii"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.isascii()
    assert "x error lock-metadata-inconsistent" in run.stdout
    assert "  -> " in run.stdout  # the remedies' arrows


# --- Arguments (issue 11) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lock", "--timeout", "nan"), "--timeout"),
        (("lock", "--timeout", "inf"), "--timeout"),
        (("lock", "--timeout", "1e308"), "--timeout"),
        (("lock", "--timeout", "0"), "--timeout"),
        (("lock", "--project", ""), "--project needs a path"),
        (("compare", ""), "REPORT needs a path"),
    ],
)
def test_bad_arguments_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    run = run_doctor(*args)
    assert run.returncode == 2, run.stdout
    assert message in run.stderr and "internal error" not in run.stderr


# --- Credentials inside the index URL (issue 14) ----------------------------------------------

SECRET = "Pa55-in-the-URL"


def test_credentials_in_the_index_url_are_used_and_never_shown(tmp_path: Path) -> None:
    wheels = build_wheels(founding_case_wheels(), tmp_path / "wheels")
    with serve_index(wheels, credentials=("ci-user", SECRET)) as index:
        url = index.url.replace("http://", f"http://ci-user:{SECRET}@")
        project = _project(tmp_path, url, lambda: index.requests)
        project.uv("lock")
        lock = project.root / "uv.lock"
        assert SECRET not in lock.read_text()  # uv keeps them out of the lock

        runs = [project.lock_check(), project.lock_check("--format", "json")]
        # A lock edited by hand to carry them in every URL: still found, still hidden.
        lock.write_text(lock.read_text().replace("http://", f"http://ci-user:{SECRET}@"))
        runs += [project.lock_check("--format", "json"), project.lock_check("--offline")]
        for run in runs:
            assert run.returncode == 1, run.stdout + run.stderr  # checked: the founding case
            assert SECRET not in run.stdout + run.stderr
        urls = [w["wheel"]["url"] for w in runs[2].json["wheels"]]
        assert urls and all("ci-user" not in u and "127.0.0.1" in u for u in urls), urls

        # A wrong password in the URL: refused by the index, said so, and not shown either.
        wrong = "Wr0ng-Pa55"
        lock.write_text(lock.read_text().replace(SECRET, wrong))
        pyproject = project.root / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace(SECRET, wrong))
        fresh = {"TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "fresh-cache")}
        refused = project.lock_check("--format", "json", env=fresh)
        assert refused.returncode == 2, refused.stdout
        errors = [w["error"] for w in refused.json["wheels"]]
        assert all("HTTP 401" in e and "none were accepted" in e for e in errors), errors
        assert wrong not in refused.stdout + refused.stderr


# --- A hostile index: bounded time, memory and exit code (issue 11 on the lock side) ---------

# Seconds a run may take beyond its --timeout, and the peak RSS of the doctor's process.
MARGIN = 4.0
RSS_CAP_MB = 200
GIB = 1024 * 1024 * 1024
# The doctor run with its wall time and peak RSS: the hostile-environment tests' runner.
measured_run = run


def _endless(status: int = 200, length: int | None = None, byte: bytes = b"\0") -> Stream:
    """An answer whose body never ends (or claims ``length`` bytes and sends more)."""

    def write(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        block = byte * (1024 * 1024)
        for _ in range(4096):  # 4 GiB, more than any cap; the client hangs up long before
            handler.wfile.write(block)

    return write


def _drip(handler: BaseHTTPRequestHandler) -> None:
    """200, then one byte every 0.2 s: each read is well within a socket timeout."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.end_headers()
    for _ in range(300):
        handler.wfile.write(b"<")
        handler.wfile.flush()
        time.sleep(0.2)


def _measured(locked: Locked, tmp_path: Path, *args: str, timeout: float = 5) -> Run:
    env = {**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")}
    project = ("lock", "--project", str(locked.root), "--timeout", f"{timeout:g}")
    run = measured_run(*project, *args, cwd=tmp_path, env=env, wall=120)
    assert run.seconds < timeout + MARGIN, run
    assert run.peak_rss_mb < RSS_CAP_MB, run
    assert run.returncode == 2, run
    return run


def _run_line(run: Run, wheel: str) -> str:
    [line] = [x for x in run.stdout.splitlines() if x.strip().startswith(wheel)]
    return line


def test_an_endless_index_page_is_cut_at_its_cap(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    index.streams["/simple/torch/"] = _endless(byte=b"<a>")
    run = _measured(locked, tmp_path)
    assert "index page is larger than the 32 MiB it may be" in _run_line(run, X86_64)


def test_a_metadata_file_of_a_declared_4_gib_is_not_read(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    index.streams[f"/files/{X86_64}.metadata"] = _endless(length=4 * GIB)
    run = _measured(locked, tmp_path)
    line = _run_line(run, X86_64)
    assert "metadata file is 4096 MiB, more than the 8 MiB it may be; not read" in line
    assert "metadata file (PEP 658)" in _run_line(run, AARCH64)


def test_an_index_that_drips_one_byte_at_a_time_meets_the_deadline(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    index.streams["/simple/torch/"] = _drip
    run = _measured(locked, tmp_path, timeout=2)
    assert "timed out after 2 s" in _run_line(run, X86_64)


def test_a_server_that_ignores_range_sends_no_wheel_into_memory(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    index.metadata_files = False  # the range read of the wheel, then --download
    index.streams[f"/files/{X86_64}"] = _endless()
    run = _measured(locked, tmp_path)
    line = _run_line(run, X86_64)
    assert "does not answer range requests (HTTP 200)" in line, line
    assert "--download reads the whole wheel" in line

    # --download reads at most the size uv.lock records (here it records one).
    wheel = index.file(X86_64)
    assert wheel is not None
    root = _locking(locked, tmp_path, wheel.path)
    env = {**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")}
    downloaded = measured_run(
        "lock", "--project", str(root), "--download", "--timeout", "5", cwd=tmp_path, env=env
    )
    assert downloaded.seconds < 5 + MARGIN and downloaded.peak_rss_mb < RSS_CAP_MB, downloaded
    assert downloaded.returncode == 2, downloaded
    line = _run_line(downloaded, X86_64)
    size = wheel.path.stat().st_size
    assert f"the wheel is larger than the {size} bytes uv.lock records; stopped" in line, line


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel named like torch's x86_64 one whose METADATA inflates to 1 GiB (1 MB zipped)."""
    path = tmp_path_factory.mktemp("bomb") / X86_64
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("torch/__init__.py", b"")
        info = zipfile.ZipInfo("torch-2.6.0+cu126.dist-info/METADATA")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            member.write(b"Metadata-Version: 2.1\nName: torch\nVersion: 2.6.0+cu126\n")
            block = b" " * (1024 * 1024)
            for _ in range(1024):
                member.write(block)
    assert path.stat().st_size < 8 * 1024 * 1024
    return path


def _locking(locked: Locked, tmp_path: Path, wheel: Path, base: str | None = None) -> Path:
    """A copy of the project whose uv.lock records ``wheel`` (its hash and size, as uv
    writes them when the index gives sizes) for the x86_64 torch wheel, its URLs moved to
    ``base`` if given."""
    root = _moved(locked, tmp_path, base or locked.index.url.rsplit("/simple", 1)[0])
    lock = root / "uv.lock"
    data = wheel.read_bytes()
    digest, size = hashlib.sha256(data).hexdigest(), len(data)
    lines = []
    for line in lock.read_text().splitlines():
        if X86_64.replace("+", "%2B") in line and "hash = " in line:
            line = re.sub(r'hash = "sha256:[0-9a-f]+"', f'hash = "sha256:{digest}"', line)
            line = re.sub(r", size = \d+", "", line).replace(" }", f", size = {size} }}")
        lines.append(line)
    lock.write_text("\n".join(lines) + "\n")
    assert digest in lock.read_text()
    return root


def _served(path: Path) -> Stream:
    def write(handler: BaseHTTPRequestHandler) -> None:
        data = path.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return write


def test_a_zip_bomb_is_refused_by_its_declared_size_when_downloaded(
    locked: Locked, index: SimpleIndex, bomb: Path, tmp_path: Path
) -> None:
    index.metadata_files = False
    index.streams[f"/files/{X86_64}"] = _served(bomb)
    root = _locking(locked, tmp_path, bomb)
    env = {**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")}
    run = measured_run(
        "lock", "--project", str(root), "--download", "--timeout", "5", cwd=tmp_path, env=env
    )
    assert run.returncode == 2, run
    assert run.peak_rss_mb < RSS_CAP_MB and run.seconds < 5 + MARGIN, run
    line = _run_line(run, X86_64)
    assert "METADATA is larger than the 8 MiB METADATA may be; not decompressed" in line, line


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")
def test_a_zip_bomb_is_refused_by_its_declared_size_through_range_reads(
    locked: Locked, bomb: Path, tmp_path: Path
) -> None:
    wheels = build_wheels(founding_case_wheels(), tmp_path / "wheels")
    with serve_static_index(wheels, tmp_path / "static") as static:
        static.file(X86_64).write_bytes(bomb.read_bytes())
        root = _locking(locked, tmp_path, bomb, static.url.rsplit("/simple", 1)[0])
        env = {**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")}
        run = measured_run("lock", "--project", str(root), "--timeout", "5", cwd=tmp_path, env=env)
    assert run.returncode == 2, run
    assert run.peak_rss_mb < RSS_CAP_MB and run.seconds < 5 + MARGIN, run
    line = _run_line(run, X86_64)
    assert "METADATA is larger than the 8 MiB METADATA may be; not decompressed" in line, line
    assert "range read of METADATA" in _run_line(run, AARCH64)


def _hang(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(30)  # the client gives up at --timeout and hangs up


def test_on_a_terminal_a_hanging_index_is_named_while_waited_for(
    locked: Locked, index: SimpleIndex, tmp_path: Path
) -> None:
    """`lock` waits up to --timeout per request: on a terminal, after a second, one line on
    stderr names the index and the wheel waited for (as `check` names a slow driver), and is
    erased before the report; off a terminal nothing is written (test_progress.py)."""
    from tests.test_progress import read_terminal

    index.streams["/simple/torch/"] = _hang
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "doctor", "lock", "--project", str(locked.root), "--timeout", "3"],
        env=doctor_env({**locked.env, "TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "cache")}),
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    stdout, _ = proc.communicate(timeout=60)
    terminal = read_terminal(primary)
    host = locked.index.url.split("/")[2]
    assert re.search(
        rf"torch-doctor: waiting for {re.escape(host)} \(torch 2\.6\.0\+cu126, linux \w+\) "
        r"\(\d s\)",
        terminal,
    ), terminal
    assert terminal.endswith("\r\x1b[K"), terminal
    assert proc.returncode == 2
    assert b"timed out after 3 s" in stdout
