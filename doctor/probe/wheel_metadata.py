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
import hashlib
import io
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.metadata import parse_email
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from doctor.facts import IndexFacts
from doctor.facts.lock_metadata import LockedWheel, WheelMetadata
from doctor.probe.index_client import (
    FetchError,
    Http,
    IndexFile,
    RangeFile,
    fetch_metadata_file,
    project_files,
    public_url,
)

__all__ = ["CACHE_ENV", "MetadataCache", "ReadOptions", "platform_of", "read_wheel_metadata"]

CACHE_ENV = "TORCH_DOCTOR_CACHE_DIR"


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
            return self._path(sha256).read_bytes()
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

_LINUX = re.compile(r"(?:many|musl)?linux(?:_\d+_\d+|1|2010|2014)?_(?P<arch>.+)")
_MACOS = re.compile(r"macosx_\d+_\d+_(?P<arch>.+)")
_WINDOWS = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}
_MAC_ARCH = {"universal2": "arm64", "intel": "x86_64"}


def _system(platform_tag: str) -> tuple[str, str, str, str] | None:
    """(sys_platform, platform_system, platform_machine, os_name) of a platform tag."""
    if platform_tag in _WINDOWS:
        return "win32", "Windows", _WINDOWS[platform_tag], "nt"
    match = _LINUX.fullmatch(platform_tag)
    if match:
        return "linux", "Linux", match.group("arch"), "posix"
    match = _MACOS.fullmatch(platform_tag)
    if match:
        arch = _MAC_ARCH.get(match.group("arch"), match.group("arch"))
        return "darwin", "Darwin", arch, "posix"
    return None


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


def _parse(metadata: bytes) -> _Parsed:
    raw, _ = parse_email(metadata)
    return _Parsed(
        tuple(raw.get("requires_dist", ())),
        raw.get("requires_python"),
        tuple(raw.get("provides_extra", ())),
    )


_METADATA_MEMBER = re.compile(r"[^/]+\.dist-info/METADATA")


def _member(archive: zipfile.ZipFile) -> bytes:
    names = [n for n in archive.namelist() if _METADATA_MEMBER.fullmatch(n)]
    if len(names) != 1:
        raise FetchError(f"the wheel has {len(names)} *.dist-info/METADATA files, not one")
    return archive.read(names[0])


def _read_zip(source: io.IOBase | io.BytesIO, what: str) -> bytes:
    try:
        with zipfile.ZipFile(source) as archive:
            return _member(archive)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{what} is not a complete wheel (zip: {exc}); truncated?") from None
    except (zlib.error, EOFError) as exc:
        raise FetchError(f"{what}: METADATA cannot be decompressed ({exc})") from None


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
        if file is not None and file.metadata:
            return fetch_metadata_file(self.http, file), "metadata-file"
        try:
            return _read_zip(RangeFile(self.http, wheel.url, wheel.size), wheel.filename), "range"
        except FetchError as range_error:
            if not self.options.download:
                raise FetchError(
                    f"{range_error}; the index offers no metadata file for it "
                    "(--download reads the whole wheel)"
                ) from None
        self.say(f"downloading {wheel.filename} ({_size_text(wheel.size)}): --download")
        body = self.http.get(wheel.url).body
        if wheel.sha256 is not None:
            digest = hashlib.sha256(body).hexdigest()
            if digest != wheel.sha256:
                raise FetchError(
                    f"{public_url(wheel.url)}: sha256 {digest} is not the {wheel.sha256} "
                    "uv.lock records; refused (a truncated, changed or corrupted wheel)"
                )
        return _read_zip(io.BytesIO(body), wheel.filename), "download"


def read_wheel_metadata(
    wheels: Sequence[LockedWheel],
    *,
    lock_requires_python: str | None,
    indexes: Sequence[IndexFacts],
    environ: Mapping[str, str],
    options: ReadOptions,
    say: Callable[[str], None] = lambda _: None,
    serves: Callable[[dict[str, str]], str | None] = lambda _: None,
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
