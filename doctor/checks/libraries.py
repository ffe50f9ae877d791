"""Do torch's CUDA libraries resolve, load, and come from the wheels torch pins?

Catalogue section B: a soname no wheel provides, an older copy found first through
LD_LIBRARY_PATH / LD_PRELOAD / the system cache (`undefined symbol:
__nvJitLinkComplete_12_4, version libnvJitLink.so.12`), a library that kills its process.
The facts come from the ELF files (what the loader should do) and from a contained
process that loaded them (what it did).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.facts import DistributionFacts
from doctor.facts.libraries import (
    CudaLibraryFacts,
    LibrariesFacts,
    LoadedLibraryFacts,
    Resolution,
    ResolvedDependency,
)
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge.cuda_libraries import driver_sonames, wheel_cuda_major
from doctor.knowledge.loader_errors import cannot_open, undefined_symbol, version_not_found
from doctor.remedies import drop_entries, reinstall_command

__all__ = [
    "CudaLibsInLoaderPath",
    "CudaWheelsElsewhere",
    "LibraryLoadFailed",
    "LibraryNotFound",
    "LibraryShadowed",
    "LibraryVersionMismatch",
]

REQUIRES = ("torch", "cuda-build", "libraries")
SUBLIBRARY_STAGE = "cudnn sub-library"  # the load probe's stage for cuDNN's sub-libraries
LOADER_VARIABLES = (Resolution.LD_LIBRARY_PATH, Resolution.LD_PRELOAD)

# How an outside copy gets in ahead of the wheel's (the loader-path variables and the system).
OUTSIDE = (Resolution.LD_PRELOAD, Resolution.LD_LIBRARY_PATH, Resolution.CACHE, Resolution.DEFAULT)
# The loader's messages (doctor/knowledge/loader_errors.toml). In dlerror's text the
# undefined symbol's object comes first: UNDEFINED_SYMBOL.match, not .search.
UNDEFINED_SYMBOL = undefined_symbol()
VERSION_NOT_FOUND = version_not_found()
CANNOT_OPEN = cannot_open()


def _actual(row: CudaLibraryFacts) -> tuple[str | None, str, ResolvedDependency | None]:
    """Where the library came from, and whether the load probe (or the ELF model) says so."""
    if row.load is not None and row.load.path:
        return row.load.path, "loaded", row.resolved
    if row.resolved is not None and row.resolved.path:
        return row.resolved.path, "resolves", row.resolved
    return None, "", row.resolved


def _libraries(ctx: Context) -> LibrariesFacts:
    # Every check here requires "libraries": the runner skipped it when there are none.
    assert ctx.facts.libraries is not None
    return ctx.facts.libraries


def _is_driver(soname: str) -> bool:
    return soname in driver_sonames()


def _not_found(row: CudaLibraryFacts) -> bool:
    """The ELF model resolves the soname nowhere, or the loader said it cannot open it."""
    if row.resolved is not None and row.resolved.how == Resolution.NOT_FOUND:
        return True
    error = row.load.error if row.load is not None else None
    return error is not None and f"{row.soname}: cannot open shared object file" in error


def _outside_parent(
    libraries: LibrariesFacts, row: CudaLibraryFacts, ctx: Context
) -> CudaLibraryFacts | None:
    """For a sub-library the load probe looked for beside its parent (cuDNN's, as cuDNN
    does): the parent row, when that parent was loaded from outside torch's wheels."""
    if row.load is None or row.load.stage != SUBLIBRARY_STAGE:
        return None
    for parent in libraries.cuda:
        if parent.soname.startswith("libcudnn.so") and parent.path:
            pinned = ctx.pinned_wheels(parent.soname)
            if pinned and parent.owner not in pinned:
                return parent
    return None


def entry_text(entry: str | None) -> str:
    """A search path entry for the reader: ld.so reads an empty one as the working directory."""
    return entry if entry else "'' (empty: the working directory)"


def _via(how: str | None, entry: str | None) -> str:
    """The subject of "found through this loader-variable entry" (LD_PRELOAD:/opt/x.so)."""
    return f"{how}:{entry}"


def _how_text(how: str | None, entry: str | None) -> str:
    if how in LOADER_VARIABLES:
        return f"the {how} entry {entry_text(entry)}"
    if how == Resolution.CACHE:
        return "the system's ld.so cache"
    return str(how)


# --- cuda-wheels-elsewhere ---------------------------------------------------------------------


@dataclass(frozen=True)
class WheelElsewhere:
    name: str
    version: str
    location: str  # the site directory that holds it (symlinks resolved)


@dataclass(frozen=True)
class CudaWheelsElsewhere(Payload):
    torch_location: str  # torch's site directory (symlinks resolved)
    wheels: tuple[WheelElsewhere, ...]
    beside_torch: tuple[str, ...]  # torch's CUDA library wheels installed in its directory
    # The site directories of the inspected interpreter itself (a lib and lib64 venv has two).
    own_site_dirs: tuple[str, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(w.name for w in self.wheels)


def _real_location(dist: DistributionFacts) -> str:
    return dist.real_location or dist.location


@check(
    "cuda-wheels-elsewhere",
    severities=(Severity.WARNING,),
    family="libraries",
    summary="torch's CUDA wheels are installed in another site-packages directory than torch, "
    "where the RPATH of torch's libraries does not look.",
    label="torch's CUDA wheels are installed beside torch",
    payload=CudaWheelsElsewhere,
    # RPATH is the ELF loader's; Windows finds torch's DLLs by other rules.
    requires=("linux", "torch", "cuda-build", "expectations"),
)
def cuda_wheels_elsewhere(ctx: Context) -> Outcome:
    torch, expected = ctx.torch, ctx.expected
    assert torch is not None and expected is not None  # required above
    home = _real_location(torch)
    away: list[WheelElsewhere] = []
    beside: list[str] = []
    for name in dict.fromkeys(w.name for w in expected.cuda):  # torch's and cuda-toolkit's
        if wheel_cuda_major(name) is None:
            continue  # no CUDA library of torch's in it (cuda-toolkit, triton)
        copies = ctx.facts.distributions_named(name)
        if not copies:
            continue  # missing-cuda-wheel's case
        if any(_real_location(copy) == home for copy in copies):
            beside.append(name)
            continue
        away.append(WheelElsewhere(copies[0].name, copies[0].version, _real_location(copies[0])))
    if not away:
        return []
    interpreter = ctx.facts.interpreter
    own = (
        interpreter.real_site_dirs or (interpreter.purelib, interpreter.platlib)
        if interpreter is not None
        else ()
    )
    evidence = [f"{ctx.torch_label} is installed in {home}"]
    for place in dict.fromkeys(w.location for w in away):
        here = [f"{w.name} {w.version}" for w in away if w.location == place]
        evidence.append(f"installed in {place}: {', '.join(here)}")
    evidence.append(
        f"torch's libraries look for them in {home}/nvidia/…/lib only (their RPATH is "
        "$ORIGIN/../../nvidia/…/lib)"
    )
    return [
        Finding(
            id="cuda-wheels-elsewhere",
            severity=Severity.WARNING,
            title=(
                f"{len(away)} of torch's CUDA wheels are installed in another directory than torch"
                if len(away) > 1
                else f"{away[0].name} is installed in another directory than torch"
            ),
            detail=(
                "torch's libraries find the CUDA libraries of the wheels it pins through RPATH "
                "entries relative to themselves (site-packages/torch/lib/../../nvidia/<package>/"
                "lib), so those wheels must sit in the same site-packages directory as torch. "
                "Here they do not. `import torch` then works only as far as torch's own "
                "fallback reaches (when libtorch_global_deps.so fails to load, torch preloads a "
                "fixed list of CUDA libraries from sys.path): a copy the system registers (the "
                "ld.so cache, LD_LIBRARY_PATH) is found first, and when the fallback does not "
                "run, or for a library outside its list, the library is not found at all "
                "(`libcudnn.so.9: cannot open shared object file`). "
                "Typical causes: a venv with separate lib and lib64 site-packages (Fedora, RHEL, "
                "venvs made by some IDEs), PYTHONPATH or a .pth file that stacks environments, "
                "a venv with --system-site-packages."
            ),
            evidence=tuple(evidence),
            data=CudaWheelsElsewhere(
                torch_location=home,
                wheels=tuple(away),
                beside_torch=tuple(beside),
                own_site_dirs=tuple(own),
            ),
        )
    ]


@remedy("cuda-wheels-elsewhere")
def _cuda_wheels_elsewhere(finding: Finding[CudaWheelsElsewhere], ctx: Context) -> list[Remedy]:
    data = finding.data
    home = data.torch_location
    places = sorted({w.location for w in data.wheels})
    if home not in data.own_site_dirs:
        return [
            Remedy(
                RemedyKind.TEXT,
                "install torch into this environment",
                f"torch itself comes from {home}, which is not a site-packages directory of "
                "this interpreter (PYTHONPATH, a .pth file or --system-site-packages puts it on "
                "sys.path). Install torch and its CUDA wheels into this environment, or drop "
                "that directory from sys.path.",
            )
        ]
    if all(place in data.own_site_dirs for place in places):
        # This venv's own lib and lib64 site-packages: the installer puts each wheel where
        # its Root-Is-Purelib says, so a reinstall splits them again. A link joins them.
        quoted_home = shlex.quote(f"{home}/nvidia")
        if not data.beside_torch and len(places) == 1:
            text = f"ln -sT {shlex.quote(places[0] + '/nvidia')} {quoted_home}\n"
        else:
            text = f"mkdir -p {quoted_home}\n" + "".join(
                f"for d in {shlex.quote(place + '/nvidia')}/*/; do "
                f'ln -sT "${{d%/}}" {quoted_home}/"$(basename "$d")"; done\n'
                for place in places
            )
        return [
            Remedy(
                RemedyKind.SHELL,
                "link the CUDA wheels' directory beside torch, where its RPATH looks (this "
                "venv has two site-packages; the installers keep working through the link)",
                text,
            )
        ]
    outside = ", ".join(p for p in places if p not in data.own_site_dirs)
    return [
        Remedy(
            RemedyKind.TEXT,
            "install the CUDA wheels beside torch",
            f"{outside} is not a site-packages directory of this interpreter (PYTHONPATH, a "
            ".pth file or --system-site-packages puts it on sys.path). Install torch's CUDA "
            "wheels into this environment (below), then drop that directory from sys.path "
            "if nothing else needs it.",
        ),
        *_reinstall(ctx, [w.name for w in data.wheels], "reinstall the pinned wheels beside torch"),
    ]


# --- library-not-found ----------------------------------------------------------------------


@dataclass(frozen=True)
class MissingLibrary:
    soname: str
    needed_by: tuple[str, ...]
    wheels: tuple[str, ...]  # the wheels that ship it, torch's pin first
    installed: tuple[str, ...]  # those of them that are installed


@dataclass(frozen=True)
class LibraryNotFound(Payload):
    missing: tuple[MissingLibrary, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(m.wheels[0] if m.wheels else m.soname for m in self.missing)


@check(
    "library-not-found",
    severities=(Severity.ERROR,),
    family="libraries",
    summary="A CUDA library torch needs resolves nowhere: no installed wheel provides it here.",
    label="every CUDA library torch needs resolves",
    payload=LibraryNotFound,
    requires=REQUIRES,
    caused_by=(
        "missing-cuda-wheel",
        "cuda-wheel-files-missing",
        "library-shadowed",
        "cuda-wheels-elsewhere",
    ),
)
def library_not_found(ctx: Context) -> Outcome:
    libraries = _libraries(ctx)
    if not libraries.cuda:
        return Skip("torch's libraries name no CUDA library")
    missing: list[MissingLibrary] = []
    evidence = []
    for row in libraries.cuda:
        if _is_driver(row.soname):
            continue  # the driver's library: judged by the driver checks
        if (row.load is not None and row.load.loaded) or not _not_found(row):
            continue
        wheels = ctx.providing_wheels(row.soname)
        item = MissingLibrary(
            soname=row.soname,
            needed_by=tuple(row.needed_by),
            wheels=tuple(wheels),
            installed=tuple(w for w in wheels if ctx.facts.distribution(w) is not None),
        )
        missing.append(item)
        wheel = item.wheels[0] if item.wheels else "an NVIDIA wheel"
        parent = _outside_parent(libraries, row, ctx)
        if parent is not None:
            # cuDNN looks for its sub-libraries beside itself: a copy from elsewhere looks
            # there, whatever the wheel holds.
            evidence.append(
                f"{item.soname}: cuDNN loads it from its own directory, and the "
                f"{parent.soname} in use was loaded from {parent.path}, outside torch's "
                f"wheels, which has no {item.soname}"
            )
            continue
        state = "installed, but without this file" if item.installed else "not installed"
        evidence.append(
            f"{item.soname}: needed by {', '.join(item.needed_by)}; "
            f"no RPATH, LD_LIBRARY_PATH, RUNPATH, ld.so cache or default directory holds it; "
            f"it should come from {wheel} ({state})"
        )
    if not missing:
        return []
    names = ", ".join(m.soname for m in missing)
    return [
        Finding(
            id="library-not-found",
            severity=Severity.ERROR,
            title=f"{names} cannot be found by the loader",
            detail=(
                "torch's libraries need these CUDA libraries, and the dynamic loader finds "
                "them nowhere it looks (torch's RPATH into site-packages/nvidia/…/lib, "
                "LD_LIBRARY_PATH, the ld.so cache, the default directories). `import torch` "
                "fails with `<soname>: cannot open shared object file: No such file or "
                "directory`, or the feature that loads it later does."
            ),
            evidence=tuple(evidence),
            data=LibraryNotFound(missing=tuple(missing)),
        )
    ]


@remedy("library-not-found")
def _library_not_found(finding: Finding[LibraryNotFound], ctx: Context) -> list[Remedy]:
    wheels = [m.wheels[0] for m in finding.data.missing if m.wheels]
    return _reinstall(ctx, wheels, "install the wheels that ship these libraries")


# --- library-load-failed ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadCause:
    """Which copy of a soname a failed symbol lookup met first, and why."""

    soname: str
    symbol: str | None
    object: str
    how: str
    entry: str | None
    path: str
    expected_path: str | None
    owner: str | None


@dataclass(frozen=True)
class LoadFailure:
    soname: str
    requested: str
    stage: str | None
    error: str | None
    crashed_signal: str | None
    timed_out: bool
    wheels: tuple[str, ...]  # the wheels that ship the failing library, torch's pin first
    cause: LoadCause | None
    cause_wheels: tuple[str, ...]


@dataclass(frozen=True)
class LibraryLoadFailed(Payload):
    failures: tuple[LoadFailure, ...]
    torch_import_error: str | None

    def subjects(self) -> frozenset[str]:
        subjects: set[str] = set()
        for failure in self.failures:
            subjects.add(failure.wheels[0] if failure.wheels else failure.soname)
            cause = failure.cause
            if cause is not None and cause.how in LOADER_VARIABLES:
                subjects.add(_via(cause.how, cause.entry))
            elif failure.cause_wheels:
                subjects.add(failure.cause_wheels[0])
        return frozenset(subjects)


def _cause(libraries: LibrariesFacts, load: LoadedLibraryFacts) -> LoadCause | None:
    error = load.error or ""
    match = UNDEFINED_SYMBOL.match(error) or VERSION_NOT_FOUND.search(error)
    if match is None or match.group("object") is None:
        return None
    version = match.groupdict().get("version")
    # The load probe resolved the object the error names (symlinks, torch/lib/../..);
    # facts without it (built by hand) name it as the loader wrote it.
    failing = load.error_object or match.group("object")
    if not version:
        return None
    resolved: ResolvedDependency | None = None
    for obj in libraries.objects:
        if obj.path == failing:
            resolved = next((d for d in obj.dependencies if d.soname == version), None)
            break
    if resolved is None:
        row = libraries.library(version)
        resolved = row.resolved if row is not None else None
    if resolved is None or resolved.path is None:
        return None
    return LoadCause(
        soname=version,
        symbol=match.groupdict().get("symbol"),
        object=failing,
        how=resolved.how,
        entry=resolved.entry,
        path=resolved.path,
        expected_path=resolved.expected_path,
        owner=resolved.owner,
    )


@check(
    "library-load-failed",
    severities=(Severity.ERROR,),
    family="libraries",
    summary="A CUDA library torch loads fails to load, crashes or hangs when loaded.",
    label="torch's CUDA libraries load",
    payload=LibraryLoadFailed,
    requires=(*REQUIRES, "load-probe"),
    caused_by=(
        "library-not-found",
        "missing-cuda-wheel",
        "library-shadowed",
        "mixed-cuda-majors",
        "cuda-wheels-elsewhere",
    ),
)
def library_load_failed(ctx: Context) -> Outcome:
    libraries = _libraries(ctx)
    probe = libraries.load_probe
    assert probe is not None
    failures: list[LoadFailure] = []
    seen: set[tuple[str, str]] = set()
    loaded = {row.soname for row in libraries.cuda if row.load is not None and row.load.loaded}
    for load in libraries.loads:
        if load.loaded or (load.error is None and not load.crashed_signal and not load.timed_out):
            continue
        if load.soname in loaded and not (load.crashed_signal or load.timed_out):
            continue  # torch's own flow loaded it afterwards
        # A load fails because of the object the loader names first (libtorch_global_deps
        # fails because its NEEDED libcusparse does), or the soname it cannot open.
        named = UNDEFINED_SYMBOL.match(load.error or "")
        missing = CANNOT_OPEN.search(load.error or "")
        if named:
            subject = os.path.basename(named.group("object"))
        elif missing:
            subject = missing.group("path")
        else:
            subject = load.soname
        # The same failure reached by two paths (torch/lib/../../nvidia/… and nvidia/…) is one.
        what = (
            f"{named.group('symbol')}@{named.group('version')}"
            if named
            else load.error or load.crashed_signal or str(load.timed_out)
        )
        if (subject, what) in seen:
            continue
        seen.add((subject, what))
        cause = _cause(libraries, load)
        failures.append(
            LoadFailure(
                soname=subject,
                requested=load.requested,
                stage=load.stage,
                error=load.error,
                crashed_signal=load.crashed_signal,
                timed_out=bool(load.timed_out),
                wheels=tuple(ctx.providing_wheels(subject)),
                cause=cause,
                cause_wheels=tuple(ctx.providing_wheels(cause.soname)) if cause else (),
            )
        )
    if not failures:
        return []
    evidence = []
    for item in failures:
        if item.crashed_signal:
            evidence.append(
                f"{item.soname}: loading {item.requested} killed the process with "
                f"{item.crashed_signal} (a constructor in it or its dependencies)"
            )
        elif item.timed_out:
            evidence.append(
                f"{item.soname}: loading {item.requested} did not finish within the "
                "time limit (a constructor in it or its dependencies hangs)"
            )
        else:
            evidence.append(f"{item.soname}: {item.error}")
        cause = item.cause
        if cause is not None:
            line = f"cause: {cause.soname} was found first through "
            line += f"{_how_text(cause.how, cause.entry)}: {cause.path}"
            if cause.expected_path and cause.expected_path != cause.path:
                line += f", ahead of the wheel's copy {cause.expected_path}"
            evidence.append(line)
    if probe.torch_import_error:
        evidence.append(f"`import torch` would stop here with {probe.torch_import_error}")
    first = failures[0]
    title = (
        f"{first.soname} fails to load"
        if len(failures) == 1
        else f"{len(failures)} CUDA libraries fail to load"
    )
    return [
        Finding(
            id="library-load-failed",
            severity=Severity.ERROR,
            title=title,
            detail=(
                "A contained process of this interpreter loaded torch's CUDA libraries the "
                "way torch/__init__.py does (without importing torch) and the loader refused "
                "these, or loading them killed or hung the process. The loader's own message "
                "is quoted; an `undefined symbol …, version libX.so.N` means an older copy of "
                "libX was found before the one the wheel was built against."
            ),
            evidence=tuple(evidence),
            data=LibraryLoadFailed(
                failures=tuple(failures), torch_import_error=probe.torch_import_error
            ),
        )
    ]


@remedy("library-load-failed")
def _library_load_failed(finding: Finding[LibraryLoadFailed], ctx: Context) -> list[Remedy]:
    failures = finding.data.failures
    causes = [f.cause for f in failures if f.cause is not None]
    remedies = _env_remedies(ctx, ((c.how, c.entry) for c in causes))
    if any(c.how == Resolution.CACHE for c in causes):
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "a system copy is registered with ldconfig",
                "Install the wheel torch pins for it (below) so its RPATH/RUNPATH finds that "
                "copy first, or remove the system package that registered the old one.",
            )
        )
    wheels = [f.wheels[0] for f in failures if f.wheels]
    wheels += [f.cause_wheels[0] for f in failures if f.cause_wheels]
    summary = "then reinstall the pinned wheels" if remedies else "reinstall the pinned wheels"
    remedies += _reinstall(ctx, wheels, summary)
    return remedies


# --- library-shadowed ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowedLibrary:
    soname: str
    path: str
    how: str | None  # how the loader found the outside copy (None: not what the model says)
    entry: str | None
    expected_path: str | None
    expected_wheels: tuple[str, ...]
    verb: str  # "loaded" (the load probe saw it) or "resolves" (the ELF model says so)
    # A cuDNN sub-library loaded beside an outside libcudnn.so (cuDNN opens them from its
    # own directory): the parent's soname. Dropping the parent's entry fixes it too.
    beside: str | None = None


@dataclass(frozen=True)
class LibraryShadowed(Payload):
    shadowed: tuple[ShadowedLibrary, ...]

    def subjects(self) -> frozenset[str]:
        subjects = {s.expected_wheels[0] for s in self.shadowed if s.expected_wheels}
        subjects |= {_via(s.how, s.entry) for s in self.shadowed if s.how in LOADER_VARIABLES}
        return frozenset(subjects)


@check(
    "library-shadowed",
    severities=(Severity.WARNING,),
    family="libraries",
    summary="A CUDA library is loaded from outside the wheel torch pins (LD_LIBRARY_PATH, "
    "LD_PRELOAD, the system).",
    label="CUDA libraries come from torch's wheels",
    payload=LibraryShadowed,
    requires=REQUIRES,
    caused_by=("cuda-wheels-elsewhere",),
)
def library_shadowed(ctx: Context) -> Outcome:
    rows = _libraries(ctx).cuda
    if not any(row.path for row in rows):
        return Skip("no CUDA library torch needs was found or loaded")
    shadowed: list[ShadowedLibrary] = []
    for row in rows:
        if _is_driver(row.soname):
            continue
        path, verb, resolved = _actual(row)
        if path is None:
            continue
        wheels = ctx.pinned_wheels(row.soname)
        if not wheels:
            continue  # torch pins no wheel for it: a system CUDA is where it belongs
        if row.owner is not None and row.owner in wheels:
            continue
        expected = resolved.expected_path if resolved is not None else None
        if expected is not None and expected == path:
            # Exactly the file torch's own search takes (its preload globs nvidia/cublas/lib
            # before nvidia/cu13/lib): nothing is shadowed. A wheel of another CUDA major
            # left there is mixed-cuda-majors'; torch needs another soname of it.
            continue
        how = resolved.how if resolved is not None else None
        if verb == "loaded" and resolved is not None and resolved.path != path:
            how = None  # the loader took another way than the model: say only where
        parent = _outside_parent(_libraries(ctx), row, ctx)
        shadowed.append(
            ShadowedLibrary(
                soname=row.soname,
                path=path,
                how=how,
                entry=resolved.entry if resolved is not None and how else None,
                expected_path=expected,
                expected_wheels=tuple(wheels),
                verb=verb,
                beside=parent.soname if parent is not None else None,
            )
        )
    if not shadowed:
        return []
    evidence = []
    for item in shadowed:
        line = f"{item.soname}: {item.verb} from {item.path}"
        if item.how in OUTSIDE:
            line += f" (through {_how_text(item.how, item.entry)})"
        elif item.beside:
            line += f" (cuDNN opens it beside {item.beside})"
        line += "; expected "
        line += item.expected_path or f"the file from {item.expected_wheels[0]}"
        evidence.append(line)
    names = ", ".join(s.soname for s in shadowed)
    return [
        Finding(
            id="library-shadowed",
            severity=Severity.WARNING,
            title=f"{names} {'is' if len(shadowed) == 1 else 'are'} loaded from outside "
            "torch's wheels",
            detail=(
                "torch was built and tested against the CUDA libraries of the wheels it "
                "pins. A copy from elsewhere (a system CUDA toolkit through LD_LIBRARY_PATH, "
                "an LD_PRELOAD, the ld.so cache) wins here; a different version gives "
                "`undefined symbol` errors, `cuDNN version incompatibility`, or wrong results."
            ),
            evidence=tuple(evidence),
            data=LibraryShadowed(shadowed=tuple(shadowed)),
        )
    ]


@remedy("library-shadowed")
def _library_shadowed(finding: Finding[LibraryShadowed], ctx: Context) -> list[Remedy]:
    items = finding.data.shadowed
    remedies = _env_remedies(ctx, ((i.how, i.entry) for i in items if i.how))
    # A sub-library beside an outside parent goes with the parent: nothing to reinstall.
    parents = {i.soname for i in items}
    outside_env = [i for i in items if i.how not in LOADER_VARIABLES and i.beside not in parents]
    wheels = [i.expected_wheels[0] for i in outside_env if i.expected_wheels]
    remedies += _reinstall(ctx, wheels, "install the pinned wheels so torch finds their copy")
    return remedies


# --- library-version-mismatch -------------------------------------------------------------------


@dataclass(frozen=True)
class MismatchedLibrary:
    soname: str
    version: str
    version_api: str | None
    path: str | None
    wheel: str
    expected: str


@dataclass(frozen=True)
class LibraryVersionMismatch(Payload):
    mismatched: tuple[MismatchedLibrary, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(m.wheel for m in self.mismatched)


def _version_parts(text: str) -> tuple[int, ...] | None:
    try:
        return Version(text).release
    except InvalidVersion:
        return None


@check(
    "library-version-mismatch",
    severities=(Severity.ERROR,),
    family="libraries",
    summary="A loaded CUDA library reports a version other than the wheel torch pins.",
    label="loaded CUDA libraries are the versions torch pins",
    payload=LibraryVersionMismatch,
    requires=(*REQUIRES, "load-probe"),
    caused_by=(
        "cuda-wheel-version-mismatch",
        "library-shadowed",
        "mixed-cuda-majors",
        "cuda-wheels-elsewhere",
    ),
)
def library_version_mismatch(ctx: Context) -> Outcome:
    rows = _libraries(ctx).cuda
    if not any(row.load is not None and row.load.version for row in rows):
        # A pass would claim versions were compared.
        return Skip("no loaded CUDA library reported its version")
    mismatched: list[MismatchedLibrary] = []
    for row in rows:
        load = row.load
        if load is None or not load.version:
            continue
        loaded = _version_parts(load.version)
        for wheel in ctx.pinned_wheels(row.soname):
            reference = ctx.pinned_version(wheel)
            expected = _version_parts(reference) if reference else None
            if loaded is None or expected is None or reference is None:
                continue
            if expected[: len(loaded)] != loaded:
                mismatched.append(
                    MismatchedLibrary(
                        soname=row.soname,
                        version=load.version,
                        version_api=load.version_api,
                        path=load.path,
                        wheel=wheel,
                        expected=reference,
                    )
                )
            break
    if not mismatched:
        return []
    evidence = [
        f"{m.soname} reports {m.version} ({m.version_api}), loaded from {m.path}; "
        f"torch pins {m.wheel} {m.expected}"
        for m in mismatched
    ]
    return [
        Finding(
            id="library-version-mismatch",
            severity=Severity.ERROR,
            title=", ".join(f"{m.soname} is {m.version}" for m in mismatched)
            + " (not torch's pin)",
            detail=(
                "Asked through its own API, the library that was really loaded reports a "
                "version other than the wheel torch pins. torch checks some of these at run "
                "time (`cuDNN version incompatibility: PyTorch was compiled against …`); "
                "others fail with missing symbols or wrong results."
            ),
            evidence=tuple(evidence),
            data=LibraryVersionMismatch(mismatched=tuple(mismatched)),
        )
    ]


@remedy("library-version-mismatch")
def _library_version_mismatch(
    finding: Finding[LibraryVersionMismatch], ctx: Context
) -> list[Remedy]:
    items = finding.data.mismatched
    pairs = []
    libraries = ctx.facts.libraries
    for item in items:
        row = libraries.library(item.soname) if libraries is not None else None
        resolved = row.resolved if row is not None else None
        if resolved is not None and resolved.path == item.path and resolved.entry is not None:
            pairs.append((resolved.how, resolved.entry))
    remedies = _env_remedies(ctx, pairs)
    remedies += _reinstall(ctx, [i.wheel for i in items], "reinstall the pinned versions")
    return remedies


# --- cuda-libs-in-loader-path ------------------------------------------------------------------


@dataclass(frozen=True)
class LoaderPathEntry:
    variable: str
    entry: str
    cuda_files: tuple[str, ...]


@dataclass(frozen=True)
class CudaLibsInLoaderPath(Payload):
    entries: tuple[LoaderPathEntry, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(_via(e.variable, e.entry) for e in self.entries)


@check(
    "cuda-libs-in-loader-path",
    severities=(Severity.WARNING,),
    family="libraries",
    summary="LD_LIBRARY_PATH or LD_PRELOAD holds CUDA libraries that can shadow torch's wheels.",
    label="LD_LIBRARY_PATH and LD_PRELOAD hold no CUDA libraries",
    payload=CudaLibsInLoaderPath,
    requires=REQUIRES,
    caused_by=("library-shadowed", "library-load-failed"),
)
def cuda_libs_in_loader_path(ctx: Context) -> Outcome:
    entries = [e for e in _libraries(ctx).loader_path if e.cuda_files]
    if not entries:
        return []
    evidence = []
    for entry in entries:
        files = ", ".join(entry.cuda_files[:8])
        more = len(entry.cuda_files) - 8
        if more > 0:
            files += f" and {more} more"
        evidence.append(f"{entry.variable} entry {entry_text(entry.entry)} holds {files}")
    return [
        Finding(
            id="cuda-libs-in-loader-path",
            severity=Severity.WARNING,
            title="the loader's search path holds CUDA libraries from outside the venv",
            detail=(
                "torch's wheels bring their own CUDA libraries. An LD_LIBRARY_PATH entry is "
                "searched before the RUNPATH of the NVIDIA libraries (libcusparse finds "
                "libnvJitLink there first) and an LD_PRELOAD library replaces any copy; "
                "either can put an older CUDA library in torch's process. A venv with "
                "torch's wheels needs neither."
            ),
            evidence=tuple(evidence),
            data=CudaLibsInLoaderPath(
                entries=tuple(
                    LoaderPathEntry(e.variable, e.entry, tuple(e.cuda_files)) for e in entries
                )
            ),
        )
    ]


@remedy("cuda-libs-in-loader-path")
def _loader_path(finding: Finding[CudaLibsInLoaderPath], ctx: Context) -> list[Remedy]:
    return _env_remedies(ctx, ((e.variable, e.entry) for e in finding.data.entries))


# --- remedy pieces shared by this family ---------------------------------------------------------


def _env_remedies(ctx: Context, pairs: Iterable[tuple[str | None, str | None]]) -> list[Remedy]:
    by_variable: dict[str, list[str]] = {}
    for variable, entry in pairs:
        # An empty entry ("") is one too: ld.so searches the working directory for it.
        if (
            variable in LOADER_VARIABLES
            and variable is not None
            and entry is not None
            and entry not in by_variable.get(variable, [])
        ):
            by_variable.setdefault(variable, []).append(entry)
    return [drop_entries(ctx, v, e) for v, e in by_variable.items()]


def _reinstall(ctx: Context, wheels: Sequence[str], summary: str) -> list[Remedy]:
    unique = list(dict.fromkeys(w for w in wheels if w))
    if not unique:
        return []
    return [Remedy(RemedyKind.SHELL, summary, reinstall_command(ctx, unique))]
