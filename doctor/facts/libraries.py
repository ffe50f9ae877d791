"""Facts about the CUDA shared libraries torch loads (static ELF view and real loads).

The static view says what the dynamic loader *should* load, read from the ELF files;
the dynamic view says what a contained process of the inspected interpreter *did* load.
Paths are absolute and symlink-resolved; owners are distribution names from RECORD.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CudaLibraryFacts",
    "ElfObjectFacts",
    "LibrariesFacts",
    "LoadProbeFacts",
    "LoadedLibraryFacts",
    "LoaderPathEntry",
    "Resolution",
    "ResolvedDependency",
]


class Resolution:
    """How the loader found a soname, in the order glibc's loader tries (the values are data)."""

    LD_PRELOAD = "LD_PRELOAD"
    TORCH_PRELOAD = "torch preload"  # loaded by path by torch/__init__.py before torch._C
    RPATH = "RPATH"
    LD_LIBRARY_PATH = "LD_LIBRARY_PATH"
    RUNPATH = "RUNPATH"
    CACHE = "ld.so.cache"
    DEFAULT = "default dir"
    NOT_FOUND = "not found"


@dataclass(frozen=True)
class ResolvedDependency:
    """One NEEDED soname of one object, resolved as the loader would."""

    soname: str
    how: str  # a Resolution value
    path: str | None = None
    # The search entry that matched: an RPATH/RUNPATH entry as written ("$ORIGIN/../..")
    # or an LD_LIBRARY_PATH / LD_PRELOAD entry.
    entry: str | None = None
    # The object whose RPATH/RUNPATH held that entry (RPATH is inherited down the chain).
    entry_from: str | None = None
    owner: str | None = None  # distribution owning `path`
    # Where it resolves with LD_PRELOAD, LD_LIBRARY_PATH and the system ignored: the file
    # the wheels were built to load (None when no RPATH/RUNPATH entry holds it).
    expected_path: str | None = None


@dataclass(frozen=True)
class ElfObjectFacts:
    """The dynamic section of one ELF object, and how each of its NEEDED resolves."""

    path: str
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()  # as written; $ORIGIN is expanded in `dependencies`
    runpath: tuple[str, ...] = ()
    dependencies: tuple[ResolvedDependency, ...] = ()
    owner: str | None = None
    error: str | None = None  # unreadable or not ELF


@dataclass(frozen=True)
class LoadedLibraryFacts:
    """One library as the contained load probe saw it."""

    soname: str
    stage: str  # "torch global deps", "torch preload", "needed by torch", "cudnn sub-library"
    requested: str  # what was passed to dlopen (a path or a soname)
    loaded: bool = False
    path: str | None = None  # the file mapped for this soname (/proc/self/maps)
    owner: str | None = None
    version: str | None = None  # as the library itself reports it
    version_api: str | None = None  # the function that reported it
    error: str | None = None  # dlerror() text, verbatim
    # The object the error names as failing (the one needing an undefined symbol or a
    # version not found), symlink-resolved: the `path` of one of `objects`.
    error_object: str | None = None
    crashed_signal: str | None = None  # "SIGABRT" when loading it killed the process
    timed_out: bool = False  # loading it did not finish within the time limit


@dataclass(frozen=True)
class LoaderPathEntry:
    """An LD_LIBRARY_PATH or LD_PRELOAD entry and the CUDA libraries it holds."""

    variable: str  # "LD_LIBRARY_PATH" or "LD_PRELOAD"
    entry: str
    cuda_files: tuple[str, ...] = ()  # CUDA libraries found there that no installed wheel owns
    # CUDA libraries found there that belong to an installed wheel (an entry pointing into
    # the venv's own nvidia/*/lib, a known workaround): the same files torch would load.
    wheel_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadProbeFacts:
    """How the dynamic load probe ran."""

    ran: bool
    skipped_reason: str | None = None
    flow: str = ""  # where the preload order came from
    processes: int = 0  # contained processes used (more than one after a crash or hang)
    seconds: float = 0.0
    # What `import torch` would raise at this stage, when torch's own flow stops.
    torch_import_error: str | None = None
    error: str | None = None  # the probe itself could not run


@dataclass(frozen=True)
class CudaLibraryFacts:
    """One CUDA soname torch reaches: where it should come from, where it did."""

    soname: str
    needed_by: tuple[str, ...]  # file names of the objects that need or preload it
    resolved: ResolvedDependency | None = None  # static view, as first requested
    load: LoadedLibraryFacts | None = None  # dynamic view (None: not probed)
    expected_owner: str | None = None  # the distribution owning resolved.expected_path

    @property
    def path(self) -> str | None:
        """Where it was loaded from (dynamic), else where it resolves (static)."""
        if self.load is not None and self.load.path:
            return self.load.path
        return self.resolved.path if self.resolved is not None else None

    @property
    def owner(self) -> str | None:
        if self.load is not None and self.load.path:
            return self.load.owner
        return self.resolved.owner if self.resolved is not None else None

    @property
    def status(self) -> str:
        """What happened to it, in a few words (no judgement: the checks judge)."""
        load = self.load
        if load is not None:
            if load.crashed_signal:
                return f"crashed ({load.crashed_signal})"
            if load.timed_out:
                return "timed out"
            if load.loaded or load.path:
                return "loaded"
            if load.error:
                return "load failed"
        if self.resolved is None:
            return "not probed"
        if self.resolved.how == Resolution.NOT_FOUND:
            return "not found"
        return f"resolves ({self.resolved.how})" if load is None else "not loaded"


@dataclass(frozen=True)
class LibrariesFacts:
    """What the library probes found for the inspected torch."""

    torch_lib_dir: str | None = None
    objects: tuple[ElfObjectFacts, ...] = ()  # static view, in the loader's order
    cuda: tuple[CudaLibraryFacts, ...] = ()  # one row per CUDA soname, in load order
    loads: tuple[LoadedLibraryFacts, ...] = ()  # every dlopen the probe made, in order
    loader_path: tuple[LoaderPathEntry, ...] = ()
    load_probe: LoadProbeFacts | None = None
    static_seconds: float = 0.0

    def library(self, soname: str) -> CudaLibraryFacts | None:
        for row in self.cuda:
            if row.soname == soname:
                return row
        return None
