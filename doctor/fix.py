"""`torch-doctor fix`: apply the remedies that are edits to the project's pyproject.toml.

Only TOML remedies with a ``target`` are applied (today the
``[[tool.uv.dependency-metadata]]`` entry of lock-missing-dependencies; index and
sources blocks from later checks merge the same way). The edit goes through tomlkit so
the user's comments, order and formatting survive; the diff is shown; nothing is written
without a yes (``--yes``, or an answer on a terminal); the write is atomic and the
original is kept as a backup. Running it twice changes nothing the second time.

How the file is written:
- a symlinked pyproject.toml (dotfile repositories do this) keeps its link: the link's
  target is replaced, by an atomic rename next to the target;
- line endings (CRLF) and a UTF-8 byte order mark are kept as they were;
- the backup goes to ``.torch-doctor/backups/`` in the project directory, beside a
  ``.gitignore`` of ``*`` so it is never committed by accident; it is created exclusively
  and never through a symlink (a symlinked backup directory is refused, and said).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doctor.findings import Finding, Remedy, RemedyKind
from doctor.report import EXIT_DOCTOR_FAILED, EXIT_OK, Report

__all__ = [
    "BACKUP_DIRECTORY",
    "FixError",
    "FixOptions",
    "PlannedEdit",
    "apply_blocks",
    "backup_path",
    "follow_up_commands",
    "plan_edits",
    "run_fix",
    "write_atomically",
]

# How entries of an array of tables are told apart: same identity -> update in place.
# dependency-metadata: uv reads one entry per (name, version); indexes are named.
IDENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "dependency-metadata": ("name", "version"),
    "index": ("name",),
}
DEFAULT_IDENTITY = ("name",)
# [tool.uv] lists of package names: a block adds its names, never drops the user's (two
# extensions to rebuild are two blocks naming one package each, not a disagreement).
NAME_LISTS = frozenset({"no-build-isolation-package", "no-binary-package"})
# Where backups go, relative to the directory of the edited file (the project).
BACKUP_DIRECTORY = Path(".torch-doctor") / "backups"
UTF8_BOM = b"\xef\xbb\xbf"


class FixError(Exception):
    """fix cannot go on; the message says why and what was (not) changed. Exit 2."""


@dataclass(frozen=True)
class FixOptions:
    yes: bool = False
    dry_run: bool = False
    sync: bool = False


@dataclass(frozen=True)
class PlannedEdit:
    target: Path
    remedies: tuple[tuple[Finding[Any], Remedy], ...]
    before: str  # with "\n" line ends and no BOM: the file is written back in its own
    after: str
    newline: str = "\n"  # "\r\n" when the file used CRLF
    bom: bool = False

    def encoded(self) -> bytes:
        """``after`` as the file's own bytes: its line ends, its BOM."""
        text = self.after.replace("\n", self.newline) if self.newline != "\n" else self.after
        return (UTF8_BOM if self.bom else b"") + text.encode("utf-8")

    @property
    def changes(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        name = self.target.name
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"a/{name}",
                tofile=f"b/{name}",
            )
        )


# --- The merge (pure: text in, text out) ----------------------------------------------------


def _plain(value: Any) -> Any:
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _normal(name: Any) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(str(name))


def _same_identity(existing: Any, new: Any, keys: Sequence[str]) -> bool:
    from packaging.version import InvalidVersion, Version

    for key in keys:
        a, b = _plain(existing.get(key)), _plain(new.get(key))
        if key == "name":
            if _normal(a) != _normal(b):
                return False
        elif key == "version" and a is not None and b is not None:
            try:
                if Version(str(a)) != Version(str(b)):
                    return False
            except InvalidVersion:
                if a != b:
                    return False
        elif a != b:
            return False
    return True


class _Merger:
    def __init__(self) -> None:
        self.changed = False
        # What this run's earlier blocks set, by key path: a later block that sets the
        # same key to something else means the remedies disagree.
        self._set_by_block: dict[tuple[str, ...], tuple[int, Any]] = {}
        self.block = 0

    def _record(self, path: tuple[str, ...], value: Any) -> None:
        earlier = self._set_by_block.get(path)
        plain = _plain(value)
        if earlier is not None and earlier[0] != self.block and earlier[1] != plain:
            raise FixError(
                f"two remedies set `{'.'.join(path)}` differently; nothing was changed. "
                "Apply the one you choose by hand (see `torch-doctor`)."
            )
        self._set_by_block[path] = (self.block, plain)

    def record(self, source: Any, path: tuple[str, ...] = ()) -> None:
        """Note every plain value a block sets (entries of arrays of tables are matched
        by identity instead, so they cannot disagree)."""
        from tomlkit.items import AoT, Table

        for key, value in source.items():
            if isinstance(value, Table):
                self.record(value, (*path, key))
            elif not isinstance(value, AoT) and key not in NAME_LISTS:
                self._record((*path, key), value)

    def table(self, target: Any, source: Any) -> None:
        from tomlkit.items import AoT

        for key, value in source.items():
            if key not in target:
                if isinstance(value, AoT):
                    for entry in value:
                        _end_with_blank_line(entry)
                target[key] = value
                self.changed = True
                continue
            current = target[key]
            if isinstance(value, AoT):
                self.array_of_tables(key, current, value)
            elif isinstance(value, dict) and isinstance(current, dict):
                # Tables, inline or not, merge key by key: the user's other keys stay.
                self.table(current, value)
            elif key in NAME_LISTS and isinstance(current, list) and isinstance(value, list):
                for name in value:
                    if _plain(name) not in _plain(current):
                        current.append(name)
                        self.changed = True
            elif _plain(current) != _plain(value):
                target[key] = value
                self.changed = True

    def array_of_tables(self, key: str, current: Any, new: Any) -> None:
        import tomlkit
        from tomlkit.items import AoT, Array

        if not isinstance(current, (AoT, Array, list)):
            raise FixError(
                f"`{key}` in pyproject.toml is not an array of tables; torch-doctor will not "
                "rewrite it. Apply the block by hand."
            )
        identity = IDENTITY_KEYS.get(key, DEFAULT_IDENTITY)
        for entry in new:
            match = next((e for e in current if _same_identity(e, entry, identity)), None)
            if match is not None:
                # uv uses the first entry for a name and version: update it, never add a twin.
                for field, value in entry.items():
                    if field not in match or _plain(match[field]) != _plain(value):
                        match[field] = value
                        self.changed = True
                continue
            if isinstance(current, AoT):
                if len(current):
                    _end_with_blank_line(current[-1])
                _end_with_blank_line(entry)
                current.append(entry)
            else:  # an inline array of inline tables: keep the user's style
                inline = tomlkit.inline_table()
                inline.update(entry.unwrap())
                current.append(inline)
            self.changed = True


def _end_with_blank_line(table: Any) -> None:
    import tomlkit

    if not table.as_string().endswith("\n\n"):
        table.add(tomlkit.nl())


def apply_blocks(text: str, blocks: Sequence[str], name: str = "pyproject.toml") -> str:
    """``text`` with every TOML block merged in; ``text`` itself when nothing changes."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        document = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise FixError(
            f"{name} is not valid TOML ({exc}); torch-doctor left it untouched. "
            "Fix the syntax error, then run `torch-doctor fix` again."
        ) from exc
    merger = _Merger()
    for number, block in enumerate(blocks):
        merger.block = number
        try:
            addition = tomlkit.parse(block)
        except TOMLKitError as exc:  # a defect of a remedy builder, not of the user's file
            raise FixError(
                f"a remedy block is not valid TOML ({exc}); nothing was changed"
            ) from exc
        try:
            merger.record(addition)
            merger.table(document, addition)
        except (TypeError, ValueError, KeyError) as exc:
            raise FixError(
                f"{name} has a structure torch-doctor cannot merge into ({exc}); "
                "nothing was changed. Apply the block by hand."
            ) from exc
    if not merger.changed:
        return text
    out = tomlkit.dumps(document)
    return out.rstrip("\n") + "\n"


# --- Planning and writing ---------------------------------------------------------------------


def plan_edits(report: Report) -> list[PlannedEdit]:
    """One edit per target file, holding every TOML remedy for it."""
    by_target: dict[str, list[tuple[Finding[Any], Remedy]]] = {}
    for finding in report.findings:
        for remedy in finding.remedies:
            if remedy.kind is RemedyKind.TOML and remedy.target:
                by_target.setdefault(remedy.target, []).append((finding, remedy))
    edits = []
    for target, remedies in by_target.items():
        path = Path(target)
        before, newline, bom = _read_text(path)
        # Several findings often carry the same block (one index choice): apply it once.
        blocks = list(dict.fromkeys(r.text for _, r in remedies))
        after = apply_blocks(before, blocks, name=str(path))
        edits.append(PlannedEdit(path, tuple(remedies), before, after, newline, bom))
    return edits


def _read_text(path: Path) -> tuple[str, str, bool]:
    """The file's text with "\n" line ends, its line end, and whether it had a BOM."""
    from doctor.probe.files import UnreadableFile, read_capped

    if path.is_dir():
        raise FixError(f"{path} is a directory, not a file; nothing was changed")
    if not path.exists():
        raise FixError(
            f"{path} does not exist: `torch-doctor fix` edits an existing project's "
            "pyproject.toml (run it in the uv project, or pass --project DIR); "
            "nothing was changed"
        )
    try:
        raw = read_capped(str(path), "pyproject.toml")
    except UnreadableFile as exc:
        raise FixError(f"{exc}; nothing was changed") from exc
    bom = raw.startswith(UTF8_BOM)
    try:
        text = raw[len(UTF8_BOM) :].decode("utf-8") if bom else raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FixError(f"{path} cannot be read (not UTF-8 text); nothing was changed") from exc
    newline = "\r\n" if "\r\n" in text and text.count("\r\n") >= text.count("\n") / 2 else "\n"
    return text.replace("\r\n", "\n"), newline, bom


def _backup_directory(project: Path) -> Path:
    """``.torch-doctor/backups`` in ``project``, made if missing, with a ``.gitignore`` of
    ``*``; never through a symlink (refused, and said)."""
    directory = project
    for part in BACKUP_DIRECTORY.parts:
        directory = directory / part
        if directory.is_symlink():
            raise FixError(
                f"{directory} is a symlink; torch-doctor does not write its backup through "
                "a symlink. Remove it (or make it a directory); nothing was changed."
            )
        try:
            directory.mkdir(mode=0o755, exist_ok=True)
        except OSError as exc:
            raise FixError(
                f"cannot create {directory} for the backup: {exc.strerror or exc}; "
                "nothing was changed"
            ) from exc
        if not directory.is_dir() or directory.is_symlink():
            raise FixError(f"{directory} is not a directory; nothing was changed")
    ignore = project / BACKUP_DIRECTORY.parts[0] / ".gitignore"
    with contextlib.suppress(FileExistsError):
        _create_exclusively(ignore, b"# torch-doctor's backups: never committed\n*\n")
    return directory


def _create_exclusively(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a new file; FileExistsError if the name is taken (by a dangling symlink too:
    O_EXCL never follows one)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    finally:
        if fd >= 0:
            os.close(fd)


def backup_path(target: Path) -> Path:
    """The first backup name for ``target``: ``.torch-doctor/backups/<name>.<UTC time>.bak``
    in the directory that holds ``target`` (a later taken name gets a counter)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return target.parent / BACKUP_DIRECTORY / f"{target.name}.{stamp}.bak"


def _write_backup(target: Path, data: bytes, mode: int) -> Path:
    directory = _backup_directory(target.parent)
    first = backup_path(target)
    candidate = directory / first.name
    for n in range(1, 1000):
        try:
            _create_exclusively(candidate, data, mode)
            return candidate
        except FileExistsError:
            candidate = directory / f"{first.stem}-{n}.bak"
        except OSError as exc:
            raise FixError(
                f"cannot write the backup {candidate}: {exc.strerror or exc}; nothing was changed"
            ) from exc
    raise FixError(f"no free backup name in {directory}; nothing was changed")


def _check_writable(target: Path) -> None:
    # The file's own mode counts even for root: a read-only pyproject.toml says "hands
    # off", and root would otherwise write through it.
    try:
        mode = target.stat().st_mode
    except OSError as exc:
        raise FixError(f"{target}: {exc.strerror}; nothing was changed") from exc
    if not mode & 0o222 or not os.access(target, os.W_OK):
        raise FixError(
            f"{target} is read-only; nothing was changed. Make it writable "
            f"(chmod u+w {target}) or apply the diff by hand."
        )
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise FixError(
            f"{target.parent} is not writable (the new file goes there); nothing was changed."
        )


def write_atomically(target: Path, data: bytes | str) -> Path:
    """Back up ``target``, then replace it in one step. Returns the backup's path.

    A symlink is kept: its target is what is replaced (the new file is made next to the
    target and renamed over it). The backup holds the original bytes."""
    real = Path(os.path.realpath(target))
    _check_writable(real)
    mode = real.stat().st_mode & 0o7777
    new = data.encode("utf-8") if isinstance(data, str) else data
    from doctor.probe.files import UnreadableFile, read_capped

    try:
        original = read_capped(str(real), "pyproject.toml")
    except UnreadableFile as exc:
        raise FixError(f"{exc}; nothing was changed") from exc
    backup = _write_backup(Path(os.path.abspath(target)), original, mode)
    temporary: str | None = None
    try:
        handle, temporary = tempfile.mkstemp(
            dir=real.parent, prefix=f".{real.name}.", suffix=".tmp"
        )
        with os.fdopen(handle, "wb") as out:
            out.write(new)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, real)
        temporary = None
    except OSError as exc:
        raise FixError(
            f"could not write {real}: {exc.strerror or exc}; the original is unchanged"
        ) from exc
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return backup


# --- The command ----------------------------------------------------------------------------


def _ask(question: str, stdin: IO[str], stdout: IO[str]) -> bool:
    stdout.write(f"{question} [y/N] ")
    stdout.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def follow_up_commands(edits: Sequence[PlannedEdit]) -> list[str]:
    """The uv commands the edited-for findings ask for next: their shell remedies after
    the pyproject.toml edit (the ones before it are alternatives to the edit)."""
    commands: list[str] = []
    for edit in edits:
        for finding, _ in edit.remedies:
            edited = False
            for remedy in finding.remedies:
                edited = edited or remedy.kind is RemedyKind.TOML
                if remedy.kind is not RemedyKind.SHELL or not edited:
                    continue
                for line in remedy.text.splitlines():
                    line = line.strip()
                    if line.startswith("uv ") and line not in commands:
                        commands.append(line)
    return commands or ["uv lock", "uv sync"]


def _run_uv(commands: Sequence[str], project: Path, out: IO[str]) -> int:
    uv = shutil.which("uv")
    if uv is None:
        out.write("torch-doctor: uv is not on PATH; run these yourself:\n")
        out.writelines(f"  {c}\n" for c in commands)
        return EXIT_DOCTOR_FAILED
    for command in commands:
        out.write(f"$ {command}\n")
        out.flush()
        argv = [uv, *shlex.split(command)[1:]]
        result = subprocess.run(argv, cwd=project, check=False)
        if result.returncode != 0:
            out.write(
                f"torch-doctor: `{command}` failed (exit {result.returncode}); "
                f"pyproject.toml keeps the edit, the backup is in {BACKUP_DIRECTORY}.\n"
            )
            return EXIT_DOCTOR_FAILED
    return EXIT_OK


def run_fix(
    report: Report,
    options: FixOptions,
    *,
    stdin: IO[str] = sys.stdin,
    stdout: IO[str] = sys.stdout,
) -> int:
    edits = plan_edits(report)
    if not edits and report.facts.interpreter is None:
        reasons = "; ".join(f.reason for f in report.facts.failures) or "unknown reason"
        raise FixError(f"the environment could not be inspected ({reasons}); nothing was changed")
    if not edits:
        stdout.write("Nothing to change in pyproject.toml: no finding needs an edit there.\n")
        _other_steps(report, stdout)
        return EXIT_OK
    pending = [e for e in edits if e.changes]
    for edit in edits:
        if not edit.changes:
            stdout.write(f"{edit.target}: already up to date; nothing to change.\n")
    if not pending:
        # The edit is in place, the lock may not be (a `fix` without --sync before): --sync
        # still runs what comes after the edit.
        if options.sync and not options.dry_run:
            return _run_uv(follow_up_commands(edits), edits[0].target.parent, stdout)
        _next_steps(report, follow_up_commands(edits), stdout)
        return EXIT_OK
    for edit in pending:
        ids = ", ".join(sorted({f.id for f, _ in edit.remedies}))
        stdout.write(f"Proposed change to {edit.target} (for {ids}):\n")
        stdout.write(edit.diff())
        stdout.write("\n")
    if options.dry_run:
        stdout.write("Dry run: nothing was written.\n")
        return EXIT_OK
    if not options.yes:
        if not stdin.isatty():
            raise FixError(
                "not asking for confirmation without a terminal; nothing was changed. "
                "Re-run with --yes to apply, or --dry-run to only show the diff."
            )
        if not _ask("Apply?", stdin, stdout):
            stdout.write("Nothing was changed.\n")
            return EXIT_OK
    for edit in pending:
        backup = write_atomically(edit.target, edit.encoded())
        where = (
            ""
            if not edit.target.is_symlink()
            else f" (the link's target {os.path.realpath(edit.target)})"
        )
        stdout.write(f"Wrote {edit.target}{where}; the original is kept as {backup}.\n")
    commands = follow_up_commands(pending)
    if options.sync:
        return _run_uv(commands, pending[0].target.parent, stdout)
    _next_steps(report, commands, stdout)
    return EXIT_OK


def _other_steps(report: Report, out: IO[str]) -> None:
    """The commands other findings ask for, so the user knows what is left."""
    for finding in report.findings:
        for remedy in finding.remedies:
            if remedy.kind is RemedyKind.SHELL:
                commands = "; ".join(remedy.text.strip().splitlines())
                out.write(f"{finding.id}: {remedy.summary}: {commands}\n")
    if report.findings:
        out.write("Run `torch-doctor` for the full report.\n")


def _next_steps(report: Report, commands: Sequence[str], out: IO[str]) -> None:
    project = report.facts.project
    where = f" in {project.root}" if project is not None else ""
    out.write(f"Next, run{where} (or use `torch-doctor fix --sync`):\n")
    out.writelines(f"  {c}\n" for c in commands)
