"""The network side of `torch-doctor lock`: package indexes over HTTP(S), read only.

Only `torch-doctor lock` imports this module; the default run never touches the network.
What it speaks: the simple repository API (PEP 503 HTML pages, read with html.parser,
and PEP 691 JSON where the index offers it), PEP 658/714 core-metadata files, and HTTP
range requests that read one member of a remote wheel through ``zipfile`` (the zip
central directory is parsed by the standard library, not here).

Credentials are found as uv finds them: in the index URL of pyproject.toml, in
``UV_INDEX_<NAME>_USERNAME`` / ``UV_INDEX_<NAME>_PASSWORD``, or in netrc (``NETRC`` or
``~/.netrc``). They are sent only to the host they belong to and never appear in a
message: every URL this module puts in an error is stripped of its user information.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.client
import io
import json
import netrc
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from doctor.facts import IndexFacts
from doctor.probe.files import CAPS

__all__ = [
    "Credentials",
    "FetchError",
    "Http",
    "IndexFile",
    "RangeFile",
    "find_credentials",
    "project_files",
    "public_url",
]

PEP_691_JSON = "application/vnd.pypi.simple.v1+json"
ACCEPT_INDEX = f"{PEP_691_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


class FetchError(Exception):
    """A request failed; the message is safe to show (no credentials) and names the cause.
    ``status``: the HTTP status when the server answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    host: str  # sent only to this host


def public_url(url: str) -> str:
    """The URL without user information (what may be shown). The host and port stay as
    written; userinfo ends at the last "@" of the authority, as urlsplit splits it."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[x": no parser accepts it; cut the userinfo by hand
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#]*@", r"\1", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _env_name(index_name: str) -> str:
    # uv: the index name upper-cased, every non-alphanumeric character as "_".
    return re.sub(r"[^A-Za-z0-9]", "_", index_name).upper()


def _realm(url: str) -> tuple[str, str, int | None]:
    # uv keeps an index's credentials per realm (scheme, host, port): its files are
    # often served from another path of the same host (/simple/… and /files/…).
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def find_credentials(
    url: str, indexes: Sequence[IndexFacts], environ: Mapping[str, str]
) -> Credentials | None:
    """Credentials for a request to ``url`` (an index URL from uv.lock, or a file on it)."""
    host = urlsplit(url).hostname or ""
    own = urlsplit(url)
    if own.username:
        return Credentials(unquote(own.username), unquote(own.password or ""), host)
    for index in indexes:
        if _realm(url) != _realm(index.url):
            continue
        parts = urlsplit(index.url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if index.name:
            prefix = f"UV_INDEX_{_env_name(index.name)}_"
            username = environ.get(prefix + "USERNAME", username)
            password = environ.get(prefix + "PASSWORD", password)
        if username is not None or password is not None:
            return Credentials(username or "", password or "", parts.hostname or host)
    return _netrc_credentials(host, environ)


def credential_variables(url: str, indexes: Sequence[IndexFacts]) -> str:
    """The variables uv reads this URL's credentials from: named for its index when
    pyproject.toml names the index (UV_INDEX_LOCAL_USERNAME), else the pattern."""
    for index in indexes:
        try:
            same = _realm(url) == _realm(index.url)
        except ValueError:  # a port that is not a number: not this index
            continue
        if index.name and same:
            prefix = f"UV_INDEX_{_env_name(index.name)}_"
            return f"{prefix}USERNAME and {prefix}PASSWORD"
    return "UV_INDEX_<NAME>_USERNAME/PASSWORD"


def _netrc_credentials(host: str, environ: Mapping[str, str]) -> Credentials | None:
    path = Path(environ.get("NETRC") or Path.home() / ".netrc")
    if not host or not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    if entry is None:
        return None
    login, _, password = entry
    return Credentials(login or "", password or "", host)


@dataclass(frozen=True)
class Response:
    url: str  # after redirects, without credentials
    status: int
    headers: Mapping[str, str]
    body: bytes


# Bytes one answer may carry, per kind of request: far above any real one (PyPI's and
# PyTorch's torch pages are a few MB, a METADATA file tens of kB), far below what hurts.
# A range block's cap is the block asked for; a downloaded wheel's the size uv.lock records.
BODY_CAPS = {
    "index page": 32 * 1024 * 1024,
    "metadata file": CAPS["METADATA"],
}


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):g} MiB" if count >= 1024 * 1024 else f"{count} bytes"


class _Watch:
    """The deadline of one request, redirects included: when it passes, every connection
    the request opened is shut down, which ends any read blocked on it. A server that
    sends one byte just within each socket timeout (or ignores a Range header and sends
    a whole wheel) cannot hold a request longer than its deadline."""

    def __init__(self, seconds: float) -> None:
        self.lock = threading.Lock()
        self.descriptors: list[int] = []
        self.expired = False
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            self.descriptors.append(sock.fileno())
            if self.expired:
                self._shut(sock.fileno())

    @staticmethod
    def _shut(descriptor: int) -> None:
        # By descriptor: a TLS socket replaces the plain one it wraps (the same descriptor).
        with contextlib.suppress(OSError, ValueError):
            handle = socket.socket(fileno=descriptor)
            try:
                handle.shutdown(socket.SHUT_RDWR)
            finally:
                handle.detach()  # the connection's owner closes it

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            for descriptor in self.descriptors:
                self._shut(descriptor)

    def __enter__(self) -> _Watch:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        with self.lock:
            self.descriptors.clear()


def _watch_connections(connection: http.client.HTTPConnection, watch: _Watch) -> None:
    create: Callable[..., socket.socket] = connection._create_connection  # type: ignore[attr-defined]

    def created(*args: Any, **kwargs: Any) -> socket.socket:
        sock = create(*args, **kwargs)
        watch.add(sock)
        return sock

    connection._create_connection = created  # type: ignore[attr-defined]


class _Connection(http.client.HTTPConnection):
    def __init__(self, *args: Any, watch: _Watch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _watch_connections(self, watch)


class _TLSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, watch: _Watch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _watch_connections(self, watch)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_Connection, watch=self.watch), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            functools.partial(_TLSConnection, watch=self.watch),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


class Http:
    """GET requests with a deadline, a cap on what an answer may carry, credentials for
    their host and plain-spoken errors."""

    def __init__(
        self, timeout: float, indexes: Sequence[IndexFacts], environ: Mapping[str, str]
    ) -> None:
        self.timeout = timeout  # for each request, start to last byte
        self.indexes = tuple(indexes)
        self.environ = dict(environ)
        self.requests = 0

    def get(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        kind: str,
        cap: int | None = None,
        partial: bool = False,
    ) -> Response:
        """The answer, its body at most ``cap`` bytes (default: ``BODY_CAPS[kind]``).
        ``partial``: a range request; any answer but 206 is refused before its body."""
        limit = BODY_CAPS[kind] if cap is None else cap

        def body(answer: http.client.HTTPResponse, shown: str) -> bytes:
            if partial and answer.status != 206:
                raise FetchError(
                    f"{shown}: the server does not answer range requests (HTTP {answer.status})"
                )
            chunks = []
            size = 0
            for chunk in _chunks(
                answer, shown, limit, f"the {kind}", f"the {_size(limit)} it may be"
            ):
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)

        return self._exchange(url, headers, self.timeout, body)

    def download(
        self, url: str, sink: IO[bytes], *, cap: int, limit: str, seconds: float
    ) -> tuple[int, str]:
        """The whole file into ``sink`` (never all in memory): its size and sha256.
        ``limit`` says what ``cap`` is ("the size uv.lock records")."""
        digest = hashlib.sha256()

        def body(answer: http.client.HTTPResponse, shown: str) -> bytes:
            for chunk in _chunks(answer, shown, cap, "the wheel", limit, per_read=1024 * 1024):
                digest.update(chunk)
                sink.write(chunk)
            return b""

        self._exchange(url, None, seconds, body)
        return sink.tell(), digest.hexdigest()

    def _exchange(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        seconds: float,
        body: Callable[[http.client.HTTPResponse, str], bytes],
    ) -> Response:
        shown = public_url(url)
        try:
            parts = urlsplit(url)
            request = urllib.request.Request(shown, headers=dict(headers or {}))
            credentials = find_credentials(url, self.indexes, self.environ)
        except ValueError as exc:
            raise FetchError(f"{shown}: not a usable URL ({exc})") from None
        if credentials is not None and credentials.host == (parts.hostname or ""):
            token = f"{credentials.username}:{credentials.password}".encode()
            # Unredirected: a redirect to another host (a CDN) never carries them.
            request.add_unredirected_header(
                "Authorization", "Basic " + base64.b64encode(token).decode()
            )
        self.requests += 1
        watch = _Watch(seconds)
        late = f"timed out after {seconds:g} s: {shown}"
        try:
            with watch:
                opener = urllib.request.build_opener(_HTTPHandler(watch), _HTTPSHandler(watch))
                with opener.open(request, timeout=self.timeout) as answer:
                    content = body(answer, shown)
                    if watch.expired:
                        raise FetchError(late)
                    return Response(
                        url=public_url(answer.geturl()),
                        status=answer.status,
                        headers={k.lower(): v for k, v in answer.headers.items()},
                        body=content,
                    )
        except FetchError:
            raise
        except urllib.error.HTTPError as exc:
            hint = ""
            if exc.code in (401, 403):
                variables = credential_variables(url, self.indexes)
                hint = (
                    f" (credentials: the index URL, {variables} or netrc, as uv reads them; "
                    "none were accepted)"
                    if credentials
                    else " (no credentials found for this index: set them in the index URL, "
                    f"{variables} or netrc, as for uv)"
                )
            with contextlib.suppress(Exception):
                exc.close()
            raise FetchError(
                f"HTTP {exc.code} {exc.reason} from {shown}{hint}", status=exc.code
            ) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if watch.expired:
                raise FetchError(late) from None
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise FetchError(f"timed out after {self.timeout:g} s: {shown}") from None
            text = getattr(reason, "strerror", None) or str(reason)
            raise FetchError(f"cannot reach {shown}: {text}") from None
        except (socket.timeout, TimeoutError):
            if watch.expired:
                raise FetchError(late) from None
            raise FetchError(f"timed out after {self.timeout:g} s: {shown}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if watch.expired:
                raise FetchError(late) from None
            raise FetchError(f"cannot read {shown}: {type(exc).__name__}: {exc}") from None


def _chunks(
    answer: http.client.HTTPResponse,
    shown: str,
    cap: int,
    what: str,
    limit: str,
    per_read: int = 65536,
) -> Iterator[bytes]:
    """The body in pieces, at most ``cap`` bytes: one byte more is refused, not read on.
    ``limit`` names the cap in the message ("the 32 MiB it may be")."""
    declared = answer.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise FetchError(f"{shown}: {what} is {_size(int(declared))}, more than {limit}; not read")
    size = 0
    while size <= cap:
        chunk = answer.read(min(per_read, cap + 1 - size))
        if not chunk:
            return
        size += len(chunk)
        if size > cap:
            break
        yield chunk
    raise FetchError(f"{shown}: {what} is larger than {limit}; stopped reading")


# --- The simple repository API ------------------------------------------------------------


@dataclass(frozen=True)
class IndexFile:
    """One file of a project page: its URL, hashes, and its core-metadata file if offered."""

    filename: str
    url: str  # absolute, without fragment
    sha256: str | None
    metadata: bool  # PEP 658/714: <url>.metadata exists
    metadata_sha256: str | None


def _hash_from(value: object) -> tuple[bool, str | None]:
    """A PEP 658/691 metadata attribute: offered?, and its sha256 when given."""
    if value is None or value is False or value == "false":
        return False, None
    if isinstance(value, dict):
        digest = value.get("sha256")
        return True, digest if isinstance(digest, str) and digest else None
    if isinstance(value, str):
        match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", value)
        return True, match.group(1).lower() if match else None
    return True, None


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open = dict(attrs)
            self.anchors.append(self._open)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None


def _split_fragment(url: str) -> tuple[str, str | None]:
    base, _, fragment = url.partition("#")
    match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    return base, match.group(1).lower() if match else None


def _from_html(page: Response) -> list[IndexFile]:
    parser = _Links()
    try:
        parser.feed(page.body.decode("utf-8", errors="replace"))
    except (AssertionError, ValueError) as exc:
        # html.parser asserts on some malformed markup (``<![`` with an unknown keyword).
        raise FetchError(f"{page.url}: not a PEP 503 project page ({exc})") from None
    files = []
    for anchor in parser.anchors:
        href = anchor.get("href")
        if not href:
            continue
        try:
            joined = urljoin(page.url, href)
        except ValueError:
            continue  # not a URL ("http://[" is an invalid IPv6 host): not a file
        url, sha256 = _split_fragment(joined)
        # PEP 714: data-core-metadata; older indexes only data-dist-info-metadata.
        key = "data-core-metadata" if "data-core-metadata" in anchor else "data-dist-info-metadata"
        offered, metadata_sha = _hash_from(anchor.get(key, None) if key in anchor else None)
        if key in anchor and anchor.get(key) is None:  # a bare attribute: offered, no hash
            offered = True
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        files.append(IndexFile(filename, url, sha256, offered, metadata_sha))
    return files


def _from_json(page: Response) -> list[IndexFile]:
    try:
        data = json.loads(page.body)
        entries = data["files"]
        if not isinstance(entries, list):
            raise TypeError(f"files is {type(entries).__name__}, not a list")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser goes.
        raise FetchError(f"{page.url}: not a PEP 691 project page ({exc!r})") from None
    files = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            continue
        try:
            joined = urljoin(page.url, entry["url"])
        except ValueError:
            continue  # not a URL ("http://[" is an invalid IPv6 host): not a file
        url, fragment_sha = _split_fragment(joined)
        hashes = entry.get("hashes") or {}
        sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
        value = entry.get("core-metadata", entry.get("dist-info-metadata"))
        offered, metadata_sha = _hash_from(value)
        if value is True:
            offered = True
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        sha256 = sha256 if isinstance(sha256, str) else None
        files.append(IndexFile(filename, url, sha256 or fragment_sha, offered, metadata_sha))
    return files


def project_files(http: Http, registry: str, project: str) -> list[IndexFile]:
    """The files of ``project``'s page on the index whose simple API root is ``registry``."""
    url = f"{registry.rstrip('/')}/{project}/"
    page = http.get(url, {"Accept": ACCEPT_INDEX}, kind="index page")
    content_type = page.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == PEP_691_JSON:
        return _from_json(page)
    if content_type in ("text/html", "application/vnd.pypi.simple.v1+html"):
        return _from_html(page)
    raise FetchError(
        f"{page.url} answered {content_type or 'no content type'}, not an index page "
        "(HTML or PEP 691 JSON): is this URL a simple index?"
    )


def fetch_metadata_file(http: Http, file: IndexFile) -> bytes:
    """The PEP 658 metadata file, its hash verified when the index gave one."""
    answer = http.get(file.url + ".metadata", kind="metadata file")
    content_type = answer.headers.get("content-type", "").lower()
    if content_type.startswith("text/html") or answer.body.lstrip()[:1] == b"<":
        raise FetchError(f"{answer.url} answered an HTML page, not the wheel's metadata")
    if file.metadata_sha256 is not None:
        digest = hashlib.sha256(answer.body).hexdigest()
        if digest != file.metadata_sha256:
            raise FetchError(
                f"{answer.url}: sha256 {digest} is not the {file.metadata_sha256} the index "
                "page gives; refused (a changed or corrupted file)"
            )
    return answer.body


# --- Reading one member of a remote zip -------------------------------------------------------


# Bytes one wheel's range reads may fetch: a real wheel's central directory and METADATA
# (torch's: ~2 MB) many times over.
RANGE_BUDGET = 32 * 1024 * 1024


class RangeFile(io.RawIOBase):
    """A remote file read through HTTP range requests, in blocks, for ``zipfile``.

    ``zipfile`` seeks to the end for the central directory, then to the member it
    extracts: a wheel's METADATA costs two or three requests of ``block`` bytes. Each
    answer may carry one block, and one wheel at most ``budget`` bytes in all (a zip
    whose central directory never ends is stopped there, not read into memory).
    """

    def __init__(
        self,
        http: Http,
        url: str,
        size: int | None,
        block: int = 64 * 1024,
        budget: int = RANGE_BUDGET,
    ) -> None:
        super().__init__()
        self.http = http
        self.url = url
        self.block = block
        self.budget = budget
        self.fetched = 0
        self.blocks: dict[int, bytes] = {}
        self.position = 0
        self.size = size if size is not None else self._probe_size()

    def _get(self, byte_range: str) -> Response:
        if self.fetched >= self.budget:
            raise FetchError(
                f"{public_url(self.url)}: {_size(self.fetched)} read through range requests "
                "without reaching the wheel's METADATA; stopped (not a usual wheel)"
            )
        answer = self.http.get(
            self.url, {"Range": byte_range}, kind="range block", cap=self.block, partial=True
        )
        self.fetched += len(answer.body)
        return answer

    def _probe_size(self) -> int:
        # The last block: its Content-Range says the whole size.
        answer = self._get(f"bytes=-{self.block}")
        total = self._total(answer)
        start = total - len(answer.body)
        if start % self.block == 0:
            self.blocks[start // self.block] = answer.body
        return total

    def _total(self, answer: Response) -> int:
        if answer.status != 206:
            raise FetchError(
                f"{public_url(self.url)}: the server does not answer range requests "
                f"(HTTP {answer.status})"
            )
        match = re.fullmatch(r"bytes \d+-\d+/(\d+)", answer.headers.get("content-range", ""))
        if match is None:
            raise FetchError(f"{public_url(self.url)}: no usable Content-Range in the answer")
        return int(match.group(1))

    def _block(self, number: int) -> bytes:
        if number not in self.blocks:
            start = number * self.block
            end = min(self.size, start + self.block) - 1
            answer = self._get(f"bytes={start}-{end}")
            total = self._total(answer)
            if total != self.size:
                raise FetchError(
                    f"{public_url(self.url)}: the file on the index has {total} bytes, "
                    f"uv.lock records {self.size}: truncated or replaced"
                )
            self.blocks[number] = answer.body
        return self.blocks[number]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), max(0, self.size - self.position))
        out = bytearray()
        while len(out) < wanted:
            number, offset = divmod(self.position + len(out), self.block)
            data = self._block(number)[offset:]
            if not data:
                break
            out += data[: wanted - len(out)]
        buffer[: len(out)] = out
        self.position += len(out)
        return len(out)
