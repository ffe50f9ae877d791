"""A static PEP 503 index served by the real nginx on 127.0.0.1: no PEP 658 metadata
files, HTTP range requests answered by nginx itself (206 Partial Content).

The tree is plain files (``simple/<project>/index.html`` linking ``files/<wheel>`` with
its sha256 fragment); nginx runs from a temporary config on a free port and is stopped
when the block ends. Its access log records method, path, status and Range header, so a
test can tell which requests a client made.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.index_server import IndexedWheel

__all__ = ["NGINX", "StaticIndex", "serve_static_index"]

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
)

CONFIG = """\
daemon off;
{user}
worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/error.log;
events {{ worker_connections 64; }}
http {{
    types {{ text/html html; application/octet-stream whl; }}
    default_type application/octet-stream;
    log_format requests '$request_method $uri $status "$http_range"';
    access_log {state}/access.log requests;
    client_body_temp_path {state}/client;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.html;
    }}
}}
"""


@dataclass
class StaticIndex:
    root: Path
    state: Path
    url: str

    def file(self, filename: str) -> Path:
        return self.root / "files" / filename

    @property
    def requests(self) -> list[str]:
        """'GET /files/x.whl 206 "bytes=..."' lines, oldest first."""
        log = self.state / "access.log"
        return log.read_text().splitlines() if log.exists() else []


def write_tree(wheels: Iterable[Path], root: Path) -> None:
    files = root / "files"
    files.mkdir(parents=True)
    by_project: dict[str, list[IndexedWheel]] = {}
    for path in wheels:
        wheel = IndexedWheel.read(Path(path))
        shutil.copy2(path, files / Path(path).name)
        by_project.setdefault(wheel.project, []).append(wheel)
    for project, entries in by_project.items():
        links = []
        for wheel in entries:
            digest = hashlib.sha256(wheel.path.read_bytes()).hexdigest()
            href = html.escape(f"../../files/{quote(wheel.path.name)}#sha256={digest}")
            python = (
                f' data-requires-python="{html.escape(wheel.requires_python)}"'
                if wheel.requires_python
                else ""
            )
            links.append(f'<a href="{href}"{python}>{html.escape(wheel.path.name)}</a><br>')
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True)
        page.write_text(f"<!DOCTYPE html>\n<html><body>\n{chr(10).join(links)}\n</body></html>\n")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_static_index(wheels: Iterable[Path], directory: Path) -> Iterator[StaticIndex]:
    assert NGINX is not None, "nginx is not installed"
    root, state = directory / "root", directory / "nginx"
    write_tree(wheels, root)
    state.mkdir(parents=True)
    port = _free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    (state / "nginx.conf").write_text(CONFIG.format(user=user, state=state, root=root, port=port))
    server = subprocess.Popen(
        [NGINX, "-p", str(state), "-c", str(state / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    stderr = server.stderr.read().decode() if server.stderr else ""
                    raise RuntimeError(f"nginx did not start: {stderr}") from None
                time.sleep(0.05)
        yield StaticIndex(root, state, f"http://127.0.0.1:{port}/simple")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
