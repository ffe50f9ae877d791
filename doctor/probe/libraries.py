"""Which CUDA libraries torch will load, from where, and whether they load.

Static view: the ELF files of torch (torch/lib/*.so*, torch/_C*.so) and every library they
reach, resolved by doctor/probe/elf.py's loader model in the order the process meets them
(libtorch_global_deps.so, torch's Python preloads, then torch._C). Dynamic view: a
contained process of the inspected interpreter runs doctor/probe/load_inside.py with a
plan built here. When a library kills or hangs that process, the plan is run again
without it, so one bad library never hides the others.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from doctor.facts import (
    DistributionFacts,
    InterpreterFacts,
    ProbeFailure,
    TorchBuildFacts,
)
from doctor.facts.libraries import (
    CudaLibraryFacts,
    ElfObjectFacts,
    LibrariesFacts,
    LoadedLibraryFacts,
    LoaderPathEntry,
    LoadProbeFacts,
    Resolution,
    ResolvedDependency,
)
from doctor.knowledge.cuda_libraries import (
    TorchPreload,
    cuda_library,
    cuda_library_stems,
    cudnn_sublibraries,
    default_torch_preload,
    driver_sonames,
    owner_prefixes,
    soname_stem,
)
from doctor.knowledge.loader_errors import named_object
from doctor.probe import load_inside
from doctor.probe.contained import ContainedResult, run_contained
from doctor.probe.elf import ElfDynamic, LoaderModel, read_dynamic, split_preload
from doctor.probe.load_events import LoadResult, StepBegun, StepEnded, StepRecord, parse_events
from doctor.probe.start import LoadSession, load_argv, load_options

__all__ = [
    "LibraryProbe",
    "probe_libraries",
    "split_preload",
    "start_load_probe",
    "torch_preload_flow",
]

# A plan is run again after each crash or hang, at most this many times.
MAX_LOAD_PROCESSES = 6
# load_inside.py is unannotated (old interpreters run it): the two readers used here, typed.
_read_preload_flow: Callable[[str], dict[str, Any] | None] = load_inside.preload_flow
_make_flow_plan: Callable[..., dict[str, Any]] = load_inside.flow_plan


def torch_preload_flow(torch_dir: str) -> TorchPreload:
    """The preload list and behaviour of the installed torch/__init__.py (read, not run)."""
    flow = _read_preload_flow(torch_dir)
    if flow is None:
        return default_torch_preload()
    return TorchPreload(
        source=str(flow["source"]),
        after_success=bool(flow["after_success"]),
        libraries=tuple((str(f), str(g)) for f, g in flow["libraries"]),
        optional=tuple((str(f), str(g)) for f, g in flow["optional"]),
    )


def record_owners(
    distributions: Iterable[DistributionFacts], shared_libraries: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """Shared-library file (real path) -> owning distribution, from the RECORD files the
    inside probe read (``shared_libraries``: metadata directory -> real paths)."""
    owners: dict[str, str] = {}
    for dist in distributions:
        if dist.shadowed or not dist.name.startswith(owner_prefixes()):
            continue
        for path in shared_libraries.get(dist.metadata_dir, ()):
            owners.setdefault(path, dist.name)
    return owners


def _is_cuda(soname: str) -> bool:
    return cuda_library(soname) is not None or soname in driver_sonames()


class _StaticWalk:
    """Walks the objects in the order the process meets them, resolving each NEEDED."""

    def __init__(self, loader: LoaderModel, owners: Mapping[str, str], roots: Sequence[str]):
        self.loader = loader
        self.owners = owners
        self.roots = tuple(os.path.realpath(r) for r in roots)
        self.loaded: dict[str, ResolvedDependency] = {}
        self.objects: dict[str, ElfObjectFacts] = {}
        self.needed_by: dict[str, list[str]] = {}

    def _descend(self, path: str) -> bool:
        return path.startswith(self.roots) or _is_cuda(os.path.basename(path))

    def add_loaded(self, dependency: ResolvedDependency) -> None:
        self.loaded.setdefault(dependency.soname, dependency)

    def visit(self, path: str) -> None:
        queue: deque[tuple[str, tuple[ElfDynamic, ...]]] = deque([(path, ())])
        while queue:
            current, chain = queue.popleft()
            if current in self.objects:
                continue
            dynamic = read_dynamic(current)
            here = (*chain, dynamic)
            dependencies = []
            for soname in dynamic.needed:
                found = self.loader.search(soname, here, loaded=self.loaded)
                owner = self.owners.get(found.path) if found.path else None
                if owner != found.owner:
                    found = replace(found, owner=owner)
                dependencies.append(found)
                if found.path is not None:
                    self.add_loaded(found)
                self.needed_by.setdefault(soname, [])
                name = os.path.basename(current)
                if name not in self.needed_by[soname]:
                    self.needed_by[soname].append(name)
                if found.path and found.path not in self.objects and self._descend(found.path):
                    queue.append((found.path, here))
            self.objects[current] = ElfObjectFacts(
                path=current,
                soname=dynamic.soname,
                needed=dynamic.needed,
                rpath=dynamic.rpath,
                runpath=dynamic.runpath,
                dependencies=tuple(dependencies),
                owner=self.owners.get(current),
                error=dynamic.error,
            )


def _loader_path_entries(
    ld_library_path: Sequence[str],
    ld_preload: Sequence[tuple[str, str | None]],
    owners: Mapping[str, str],
) -> tuple[LoaderPathEntry, ...]:
    """The CUDA libraries each LD_LIBRARY_PATH entry holds and each LD_PRELOAD entry loads
    (``ld_preload``: the entry as written and the file it loads, None when it loads none)."""
    entries = []

    def split(directory: str, names: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        cuda = [n for n in names if ".so" in n and cuda_library(n) is not None]
        owned = [n for n in cuda if os.path.realpath(os.path.join(directory, n)) in owners]
        return tuple(n for n in cuda if n not in owned), tuple(owned)

    for directory in ld_library_path:
        searched = directory or "."  # an empty entry is the working directory
        try:
            names = sorted(os.listdir(searched))
        except OSError:
            names = []
        foreign, owned = split(searched, names)
        entries.append(LoaderPathEntry("LD_LIBRARY_PATH", directory, foreign, owned))
    for item, path in ld_preload:
        name = os.path.basename(item)
        cuda = bool(name) and ".so" in name and cuda_library(name) is not None
        mine = cuda and path is not None and os.path.realpath(path) in owners
        foreign = (name,) if cuda and not mine else ()
        soname = read_dynamic(path).soname if path is not None else None
        if soname and soname != name and cuda_library(soname) is not None and not mine:
            foreign = (*foreign, soname)
        entries.append(LoaderPathEntry("LD_PRELOAD", item, foreign, (name,) if mine else ()))
    return tuple(entries)


class LibraryProbe:
    """torch's CUDA libraries: ``start()`` sends torch's flow to the load process (started
    earlier, see doctor/probe/start.py), walks the ELF files while it loads, and sends the
    rest of the plan; ``finish()`` collects the loads. Neither raises: a bug here is one
    probe failure in the report, not a traceback. The orchestrator (doctor/probe/
    __init__.py) does other work between the two."""

    def __init__(
        self,
        python: str,
        torch: TorchBuildFacts | None,
        interpreter: InterpreterFacts | None,
        distributions: Sequence[DistributionFacts],
        environment: Mapping[str, str],
        *,
        timeout: float = 60.0,
        load: bool = True,
        shared_libraries: Mapping[str, Sequence[str]] | None = None,
        session: LoadSession | None = None,
    ) -> None:
        self.python = python
        self.torch = torch
        self.interpreter = interpreter
        self.distributions = distributions
        self.environment = environment
        self.timeout = timeout
        self.load = load
        self.shared_libraries = shared_libraries or {}
        self.session = session
        self._static: _StaticView | None = None
        self._failure: ProbeFailure | None = None

    def start(self) -> None:
        try:
            self._static = self._start()
        except Exception as exc:  # the report goes on without this probe
            self._failure = _internal_error(exc)
            self.kill()

    def finish(self) -> tuple[LibrariesFacts | None, list[ProbeFailure]]:
        try:
            if self._failure is not None:
                return None, [self._failure]
            if self._static is None:
                return None, []
            return self._static.finish(self.session if self.load else None)
        except Exception as exc:  # the report goes on without this probe
            return None, [_internal_error(exc)]
        finally:
            self.kill()

    def kill(self) -> None:
        if self.session is not None:
            self.session.kill()

    def _start(self) -> _StaticView | None:
        torch, interpreter = self.torch, self.interpreter
        if torch is None or interpreter is None or not torch.is_cuda_build:
            return None
        torch_dir = os.path.realpath(torch.package_dir)
        flow = torch_preload_flow(torch_dir)
        cuda_major = torch.cuda.split(".")[0] if torch.cuda else None
        # The same plan the load process makes for itself from torch/__init__.py; when it
        # cannot read that file, it runs this one (with torch-doctor's copy of the list).
        flow_plan = _make_flow_plan(
            torch_dir,
            {
                "after_success": flow.after_success,
                "libraries": [list(pair) for pair in flow.libraries],
                "optional": [list(pair) for pair in flow.optional],
            },
            interpreter.sys_path,
            cuda_major,
            self.environment.get("TORCH_USE_RTLD_GLOBAL"),
        )
        if self.load:
            if self.session is None:
                self.session = start_load_probe(self.python, self.timeout)
            self.session.send_flow(flow_plan)
        owners = _owners(torch_dir, self.distributions, self.shared_libraries)
        # The walk names sonames in its copy of the preload plan.
        preload_plan = [dict(entry) for entry in flow_plan["preload"]["libraries"]]
        view = _StaticView.build(
            flow, preload_plan, torch_dir, interpreter, self.environment, owners
        )
        if self.load and self.session is not None:
            view.send_rest(self.session)
        return view


def _internal_error(exc: Exception) -> ProbeFailure:
    return ProbeFailure("libraries", f"internal error: {type(exc).__name__}: {exc}")


def probe_libraries(
    python: str,
    torch: TorchBuildFacts | None,
    interpreter: InterpreterFacts | None,
    distributions: Sequence[DistributionFacts],
    environment: Mapping[str, str],
    *,
    timeout: float = 60.0,
    load: bool = True,
    shared_libraries: Mapping[str, Sequence[str]] | None = None,
    session: LoadSession | None = None,
) -> tuple[LibrariesFacts | None, list[ProbeFailure]]:
    """The static and dynamic views of torch's CUDA libraries (None without a CUDA torch):
    :class:`LibraryProbe` started and finished at once."""
    probe = LibraryProbe(
        python,
        torch,
        interpreter,
        distributions,
        environment,
        timeout=timeout,
        load=load,
        shared_libraries=shared_libraries,
        session=session,
    )
    probe.start()
    return probe.finish()


def _owners(
    torch_dir: str,
    distributions: Sequence[DistributionFacts],
    shared_libraries: Mapping[str, Sequence[str]],
) -> dict[str, str]:
    owners = record_owners(distributions, shared_libraries)
    # torch's own libraries also when its RECORD does not list them.
    if any(d.name == "torch" and not d.shadowed for d in distributions):
        for pattern in ("_C*.so", "lib/*.so*"):
            for path in glob.glob(os.path.join(torch_dir, pattern)):
                owners.setdefault(os.path.realpath(path), "torch")
    return owners


class _StaticView:
    """The ELF walk's result: the objects in the order the process meets them, the CUDA
    rows, and what the load plan still needs from it."""

    def __init__(
        self,
        flow: TorchPreload,
        walk: _StaticWalk,
        rows: dict[str, CudaLibraryFacts],
        lib_dir: str,
        torch_dir: str,
        ld_library_path: Sequence[str],
        preload_files: Sequence[tuple[str, str | None]],
        seconds: float,
    ) -> None:
        self.flow = flow
        self.walk = walk
        self.rows = rows
        self.lib_dir = lib_dir
        self.torch_dir = torch_dir
        self.ld_library_path = ld_library_path
        self.preload_files = preload_files
        self.seconds = seconds
        self.rest: dict[str, Any] = {}

    @classmethod
    def build(
        cls,
        flow: TorchPreload,
        preload_plan: list[dict[str, Any]],
        torch_dir: str,
        interpreter: InterpreterFacts,
        environment: Mapping[str, str],
        owners: Mapping[str, str],
    ) -> _StaticView:
        started = time.perf_counter()
        lib_dir = os.path.join(torch_dir, "lib")
        program = read_dynamic(os.path.realpath(interpreter.executable))
        loader, preload_files = LoaderModel.for_environment(environment, program)
        site_dirs = [os.path.realpath(p) for p in interpreter.sys_path if os.path.isdir(p)]
        walk = _StaticWalk(loader, owners, [torch_dir, *site_dirs])
        for preloaded_soname, item in loader.ld_preload.items():
            # LD_PRELOAD objects are in the process first, so every NEEDED lookup of their
            # soname binds to them (torch's later preload by path loads a second, unused copy).
            real = os.path.realpath(item)
            written = loader.preload_entries.get(preloaded_soname, item)
            walk.add_loaded(
                ResolvedDependency(
                    preloaded_soname,
                    Resolution.LD_PRELOAD,
                    real,
                    entry=written,
                    owner=owners.get(real),
                )
            )
        global_deps = os.path.join(lib_dir, "libtorch_global_deps.so")
        if os.path.isfile(global_deps):
            walk.visit(os.path.realpath(global_deps))
        for entry in preload_plan:
            _visit_preload(walk, entry, flow, owners)
        roots = sorted(glob.glob(os.path.join(torch_dir, "_C*.so")))
        with contextlib.suppress(OSError):
            roots += sorted(os.path.join(lib_dir, n) for n in os.listdir(lib_dir) if ".so" in n)
        for root in roots:
            if os.path.isfile(root):
                walk.visit(os.path.realpath(root))
        rows = _rows(walk, owners, preload_plan)
        return cls(
            flow,
            walk,
            rows,
            lib_dir,
            torch_dir,
            loader.ld_library_path,
            preload_files,
            time.perf_counter() - started,
        )

    def send_rest(self, session: LoadSession) -> None:
        """The load plan's last line: what torch's libraries NEED, what to report."""
        self.rest = {
            **_needed_plan(self.walk, self.rows, self.torch_dir),
            "versions": _version_table(),
        }
        session.send_rest(self.rest)

    def finish(self, session: LoadSession | None) -> tuple[LibrariesFacts, list[ProbeFailure]]:
        failures: list[ProbeFailure] = []
        loads: tuple[LoadedLibraryFacts, ...] = ()
        rows = self.rows
        if session is None:
            probe = LoadProbeFacts(ran=False, skipped_reason="--no-load", flow=self.flow.source)
        else:
            steps, result, processes, failure = _run_load_plan(session, self.rest)
            loads = _loads(steps, result, self.walk.owners)
            probe = LoadProbeFacts(
                ran=True,
                flow=self.flow.source,
                processes=processes,
                seconds=round(time.perf_counter() - session.started, 4),
                torch_import_error=result.torch_import_error if result else None,
                error=failure.reason if failure else None,
            )
            if failure is not None:
                failures.append(failure)
            rows = _merge_loads(rows, loads)
        facts = LibrariesFacts(
            torch_lib_dir=self.lib_dir,
            objects=tuple(self.walk.objects.values()),
            cuda=tuple(rows.values()),
            loads=loads,
            loader_path=_loader_path_entries(
                self.ld_library_path, self.preload_files, self.walk.owners
            ),
            load_probe=probe,
            static_seconds=round(self.seconds, 4),
        )
        return facts, failures


def _visit_preload(
    walk: _StaticWalk, entry: dict[str, Any], flow: TorchPreload, owners: Mapping[str, str]
) -> None:
    """One library torch/__init__.py preloads by path: in the process before torch._C."""
    path = entry["path"]
    if not path or not flow.after_success:
        return
    soname = read_dynamic(path).soname or os.path.basename(path)
    entry["soname"] = soname
    walk.add_loaded(
        ResolvedDependency(
            soname,
            Resolution.TORCH_PRELOAD,
            path,
            entry=entry["glob"],
            owner=owners.get(path),
            expected_path=path,
        )
    )
    walk.needed_by.setdefault(soname, []).append("torch/__init__.py")
    walk.visit(path)


def _rows(
    walk: _StaticWalk, owners: Mapping[str, str], preload_plan: Sequence[Mapping[str, Any]]
) -> dict[str, CudaLibraryFacts]:
    """One row per CUDA soname the walk met, with how it resolved first."""
    rows: dict[str, CudaLibraryFacts] = {}
    for soname, users in walk.needed_by.items():
        if not _is_cuda(soname):
            continue
        resolved = walk.loaded.get(soname)
        if resolved is None:
            resolved = ResolvedDependency(soname, Resolution.NOT_FOUND)
            for obj in walk.objects.values():
                match = next((d for d in obj.dependencies if d.soname == soname), None)
                if match is not None:
                    resolved = match
                    break
        if resolved.expected_path is None:
            expected = _expected_path(soname, walk, preload_plan)
            if expected is not None:
                resolved = replace(resolved, expected_path=expected)
        expected_owner = owners.get(resolved.expected_path) if resolved.expected_path else None
        rows[soname] = CudaLibraryFacts(
            soname=soname,
            needed_by=tuple(users),
            resolved=resolved,
            expected_owner=expected_owner,
        )
    return rows


def _needed_plan(
    walk: _StaticWalk, rows: Mapping[str, CudaLibraryFacts], torch_dir: str
) -> dict[str, Any]:
    """The second half of the load plan: what torch's libraries NEED, what to report."""
    torch_sonames = [
        soname
        for obj in walk.objects.values()
        if obj.path.startswith(torch_dir + os.sep)
        for soname in obj.needed
    ]
    needed = []
    for soname in dict.fromkeys(torch_sonames):
        if cuda_library(soname) is None:
            continue
        resolved = walk.loaded.get(soname)
        needed.append({"soname": soname, "path": resolved.path if resolved else None})
    cudnn = next((s for s in rows if soname_stem(s) == "libcudnn" and ".so." in s), None)
    return {
        "needed": needed,
        "cudnn": {
            "soname": cudnn,
            "major": cudnn.split(".so.", 1)[1].split(".")[0],
            "sublibraries": list(cudnn_sublibraries()),
        }
        if cudnn
        else None,
        "report": [s for s in rows if s not in driver_sonames()],
    }


def _expected_path(
    soname: str, walk: _StaticWalk, preload_plan: Sequence[Mapping[str, Any]]
) -> str | None:
    """The wheel's file for a soname: torch's preload path, else an RPATH/RUNPATH match."""
    for entry in preload_plan:
        if entry["soname"] == soname and entry["path"]:
            return str(entry["path"])
    for obj in walk.objects.values():
        for dependency in obj.dependencies:
            if dependency.soname == soname and dependency.expected_path:
                return dependency.expected_path
    return None


def _version_table() -> dict[str, dict[str, str | None]]:
    table = {}
    for stem in cuda_library_stems():
        library = cuda_library(stem + ".so")
        if library is not None and library.version is not None:
            api = library.version
            table[stem] = {"function": api.function, "call": api.call, "decode": api.decode}
    return table


def start_load_probe(python: str, timeout: float) -> LoadSession:
    """Start the load process now: it reads torch's flow itself and runs it at once."""
    return LoadSession(python, timeout)


def _run_load_plan(
    session: LoadSession, rest: Mapping[str, Any]
) -> tuple[list[StepRecord], LoadResult | None, int, ProbeFailure | None]:
    """Collect the load process; after a crash or hang, run the plan again without the
    library that was loading. Returns the steps (merged over the runs), the result, the
    number of processes and a failure when no run gave a result."""
    steps: dict[str, StepRecord] = {}
    skip: list[str] = []
    skip_requested: list[str] = []
    for processes in range(1, MAX_LOAD_PROCESSES + 1):
        run = session.first_run() if processes == 1 else _again(session, rest, skip, skip_requested)
        result, unfinished = _read_run(run, steps)
        if result is not None:
            return list(steps.values()), result, processes, None
        if run.start_error is not None or unfinished is None:
            reason = f"the library load probe {run.describe_failure()}"
            return list(steps.values()), None, processes, ProbeFailure("libraries", reason)
        # The library being loaded when the process died or hung is the culprit.
        record = steps[unfinished]
        record.done = True
        record.ok = False
        record.crashed = run.signal_name if not run.timed_out else None
        record.timed_out = run.timed_out
        record.error = None if run.timed_out or run.signal_name else run.describe_failure()
        skip.append(unfinished)
        skip_requested.append(record.begun.requested)
    reason = f"the library load probe stopped after {MAX_LOAD_PROCESSES} crashed processes"
    return list(steps.values()), None, MAX_LOAD_PROCESSES, ProbeFailure("libraries", reason)


def _again(
    session: LoadSession, rest: Mapping[str, Any], skip: list[str], skip_requested: list[str]
) -> ContainedResult:
    """The plan again without the files that crashed or hung: every line of it at once."""
    lines = (load_options(skip, skip_requested), session.flow_plan, rest)
    return run_contained(
        load_argv(session.python),
        timeout=session.timeout,
        env=os.environ,
        stdin_text="".join(json.dumps(line) + "\n" for line in lines),
    )


def _read_run(
    run: ContainedResult, steps: dict[str, StepRecord]
) -> tuple[LoadResult | None, str | None]:
    """Merge one run's events into ``steps``; its result, and the step it did not end."""
    result = None
    unfinished = None
    for event in parse_events(run.stdout):
        if isinstance(event, StepBegun):
            steps[event.step] = StepRecord(event)
            unfinished = event.step
        elif isinstance(event, StepEnded):
            record = steps.get(event.step)
            if record is not None:
                record.ok, record.error, record.done = event.ok, event.error, True
                unfinished = None
        else:
            result = event
    return result, unfinished


def _error_object(error: str | None) -> str | None:
    """The object a dlerror text names as failing, resolved as the loader resolved it
    (``torch/lib/../../nvidia/…`` and symlinks): the path the ELF view knows it by."""
    named = named_object(error) if error else None
    return os.path.realpath(named) if named else None


def _loads(
    steps: Sequence[StepRecord], result: LoadResult | None, owners: Mapping[str, str]
) -> tuple[LoadedLibraryFacts, ...]:
    """One fact per step that tells something, then the libraries that came as
    dependencies (in the process without a step of their own)."""
    libraries = result.libraries if result is not None else {}
    loads: list[LoadedLibraryFacts] = []
    seen: set[str] = set()
    for record in steps:
        begun = record.begun
        if begun.stage == "version" and not record.crashed and not record.timed_out:
            continue
        soname = begun.soname or os.path.basename(begun.requested)
        if begun.stage == "torch preload" and os.path.isabs(begun.requested):
            soname = read_dynamic(begun.requested).soname or soname  # the plan named it by file
        info = libraries.get(soname) if record.ok else None
        path = info.path if info else None
        loads.append(
            LoadedLibraryFacts(
                soname=soname,
                stage=begun.stage,
                requested=begun.requested,
                loaded=record.ok,
                path=path,
                owner=owners.get(path) if path else None,
                version=info.version if info else None,
                version_api=info.version_api if info else None,
                error=record.error,
                error_object=_error_object(record.error),
                crashed_signal=record.crashed,
                timed_out=record.timed_out,
            )
        )
        seen.add(soname)
    for soname, info in libraries.items():
        if soname in seen:
            continue
        loads.append(
            LoadedLibraryFacts(
                soname=soname,
                stage="dependency",
                requested=soname,
                loaded=True,
                path=info.path,
                owner=owners.get(info.path) if info.path else None,
                version=info.version,
                version_api=info.version_api,
            )
        )
    return tuple(loads)


def _merge_loads(
    rows: dict[str, CudaLibraryFacts], loads: Sequence[LoadedLibraryFacts]
) -> dict[str, CudaLibraryFacts]:
    """Attach to each soname the load that tells most: loaded with a path, else the failure."""
    best: dict[str, LoadedLibraryFacts] = {}
    for load in loads:
        current = best.get(load.soname)
        failed = bool(load.crashed_signal or load.timed_out or load.error)
        if current is None or (not current.path and (load.path or failed)):
            best[load.soname] = load
    out = dict(rows)
    for soname, load in best.items():
        if soname in out:
            out[soname] = replace(out[soname], load=load)
        elif cuda_library(soname) is not None:
            out[soname] = CudaLibraryFacts(soname=soname, needed_by=(load.stage,), load=load)
    return out
