"""Read a file from the inspected environment without blocking and within a size cap.

A FIFO where ``pyproject.toml`` should be blocks ``open()`` for ever; ``/dev/zero`` behind a
symlink is read until the kernel kills the reader. So a file is opened only when it is a
regular file (a symlink to one is fine), with ``O_NONBLOCK``, and read up to its kind's cap.
Failures are :class:`UnreadableFile` with a message naming the file and the reason: the
probes report it as "could not inspect". (doctor/probe/inside.py has its own stdlib copy
of these rules: it runs in the inspected interpreter.)
"""

from __future__ import annotations

import os
import stat

__all__ = ["CAPS", "UnreadableFile", "check_regular", "read_capped"]

# Bytes per kind of file: far above any real one, far below what hurts.
CAPS = {
    "pyproject.toml": 4 * 1024 * 1024,
    "uv.lock": 64 * 1024 * 1024,
    "INSTALLER": 4096,
    "RECORD": 64 * 1024 * 1024,  # as the inside probe reads it (doctor/probe/inside.py)
    "direct_url.json": 1024 * 1024,  # a URL and a hash, or a VCS commit
    "Python source": 4 * 1024 * 1024,  # a module read for what it does (triton's driver.py)
    "report": 32 * 1024 * 1024,  # a `check --format json` report, for compare
    # A wheel's core metadata (torch lock's cache, index, wheel): its headers are ~30 kB.
    "METADATA": 8 * 1024 * 1024,
    "dpkg status": 64 * 1024 * 1024,  # /var/lib/dpkg/status: every installed package
    "system file": 1024 * 1024,  # a one-line file under /etc, /proc or /sys
}


class UnreadableFile(OSError):
    """Not a regular file, too large, or unreadable; the message says which."""


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _size(cap: int) -> str:
    if cap >= 1024 * 1024:
        return f"{cap // (1024 * 1024)} MiB"
    return f"{cap // 1024} KiB" if cap >= 1024 else f"{cap} bytes"


def check_regular(path: str) -> int:
    """The size of ``path`` if it is a regular file (following symlinks), else raise."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile(f"{path}: is {_kind_of(info.st_mode)}, not a regular file")
    return info.st_size


def read_capped(path: str, kind: str) -> bytes:
    """The bytes of a regular file of at most ``CAPS[kind]`` bytes; else UnreadableFile."""
    cap = CAPS[kind]
    check_regular(path)
    try:
        # O_NONBLOCK: if it was swapped for a FIFO after the stat, open does not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(f"{path}: is {_kind_of(mode)}, not a regular file")
        chunks = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, min(1024 * 1024, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except UnreadableFile:
        raise
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if size > cap:
        raise UnreadableFile(f"{path}: larger than the {_size(cap)} a {kind} may be; not read")
    return b"".join(chunks)
