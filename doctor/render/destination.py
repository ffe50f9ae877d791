"""Where ``--output`` writes: placeholders for per-node reports, and an atomic write.

``srun torch-doctor check --format json --output reports/{host}.json`` runs on every
node at once: each expands the placeholders from its own host name and launcher ids, and
writes a temporary file beside the target then renames it, so a reader (``compare``)
never sees half a report and two writers never interleave.
"""

from __future__ import annotations

import contextlib
import os
import socket
import string
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PLACEHOLDERS", "PlaceholderError", "expand_output", "write_atomically"]

# Launcher ids usable as {NAME}: each must be set when used, or files would collide.
LAUNCHER_PLACEHOLDERS = ("SLURM_PROCID", "SLURM_NODEID", "SLURM_LOCALID", "RANK", "LOCAL_RANK")
# {rank}: the global rank, from whichever launcher set one.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
PLACEHOLDERS = ("host", "rank", *LAUNCHER_PLACEHOLDERS)


class PlaceholderError(ValueError):
    """An --output template that cannot be expanded here (a usage error)."""


def expand_output(
    template: str, environ: Mapping[str, str] | None = None, host: str | None = None
) -> str:
    """``template`` with ``{host}``, ``{rank}`` and the launcher ids filled in
    (``{{`` and ``}}`` are literal braces)."""
    env = os.environ if environ is None else environ
    pieces: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PlaceholderError(f"--output {template}: {exc}") from exc
    for literal, name, spec, conversion in parsed:
        pieces.append(literal)
        if name is None:
            continue
        if spec or conversion:
            raise PlaceholderError(f"--output {template}: write {{{name}}} without a format")
        pieces.append(_value(template, name, env, host))
    return "".join(pieces)


def _value(template: str, name: str, env: Mapping[str, str], host: str | None) -> str:
    if name == "host":
        return (host if host is not None else socket.gethostname()).split(".", 1)[0]
    if name == "rank":
        rank = next((env[v] for v in RANK_VARIABLES if env.get(v)), None)
        if rank is None:
            raise PlaceholderError(
                f"--output {template}: {{rank}} needs one of {', '.join(RANK_VARIABLES)} "
                "(set by torchrun, srun or mpirun); none is set"
            )
        return _safe(rank)
    if name in LAUNCHER_PLACEHOLDERS:
        if not env.get(name):
            raise PlaceholderError(f"--output {template}: {{{name}}} is not set here")
        return _safe(env[name])
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    raise PlaceholderError(f"--output {template}: unknown placeholder {{{name}}} (known: {known})")


def _safe(value: str) -> str:
    # A variable's value becomes part of a file name: no directory separators.
    return value.replace("/", "_")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in ``path``'s directory, then rename it over
    ``path``: readers see the old file or the whole new one. The directory must exist
    (a missing one is more likely a typo than a wish)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
