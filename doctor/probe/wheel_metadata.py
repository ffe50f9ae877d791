"""The core metadata of every wheel uv.lock records for the checked packages.

For each wheel, in this order: the on-disk cache (keyed by the wheel's sha256 from
uv.lock, so a second run makes no request); the PEP 658/714 metadata file when the
index offers it (its hash verified when the index gives one); the wheel's
``*.dist-info/METADATA`` read through HTTP range requests; and, only when asked
(``--download``), the whole wheel, verified against uv.lock's sha256. Any failure is
recorded on the wheel with its reason; nothing raises past this module.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from packaging.metadata import parse_email
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from doctor.derive.wheel_tags import tag_system
from doctor.facts import IndexFacts
from doctor.facts.lock_metadata import LockedWheel, WheelMetadata
from doctor.probe.files import CAPS, read_capped
from doctor.probe.index_client import (
    FetchError,
    Http,
    IndexFile,
    RangeFile,
    fetch_metadata_file,
    project_files,
    public_url,
)
from doctor.probe.text import clean

__all__ = ["CACHE_ENV", "MetadataCache", "ReadOptions", "platform_of", "read_wheel_metadata"]

CACHE_ENV = "TORCH_DOCTOR_CACHE_DIR"
# --download: a wheel whose size uv.lock does not record is read up to this many bytes
# (the largest torch wheels are ~2.5 GB), at no less than this many bytes a second.
DOWNLOAD_CAP = 8 * 1024 * 1024 * 1024
DOWNLOAD_FLOOR = 1024 * 1024


class MetadataCache:
    """METADATA files by wheel sha256 under the user cache directory."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        root = environ.get(CACHE_ENV)
        if not root:
            base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            root = str(Path(base) / "torch-doctor")
        self.directory = Path(root) / "wheel-metadata"
        self.write_error: str | None = None

    def _path(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.METADATA"

    def get(self, sha256: str | None) -> bytes | None:
        if sha256 is None:
            return None
        try:
            # A cache file is read like any file the doctor did not write just now:
            # regular, non-blocking, within METADATA's cap. Anything else is a miss.
            return read_capped(str(self._path(sha256)), "METADATA")
        except OSError:
            return None

    def put(self, sha256: str | None, metadata: bytes) -> None:
        if sha256 is None:
            return
        temporary = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                out.write(metadata)
            os.replace(temporary, self._path(sha256))
            temporary = None
        except OSError as exc:
            self.write_error = f"{self.directory}: {exc.strerror or exc}"
        finally:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)


# --- Which platform a wheel serves --------------------------------------------------------

# The tag rules are shared with uv-torch-config (doctor/derive/wheel_tags.py).
_system = tag_system


def _lowest_python(requires_python: str | None) -> str:
    match = re.search(r"(?:>=|==|~=)\s*(\d+)\.(\d+)", requires_python or "")
    return f"{match.group(1)}.{match.group(2)}" if match else "3.9"


def platform_of(
    filename: str, lock_requires_python: str | None
) -> tuple[str, str | None, dict[str, str]] | None:
    """The platform label, Python version and PEP 508 environment a wheel serves.

    The first tag decides (a wheel's tags name one platform family; manylinux aliases
    name the same machine). A platform-independent wheel serves "any" platform; its
    environment is Linux x86_64 only so that markers can be evaluated at all.
    """
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    tag = sorted(tags, key=str)[0]
    python: str | None = None
    match = re.fullmatch(r"(?:cp|pp)(\d)(\d+)", tag.interpreter)
    if match:
        python = f"{match.group(1)}.{match.group(2)}"
    system = _system(tag.platform)
    label = "any" if system is None else f"{system[0]} {system[2]}"
    sys_platform, platform_system, machine, os_name = system or (
        "linux",
        "Linux",
        "x86_64",
        "posix",
    )
    version = python or _lowest_python(lock_requires_python)
    environment = {
        "implementation_name": "cpython",
        "implementation_version": f"{version}.0",
        "os_name": os_name,
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": platform_system,
        "platform_version": "",
        "python_full_version": f"{version}.0",
        "python_version": version,
        "sys_platform": sys_platform,
    }
    return label, python, environment


# --- Reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOptions:
    offline: bool = False
    download: bool = False
    timeout: float = 30.0


@dataclass(frozen=True)
class _Parsed:
    requires_dist: tuple[str, ...]
    requires_python: str | None
    provides_extra: tuple[str, ...]


# Requires-Dist entries a wheel may declare (torch: ~30): past it, not checked.
MAX_REQUIREMENTS = 2000


def _parse(metadata: bytes) -> _Parsed:
    """The fields the check needs, cleaned like any text from outside (an index is)."""
    try:
        raw, _ = parse_email(metadata)
    except Exception as exc:  # the index's bytes: whatever the parser meets
        raise FetchError(f"METADATA cannot be parsed ({type(exc).__name__}: {exc})") from None
    requires = [r for r in raw.get("requires_dist", ()) if isinstance(r, str)]
    if len(requires) > MAX_REQUIREMENTS:
        raise FetchError(
            f"METADATA declares {len(requires)} Requires-Dist entries, more than the "
            f"{MAX_REQUIREMENTS} a wheel may; not checked"
        )
    python = raw.get("requires_python")
    return _Parsed(
        tuple(clean(r) for r in requires),
        clean(python) if isinstance(python, str) else None,
        tuple(clean(e) for e in raw.get("provides_extra", ()) if isinstance(e, str)),
    )


_METADATA_MEMBER = re.compile(r"[^/]+\.dist-info/METADATA")


def _member(archive: zipfile.ZipFile) -> bytes:
    """The wheel's METADATA, decompressed to at most its cap (a zip bomb is refused by
    the size its directory declares, and cut at the cap if that size lies)."""
    cap = CAPS["METADATA"]
    members = [i for i in archive.infolist() if _METADATA_MEMBER.fullmatch(i.filename)]
    if len(members) != 1:
        raise FetchError(f"the wheel has {len(members)} *.dist-info/METADATA files, not one")
    [member] = members
    too_large = (
        f"{member.filename} is larger than the {cap // (1024 * 1024)} MiB METADATA may be; "
        "not decompressed (a zip bomb?)"
    )
    if member.file_size > cap:
        raise FetchError(too_large)
    with archive.open(member) as stream:
        data = stream.read(cap + 1)
    if len(data) > cap:
        raise FetchError(too_large)
    return data


def _read_zip(source: IO[bytes] | io.RawIOBase, what: str) -> bytes:
    try:
        with zipfile.ZipFile(source) as archive:
            return _member(archive)
    except FetchError:
        raise
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{what} is not a complete wheel (zip: {exc}); truncated?") from None
    except (zlib.error, EOFError) as exc:
        raise FetchError(f"{what}: METADATA cannot be decompressed ({exc})") from None
    except Exception as exc:  # a hostile zip: encrypted, unknown compression, bad fields
        raise FetchError(f"{what}: not a readable wheel ({type(exc).__name__}: {exc})") from None


def _size_text(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size} bytes"


class _Reader:
    def __init__(
        self,
        options: ReadOptions,
        http: Http,
        cache: MetadataCache,
        say: Callable[[str], None],
    ) -> None:
        self.options = options
        self.http = http
        self.cache = cache
        self.say = say
        self.pages: dict[tuple[str, str], list[IndexFile] | FetchError] = {}

    def _page_file(self, wheel: LockedWheel) -> IndexFile | None:
        if wheel.registry is None:
            return None
        key = (wheel.registry, wheel.package)
        if key not in self.pages:
            try:
                self.pages[key] = project_files(self.http, wheel.registry, wheel.package)
            except FetchError as exc:
                self.pages[key] = exc
        page = self.pages[key]
        if isinstance(page, FetchError):
            raise page
        for file in page:
            if file.filename == wheel.filename:
                return file
        return None

    def read(self, wheel: LockedWheel) -> tuple[bytes, str]:
        cached = self.cache.get(wheel.sha256)
        if cached is not None:
            return cached, "cache"
        if self.options.offline:
            raise FetchError("not in the cache (--offline: no request made)")
        if not wheel.url.startswith(("http://", "https://")):
            raise FetchError(f"{wheel.url}: not an HTTP(S) URL")
        file = self._page_file(wheel)
        missing_file = None
        if file is not None and file.metadata:
            try:
                return fetch_metadata_file(self.http, file), "metadata-file"
            except FetchError as exc:
                # A metadata file the page promises but the index does not have (404, 410):
                # the wheel may still be there, read as if no file were offered. Any other
                # failure (a hash that does not match, a server error) stays the answer.
                if exc.status not in (404, 410):
                    raise
                missing_file = str(exc)
        try:
            return _read_zip(RangeFile(self.http, wheel.url, wheel.size), wheel.filename), "range"
        except FetchError as range_error:
            if not self.options.download:
                if missing_file is not None:
                    raise FetchError(
                        f"{missing_file}; reading the wheel itself failed too: {range_error} "
                        "(--download reads the whole wheel)"
                    ) from None
                raise FetchError(
                    f"{range_error}; the index offers no metadata file for it "
                    "(--download reads the whole wheel)"
                ) from None
        self.say(f"downloading {wheel.filename} ({_size_text(wheel.size)}): --download")
        # To a temporary file (a wheel can be gigabytes), at most the size uv.lock records,
        # within --timeout plus a second per MB.
        cap = wheel.size if wheel.size is not None else DOWNLOAD_CAP
        seconds = self.options.timeout + cap / DOWNLOAD_FLOOR
        with tempfile.TemporaryFile(prefix="torch-doctor-wheel-") as sink:
            limit = (
                f"the {wheel.size} bytes uv.lock records"
                if wheel.size is not None
                else f"the {DOWNLOAD_CAP // 1024**3} GiB a wheel may be"
            )
            size, digest = self.http.download(
                wheel.url, sink, cap=cap, limit=limit, seconds=seconds
            )
            if wheel.size is not None and size != wheel.size:
                raise FetchError(
                    f"{public_url(wheel.url)}: {size} bytes, uv.lock records {wheel.size}; "
                    "refused (a truncated or changed wheel)"
                )
            if wheel.sha256 is not None and digest != wheel.sha256:
                raise FetchError(
                    f"{public_url(wheel.url)}: sha256 {digest} is not the {wheel.sha256} "
                    "uv.lock records; refused (a truncated, changed or corrupted wheel)"
                )
            sink.seek(0)
            return _read_zip(sink, wheel.filename), "download"


def read_wheel_metadata(
    wheels: Sequence[LockedWheel],
    *,
    lock_requires_python: str | None,
    indexes: Sequence[IndexFacts],
    environ: Mapping[str, str],
    options: ReadOptions,
    say: Callable[[str], None] = lambda _: None,
    serves: Callable[[dict[str, str]], str | None] = lambda _: None,
    reading: Callable[[str], None] = lambda _: None,
) -> tuple[list[WheelMetadata], MetadataCache]:
    """Every wheel's metadata (or why not). ``serves`` says why a wheel is never
    installed by the lock (then it is not read at all)."""
    cache = MetadataCache(environ)
    reader = _Reader(options, Http(options.timeout, indexes, environ), cache, say)
    results = []
    for wheel in wheels:
        platform = platform_of(wheel.filename, lock_requires_python)
        if platform is None:
            results.append(
                WheelMetadata(wheel, "?", None, error=f"{wheel.filename}: not a wheel file name")
            )
            continue
        label, python, environment = platform
        skipped = serves(environment) if label != "any" else None
        if skipped is not None:
            results.append(WheelMetadata(wheel, label, python, environment, skipped=skipped))
            continue
        # What the progress line names while a request is slow (an index that hangs).
        host = urlsplit(public_url(wheel.url)).netloc or public_url(wheel.url)
        reading(f"{host} ({wheel.package} {wheel.version}, {label})")
        try:
            metadata, via = reader.read(wheel)
            parsed = _parse(metadata)
        except FetchError as exc:
            results.append(WheelMetadata(wheel, label, python, environment, error=str(exc)))
            continue
        if via != "cache":
            cache.put(wheel.sha256, metadata)
        results.append(
            WheelMetadata(
                wheel,
                label,
                python,
                environment,
                via=via,
                requires_dist=parsed.requires_dist,
                requires_python=parsed.requires_python,
                provides_extra=parsed.provides_extra,
            )
        )
    return results, cache
