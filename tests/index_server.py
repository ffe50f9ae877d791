"""A PEP 503 simple index on 127.0.0.1, serving wheel files from one directory.

Project pages link each file with its sha256 fragment, its Requires-Python (PEP 503),
and its core metadata (PEP 658 / PEP 714: ``data-dist-info-metadata`` and
``data-core-metadata`` with the sha256 of ``<wheel>.metadata``, served next to the
wheel). Every request path is recorded, so a test can tell which files uv read.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import re
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import HeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

__all__ = ["IndexedWheel", "SimpleIndex", "serve_index"]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class IndexedWheel:
    path: Path
    project: str  # PEP 503 normalised
    sha256: str
    metadata: bytes  # the wheel's own .dist-info/METADATA, byte for byte
    requires_python: str | None

    @classmethod
    def read(cls, path: Path) -> IndexedWheel:
        with zipfile.ZipFile(path) as archive:
            member = next(
                n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)
            )
            metadata = archive.read(member)
        headers = HeaderParser().parsestr(metadata.decode("utf-8"))
        return cls(
            path=path,
            project=_normalise(headers["Name"]),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            metadata=metadata,
            requires_python=headers.get("Requires-Python"),
        )

    @property
    def metadata_sha256(self) -> str:
        return hashlib.sha256(self.metadata).hexdigest()


class SimpleIndex:
    """The index's content and request log; ``url`` is set while it is served.

    Knobs for bad-input tests, changeable while serving: ``credentials`` (user,
    password) makes every request need HTTP basic auth (401 otherwise); ``overrides``
    maps a request path to the (status, content type, body) served instead; ``streams``
    maps a request path to a function that writes the whole answer itself (an endless
    body, one byte at a time, a lying Content-Length); ``metadata_files = False`` links
    no PEP 658 metadata (clients then read the wheel; this server ignores Range).
    """

    def __init__(self, wheels: Iterable[Path], credentials: tuple[str, str] | None = None) -> None:
        # Files are listed in the order given: the order a test chose is the order uv sees.
        self.wheels = [IndexedWheel.read(Path(p)) for p in wheels]
        self.requests: list[str] = []
        self.url = ""
        self.credentials = credentials
        self.overrides: dict[str, tuple[int, str, bytes]] = {}
        self.streams: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.metadata_files = True

    def projects(self) -> list[str]:
        return sorted({w.project for w in self.wheels})

    def file(self, filename: str) -> IndexedWheel | None:
        for wheel in self.wheels:
            if wheel.path.name == filename:
                return wheel
        return None

    def project_page(self, project: str) -> bytes | None:
        wheels = [w for w in self.wheels if w.project == project]
        if not wheels:
            return None
        links = []
        for wheel in wheels:
            href = f"../../files/{quote(wheel.path.name)}#sha256={wheel.sha256}"
            attributes = [f'href="{html.escape(href)}"']
            if wheel.requires_python:
                attributes.append(f'data-requires-python="{html.escape(wheel.requires_python)}"')
            # PEP 714 renamed the attribute; indexes serve both for older clients.
            if self.metadata_files:
                metadata = f"sha256={wheel.metadata_sha256}"
                attributes.append(f'data-dist-info-metadata="{metadata}"')
                attributes.append(f'data-core-metadata="{metadata}"')
            links.append(f"    <a {' '.join(attributes)}>{html.escape(wheel.path.name)}</a><br>")
        body = "\n".join(links)
        return (
            '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.1">'
            f"<title>Links for {project}</title></head>\n<body>\n<h1>Links for {project}</h1>\n"
            f"{body}\n</body></html>\n"
        ).encode()

    def root_page(self) -> bytes:
        links = "\n".join(f'    <a href="{p}/">{p}</a><br>' for p in self.projects())
        return f"<!DOCTYPE html>\n<html><body>\n{links}\n</body></html>\n".encode()


def _handler(index: SimpleIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            index.requests.append(path)
            if index.credentials is not None and not self._authorised():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="index"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path in index.streams:
                with contextlib.suppress(OSError):  # the client hung up: what the test wants
                    index.streams[path](self)
                self.close_connection = True
                return
            if path in index.overrides:
                status, content_type, body = index.overrides[path]
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            body, content_type = self._resolve(path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            assert index.credentials is not None
            user, password = index.credentials
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {token}"

        def _resolve(self, path: str) -> tuple[bytes | None, str]:
            parts = [p for p in path.split("/") if p]
            if parts == ["simple"]:
                return index.root_page(), "text/html"
            if len(parts) == 2 and parts[0] == "simple":
                return index.project_page(_normalise(parts[1])), "text/html"
            if len(parts) == 2 and parts[0] == "files":
                name = parts[1]
                if name.endswith(".metadata"):
                    wheel = index.file(name[: -len(".metadata")])
                    return (wheel.metadata if wheel else None), "binary/octet-stream"
                wheel = index.file(name)
                return (wheel.path.read_bytes() if wheel else None), "binary/octet-stream"
            return None, "text/plain"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the request log above is what tests read

    return Handler


@contextmanager
def serve_index(
    wheels: Iterable[Path], credentials: tuple[str, str] | None = None
) -> Iterator[SimpleIndex]:
    """Serve the wheels on 127.0.0.1 (an ephemeral port) until the block ends."""
    index = SimpleIndex(wheels, credentials)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="simple-index", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    index.url = f"http://{host!s}:{port}/simple"
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
