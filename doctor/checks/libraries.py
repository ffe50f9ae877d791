"""Do torch's CUDA libraries resolve, load, and come from the wheels torch pins?

Catalogue section B: a soname no wheel provides, an older copy found first through
LD_LIBRARY_PATH / LD_PRELOAD / the system cache (`undefined symbol:
__nvJitLinkComplete_12_4, version libnvJitLink.so.12`), a library that kills its process.
The facts come from the ELF files (what the loader should do) and from a contained
process that loaded them (what it did).
"""

from __future__ import annotations

import os
import re
from typing import Any

from packaging.version import InvalidVersion, Version

from doctor.checks.expectations import expected_wheels
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts
from doctor.facts.libraries import (
    CudaLibraryFacts,
    LibrariesFacts,
    LoadedLibraryFacts,
    Resolution,
    ResolvedDependency,
)
from doctor.findings import Finding, Severity
from doctor.knowledge.cuda_libraries import cuda_library, driver_sonames, wheel_matches

__all__ = ["pinned_wheels", "providing_wheels", "reference_version"]

# How an outside copy gets in ahead of the wheel's (the loader-path variables and the system).
OUTSIDE = (Resolution.LD_PRELOAD, Resolution.LD_LIBRARY_PATH, Resolution.CACHE, Resolution.DEFAULT)
UNDEFINED_SYMBOL = re.compile(
    r"^(?P<object>[^:]+): undefined symbol: (?P<symbol>[^,\s]+)(?:, version (?P<version>\S+))?"
)
VERSION_NOT_FOUND = re.compile(
    r"version `(?P<version>[^']+)' not found \(required by (?P<object>[^)]+)\)"
)
CANNOT_OPEN = re.compile(r"(?P<soname>[^\s:]+): cannot open shared object file")


def _libraries(facts: Facts) -> Skip | LibrariesFacts:
    if facts.distribution("torch") is None:
        return Skip("torch is not installed")
    if facts.torch is None or not facts.torch.is_cuda_build:
        return Skip("torch is a CPU-only build: it loads no CUDA library")
    if facts.libraries is None:
        failure = facts.failure("libraries")
        return Skip(failure.reason if failure else "torch's libraries could not be inspected")
    return facts.libraries


def _is_driver(soname: str) -> bool:
    return soname in driver_sonames()


def pinned_wheels(facts: Facts, soname: str) -> list[str]:
    """The wheels torch's own requirements name for this soname (none for a torch built
    against a system CUDA, e.g. conda's or a distribution's, which pins no NVIDIA wheel)."""
    library = cuda_library(soname)
    expectations = expected_wheels(facts)
    if library is None or expectations is None:
        return []
    return [
        w.name
        for w in expectations.cuda
        if any(wheel_matches(stem, w.name) for stem in library.wheels)
    ]


def providing_wheels(facts: Facts, soname: str) -> list[str]:
    """The wheels that ship this soname (installed or not), torch's pins first."""
    library = cuda_library(soname)
    if library is None:
        return []
    names = pinned_wheels(facts, soname)
    if not names:
        names = [
            d.name
            for d in facts.distributions
            if not d.shadowed and any(wheel_matches(s, d.name) for s in library.wheels)
        ]
    return names or list(library.wheels)


def reference_version(facts: Facts, wheel: str) -> str | None:
    """The version torch pins exactly for a wheel (``==9.24.0.43``), else the installed one."""
    expectations = expected_wheels(facts)
    if expectations is not None:
        for expected in expectations.cuda:
            spec = expected.specifier
            if expected.name == wheel and spec.startswith("==") and "," not in spec:
                version = spec[2:]
                return version[:-2] if version.endswith(".*") else version
    installed = facts.distribution(wheel)
    return installed.version if installed is not None else None


def _actual(row: CudaLibraryFacts) -> tuple[str | None, str, ResolvedDependency | None]:
    """Where the library came from, and whether the load probe (or the ELF model) says so."""
    if row.load is not None and row.load.path:
        return row.load.path, "loaded", row.resolved
    if row.resolved is not None and row.resolved.path:
        return row.resolved.path, "resolves", row.resolved
    return None, "", row.resolved


def _how(resolved: ResolvedDependency | None) -> str:
    if resolved is None:
        return ""
    if resolved.how in (Resolution.LD_LIBRARY_PATH, Resolution.LD_PRELOAD):
        return f"{resolved.how} entry {entry_text(resolved.entry)}"
    if resolved.how == Resolution.CACHE:
        return "the system's ld.so cache (ldconfig)"
    if resolved.how == Resolution.DEFAULT:
        return f"the loader's default directory {resolved.entry}"
    if resolved.how in (Resolution.RPATH, Resolution.RUNPATH) and resolved.entry_from:
        return f"{resolved.how} {resolved.entry} of {os.path.basename(resolved.entry_from)}"
    return resolved.how


def _not_found(row: CudaLibraryFacts) -> bool:
    """The ELF model resolves the soname nowhere, or the loader said it cannot open it."""
    if row.resolved is not None and row.resolved.how == Resolution.NOT_FOUND:
        return True
    error = row.load.error if row.load is not None else None
    return error is not None and f"{row.soname}: cannot open shared object file" in error


@check(
    "library-not-found",
    family="libraries",
    summary="A CUDA library torch needs resolves nowhere: no installed wheel provides it here.",
    label="every CUDA library torch needs resolves",
)
def library_not_found(facts: Facts) -> Outcome:
    libraries = _libraries(facts)
    if isinstance(libraries, Skip):
        return libraries
    missing: list[dict[str, Any]] = []
    for row in libraries.cuda:
        if _is_driver(row.soname):
            continue  # the driver's library: judged by the driver checks
        if (row.load is not None and row.load.loaded) or not _not_found(row):
            continue
        wheels = providing_wheels(facts, row.soname)
        missing.append(
            {
                "soname": row.soname,
                "needed_by": list(row.needed_by),
                "wheels": wheels,
                "installed": [w for w in wheels if facts.distribution(w) is not None],
            }
        )
    if not missing:
        return []
    evidence = []
    for item in missing:
        wheel = item["wheels"][0] if item["wheels"] else "an NVIDIA wheel"
        state = "installed, but without this file" if item["installed"] else "not installed"
        evidence.append(
            f"{item['soname']}: needed by {', '.join(item['needed_by'])}; "
            f"no RPATH, LD_LIBRARY_PATH, RUNPATH, ld.so cache or default directory holds it; "
            f"it should come from {wheel} ({state})"
        )
    names = ", ".join(m["soname"] for m in missing)
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
            data={"missing": missing},
        )
    ]


def _cause(libraries: LibrariesFacts, load: LoadedLibraryFacts) -> dict[str, Any] | None:
    """Which copy of the soname a failed symbol lookup met first, and why."""
    error = load.error or ""
    match = UNDEFINED_SYMBOL.search(error) or VERSION_NOT_FOUND.search(error)
    if match is None:
        return None
    version = match.groupdict().get("version")
    failing = os.path.realpath(match.group("object"))
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
    return {
        "soname": version,
        "symbol": match.groupdict().get("symbol"),
        "object": failing,
        "how": resolved.how,
        "entry": resolved.entry,
        "path": resolved.path,
        "expected_path": resolved.expected_path,
        "owner": resolved.owner,
    }


@check(
    "library-load-failed",
    family="libraries",
    summary="A CUDA library torch loads fails to load, crashes or hangs when loaded.",
    label="torch's CUDA libraries load",
)
def library_load_failed(facts: Facts) -> Outcome:
    libraries = _libraries(facts)
    if isinstance(libraries, Skip):
        return libraries
    probe = libraries.load_probe
    if probe is None or not probe.ran:
        return Skip("the load probe did not run" + (f" ({probe.skipped_reason})" if probe else ""))
    if probe.error and not libraries.loads:
        return Skip(probe.error)
    failures: list[dict[str, Any]] = []
    explained: set[str] = set()
    seen: set[tuple[str, str]] = set()
    loaded = {row.soname for row in libraries.cuda if row.load is not None and row.load.loaded}
    not_found = {row.soname for row in libraries.cuda if _not_found(row)}
    for load in libraries.loads:
        if load.loaded or (load.error is None and not load.crashed_signal and not load.timed_out):
            continue
        if load.soname in loaded and not (load.crashed_signal or load.timed_out):
            continue  # torch's own flow loaded it afterwards
        missing = CANNOT_OPEN.search(load.error or "")
        if missing and missing.group("soname") in not_found:
            explained.add(missing.group("soname"))
            continue  # not found: library-not-found says it
        # A load fails because of the object the loader names first (libtorch_global_deps
        # fails because its NEEDED libcusparse does): report that object.
        named = UNDEFINED_SYMBOL.search(load.error or "")
        subject = os.path.basename(named.group("object")) if named else load.soname
        # The same failure reached by two paths (torch/lib/../../nvidia/… and nvidia/…) is one.
        what = (
            f"{named.group('symbol')}@{named.group('version')}"
            if named
            else load.error or load.crashed_signal or str(load.timed_out)
        )
        key = (subject, what)
        if key in seen:
            continue
        seen.add(key)
        failures.append(
            {
                "soname": subject,
                "requested": load.requested,
                "stage": load.stage,
                "error": load.error,
                "crashed_signal": load.crashed_signal,
                "timed_out": load.timed_out,
                "cause": _cause(libraries, load),
            }
        )
    if not failures and explained:
        # Not a pass: these did not load, because they are nowhere to be found.
        return Skip(f"{', '.join(sorted(explained))} not found: see library-not-found")
    if not failures:
        return []
    evidence = []
    for item in failures:
        if item["crashed_signal"]:
            evidence.append(
                f"{item['soname']}: loading {item['requested']} killed the process with "
                f"{item['crashed_signal']} (a constructor in it or its dependencies)"
            )
        elif item["timed_out"]:
            evidence.append(
                f"{item['soname']}: loading {item['requested']} did not finish within the "
                "time limit (a constructor in it or its dependencies hangs)"
            )
        else:
            evidence.append(f"{item['soname']}: {item['error']}")
        cause = item["cause"]
        if cause is not None:
            line = f"cause: {cause['soname']} was found first through {_how_text(cause)}: "
            line += cause["path"]
            if cause["expected_path"] and cause["expected_path"] != cause["path"]:
                line += f", ahead of the wheel's copy {cause['expected_path']}"
            evidence.append(line)
    if probe.torch_import_error:
        evidence.append(f"`import torch` would stop here with {probe.torch_import_error}")
    first = failures[0]
    title = (
        f"{first['soname']} fails to load"
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
            data={"failures": failures, "torch_import_error": probe.torch_import_error},
        )
    ]


def entry_text(entry: str | None) -> str:
    """A search path entry for the reader: ld.so reads an empty one as the working directory."""
    return entry if entry else "'' (empty: the working directory)"


def _how_text(cause: dict[str, Any]) -> str:
    how = cause["how"]
    if how in (Resolution.LD_LIBRARY_PATH, Resolution.LD_PRELOAD):
        return f"the {how} entry {entry_text(cause['entry'])}"
    if how == Resolution.CACHE:
        return "the system's ld.so cache"
    return str(how)


@check(
    "library-shadowed",
    family="libraries",
    summary="A CUDA library is loaded from outside the wheel torch pins (LD_LIBRARY_PATH, "
    "LD_PRELOAD, the system).",
    label="CUDA libraries come from torch's wheels",
)
def library_shadowed(facts: Facts) -> Outcome:
    libraries = _libraries(facts)
    if isinstance(libraries, Skip):
        return libraries
    shadowed: list[dict[str, Any]] = []
    for row in libraries.cuda:
        if _is_driver(row.soname):
            continue
        path, verb, resolved = _actual(row)
        if path is None:
            continue
        wheels = pinned_wheels(facts, row.soname)
        if not wheels:
            continue  # torch pins no wheel for it: a system CUDA is where it belongs
        owner = row.owner
        if owner is not None and owner in wheels:
            continue
        expected = resolved.expected_path if resolved is not None else None
        how = resolved.how if resolved is not None else None
        if verb == "loaded" and resolved is not None and resolved.path != path:
            how = None  # the loader took another way than the model: say only where
        shadowed.append(
            {
                "soname": row.soname,
                "path": path,
                "how": how,
                "entry": resolved.entry if resolved is not None and how else None,
                "expected_path": expected,
                "expected_wheels": wheels,
                "verb": verb,
            }
        )
    if not shadowed:
        return []
    evidence = []
    for item in shadowed:
        line = f"{item['soname']}: {item['verb']} from {item['path']}"
        if item["how"] in OUTSIDE:
            line += f" (through {_how_text(item)})"
        line += "; expected "
        if item["expected_path"]:
            line += item["expected_path"]
        else:
            line += f"the file from {item['expected_wheels'][0]}"
        evidence.append(line)
    names = ", ".join(s["soname"] for s in shadowed)
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
            data={"shadowed": shadowed},
        )
    ]


def _version_parts(text: str) -> tuple[int, ...] | None:
    try:
        return Version(text).release
    except InvalidVersion:
        return None


@check(
    "library-version-mismatch",
    family="libraries",
    summary="A loaded CUDA library reports a version other than the wheel torch pins.",
    label="loaded CUDA library versions match torch's pins",
)
def library_version_mismatch(facts: Facts) -> Outcome:
    libraries = _libraries(facts)
    if isinstance(libraries, Skip):
        return libraries
    probe = libraries.load_probe
    if probe is None or not probe.ran:
        return Skip("the load probe did not run")
    if probe.error and not libraries.loads:
        return Skip(probe.error)
    mismatched: list[dict[str, Any]] = []
    for row in libraries.cuda:
        load = row.load
        if load is None or not load.version:
            continue
        loaded = _version_parts(load.version)
        for wheel in pinned_wheels(facts, row.soname):
            reference = reference_version(facts, wheel)
            expected = _version_parts(reference) if reference else None
            if loaded is None or expected is None:
                continue
            if expected[: len(loaded)] != loaded:
                mismatched.append(
                    {
                        "soname": row.soname,
                        "version": load.version,
                        "version_api": load.version_api,
                        "path": load.path,
                        "wheel": wheel,
                        "expected": reference,
                    }
                )
            break
    if not mismatched:
        return []
    evidence = [
        f"{m['soname']} reports {m['version']} ({m['version_api']}), loaded from {m['path']}; "
        f"torch pins {m['wheel']} {m['expected']}"
        for m in mismatched
    ]
    return [
        Finding(
            id="library-version-mismatch",
            severity=Severity.ERROR,
            title=", ".join(f"{m['soname']} is {m['version']}" for m in mismatched)
            + " (not torch's pin)",
            detail=(
                "Asked through its own API, the library that was really loaded reports a "
                "version other than the wheel torch pins. torch checks some of these at run "
                "time (`cuDNN version incompatibility: PyTorch was compiled against …`); "
                "others fail with missing symbols or wrong results."
            ),
            evidence=tuple(evidence),
            data={"mismatched": mismatched},
        )
    ]


@check(
    "cuda-libs-in-loader-path",
    family="libraries",
    summary="LD_LIBRARY_PATH or LD_PRELOAD holds CUDA libraries that can shadow torch's wheels.",
    label="LD_LIBRARY_PATH and LD_PRELOAD hold no CUDA libraries",
)
def cuda_libs_in_loader_path(facts: Facts) -> Outcome:
    libraries = _libraries(facts)
    if isinstance(libraries, Skip):
        return libraries
    entries = [e for e in libraries.loader_path if e.cuda_files]
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
            data={
                "entries": [
                    {"variable": e.variable, "entry": e.entry, "cuda_files": list(e.cuda_files)}
                    for e in entries
                ]
            },
        )
    ]
