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
import hashlib
import io
import json
import netrc
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from doctor.facts import IndexFacts

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
    """A request failed; the message is safe to show (no credentials) and names the cause."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    host: str  # sent only to this host


def public_url(url: str) -> str:
    """The URL without user information (what may be shown)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
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


class Http:
    """GET requests with a timeout, credentials for their host and plain-spoken errors."""

    def __init__(
        self, timeout: float, indexes: Sequence[IndexFacts], environ: Mapping[str, str]
    ) -> None:
        self.timeout = timeout
        self.indexes = tuple(indexes)
        self.environ = dict(environ)
        self.requests = 0

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> Response:
        shown = public_url(url)
        parts = urlsplit(url)
        request = urllib.request.Request(shown, headers=dict(headers or {}))
        credentials = find_credentials(url, self.indexes, self.environ)
        if credentials is not None and credentials.host == (parts.hostname or ""):
            token = f"{credentials.username}:{credentials.password}".encode()
            # Unredirected: a redirect to another host (a CDN) never carries them.
            request.add_unredirected_header(
                "Authorization", "Basic " + base64.b64encode(token).decode()
            )
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                body = answer.read()
                return Response(
                    url=public_url(answer.geturl()),
                    status=answer.status,
                    headers={k.lower(): v for k, v in answer.headers.items()},
                    body=body,
                )
        except urllib.error.HTTPError as exc:
            hint = ""
            if exc.code in (401, 403):
                hint = (
                    " (credentials: the index URL, UV_INDEX_<NAME>_USERNAME/PASSWORD or "
                    "netrc, as uv reads them; none were accepted)"
                    if credentials
                    else " (no credentials found for this index: set them in the index URL, "
                    "UV_INDEX_<NAME>_USERNAME/PASSWORD or netrc, as for uv)"
                )
            raise FetchError(f"HTTP {exc.code} {exc.reason} from {shown}{hint}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise FetchError(f"timed out after {self.timeout:g} s: {shown}") from None
            text = getattr(reason, "strerror", None) or str(reason)
            raise FetchError(f"cannot reach {shown}: {text}") from None
        except (socket.timeout, TimeoutError):
            raise FetchError(f"timed out after {self.timeout:g} s: {shown}") from None
        except (OSError, ValueError) as exc:
            raise FetchError(f"cannot read {shown}: {exc}") from None


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
    page = http.get(url, {"Accept": ACCEPT_INDEX})
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
    answer = http.get(file.url + ".metadata")
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


class RangeFile(io.RawIOBase):
    """A remote file read through HTTP range requests, in blocks, for ``zipfile``.

    ``zipfile`` seeks to the end for the central directory, then to the member it
    extracts: a wheel's METADATA costs two or three requests of ``block`` bytes.
    """

    def __init__(self, http: Http, url: str, size: int | None, block: int = 64 * 1024) -> None:
        super().__init__()
        self.http = http
        self.url = url
        self.block = block
        self.blocks: dict[int, bytes] = {}
        self.position = 0
        self.size = size if size is not None else self._probe_size()

    def _probe_size(self) -> int:
        # The last block: its Content-Range says the whole size.
        answer = self.http.get(self.url, {"Range": f"bytes=-{self.block}"})
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
            answer = self.http.get(self.url, {"Range": f"bytes={start}-{end}"})
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
