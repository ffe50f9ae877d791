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
    soname_stem,
)
from doctor.probe import load_inside
from doctor.probe.contained import run_contained
from doctor.probe.elf import ElfDynamic, LoaderModel, read_dynamic, split_search_path
from doctor.probe.start import LoadSession, load_argv, load_options
from doctor.probe.text import clean_tree

__all__ = ["probe_libraries", "start_load_probe", "torch_preload_flow"]

# A plan is run again after each crash or hang, at most this many times.
MAX_LOAD_PROCESSES = 6
# load_inside.py is unannotated (old interpreters run it): the two readers used here, typed.
_read_preload_flow: Callable[[str], dict[str, Any] | None] = load_inside.preload_flow
_make_flow_plan: Callable[..., dict[str, Any]] = load_inside.flow_plan
OWNER_FAMILIES = ("nvidia-", "cuda-", "torch", "triton", "pytorch-triton")


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
        if dist.shadowed or not dist.name.startswith(OWNER_FAMILIES):
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


def split_preload(value: str) -> list[str]:
    """LD_PRELOAD entries: separated by colons or white space (ld.so(8))."""
    return [part for part in value.replace(":", " ").split() if part]


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
    while_loading: Callable[[], object] | None = None,
) -> tuple[LibrariesFacts | None, list[ProbeFailure]]:
    """The static and dynamic views of torch's CUDA libraries (None without a CUDA torch).

    ``session`` is the load probe when the caller started it already (start_load_probe);
    ``shared_libraries`` the inside probe's RECORD view, for owners; ``while_loading`` runs
    once the load process has all its plan, before waiting for it. Never raises: a bug
    here is one probe failure in the report, not a traceback.
    """
    try:
        return _probe_libraries(
            python,
            torch,
            interpreter,
            distributions,
            environment,
            timeout=timeout,
            load=load,
            shared_libraries=shared_libraries or {},
            session=session,
            while_loading=while_loading,
        )
    except Exception as exc:  # the report goes on without this probe
        return None, [ProbeFailure("libraries", f"internal error: {type(exc).__name__}: {exc}")]
    finally:
        if session is not None:
            session.kill()


def _probe_libraries(
    python: str,
    torch: TorchBuildFacts | None,
    interpreter: InterpreterFacts | None,
    distributions: Sequence[DistributionFacts],
    environment: Mapping[str, str],
    *,
    timeout: float,
    load: bool,
    shared_libraries: Mapping[str, Sequence[str]],
    session: LoadSession | None,
    while_loading: Callable[[], object] | None,
) -> tuple[LibrariesFacts | None, list[ProbeFailure]]:
    """The static and dynamic views of torch's CUDA libraries (None without a CUDA torch)."""
    if torch is None or interpreter is None or not torch.is_cuda_build:
        return None, []
    torch_dir = os.path.realpath(torch.package_dir)
    lib_dir = os.path.join(torch_dir, "lib")
    flow = torch_preload_flow(torch_dir)
    cuda_major = torch.cuda.split(".")[0] if torch.cuda else None
    global_deps = os.path.join(lib_dir, "libtorch_global_deps.so")
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
        environment.get("TORCH_USE_RTLD_GLOBAL"),
    )
    preload_plan: list[dict[str, Any]] = flow_plan["preload"]["libraries"]
    if load:
        if session is None:
            session = start_load_probe(python, timeout)
        session.send_flow(flow_plan)
    static_plan = [dict(entry) for entry in preload_plan]  # the walk names sonames in it
    try:
        return _complete(
            session if load else None,
            flow,
            static_plan,
            torch_dir,
            lib_dir,
            global_deps,
            interpreter,
            distributions,
            environment,
            shared_libraries,
            while_loading,
        )
    finally:
        if session is not None:
            session.kill()


def _complete(
    session: LoadSession | None,
    flow: TorchPreload,
    preload_plan: list[dict[str, Any]],
    torch_dir: str,
    lib_dir: str,
    global_deps: str,
    interpreter: InterpreterFacts,
    distributions: Sequence[DistributionFacts],
    environment: Mapping[str, str],
    shared_libraries: Mapping[str, Sequence[str]],
    while_loading: Callable[[], object] | None,
) -> tuple[LibrariesFacts | None, list[ProbeFailure]]:
    """The ELF walk (while torch's flow loads), then the rest of the load plan."""
    has_global_deps = os.path.isfile(global_deps)
    started = time.perf_counter()
    owners = record_owners(distributions, shared_libraries)
    # torch's own libraries also when its RECORD does not list them.
    if any(d.name == "torch" and not d.shadowed for d in distributions):
        for pattern in ("_C*.so", "lib/*.so*"):
            for path in glob.glob(os.path.join(torch_dir, pattern)):
                owners.setdefault(os.path.realpath(path), "torch")
    # ld.so ignores an empty LD_LIBRARY_PATH but reads an empty entry as the working directory.
    value = environment.get("LD_LIBRARY_PATH", "")
    ld_library_path = list(split_search_path(value)) if value else []
    loader = LoaderModel(ld_library_path=ld_library_path)
    program = read_dynamic(os.path.realpath(interpreter.executable))
    preloaded: dict[str, str] = {}
    preload_files: list[tuple[str, str | None]] = []  # (entry as written, file it loads)
    for item in split_preload(environment.get("LD_PRELOAD", "")):
        preload_file = loader.preload_path(item, program)
        preload_files.append((item, preload_file))
        if preload_file is not None:
            soname = read_dynamic(preload_file).soname or os.path.basename(item)
            if soname not in preloaded:
                preloaded[soname] = preload_file
                if preload_file != item:
                    loader.preload_entries = {**loader.preload_entries, soname: item}
    loader.ld_preload = preloaded
    site_dirs = [os.path.realpath(p) for p in interpreter.sys_path if os.path.isdir(p)]
    walk = _StaticWalk(loader, owners, [torch_dir, *site_dirs])
    for preloaded_soname, item in preloaded.items():
        # LD_PRELOAD objects are in the process first, so every NEEDED lookup of their
        # soname binds to them (torch's later preload by path loads a second, unused copy).
        real = os.path.realpath(item)
        written = loader.preload_entries.get(preloaded_soname, item)
        walk.add_loaded(
            ResolvedDependency(
                preloaded_soname, Resolution.LD_PRELOAD, real, entry=written, owner=owners.get(real)
            )
        )
    if has_global_deps:
        walk.visit(os.path.realpath(global_deps))
    for entry in preload_plan:
        path = entry["path"]
        if not path or not flow.after_success:
            continue
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
    roots = sorted(glob.glob(os.path.join(torch_dir, "_C*.so")))
    with contextlib.suppress(OSError):
        roots += sorted(os.path.join(lib_dir, n) for n in os.listdir(lib_dir) if ".so" in n)
    for root in roots:
        if os.path.isfile(root):
            walk.visit(os.path.realpath(root))
    rows = _rows(walk, owners, preload_plan)
    static_seconds = time.perf_counter() - started

    failures: list[ProbeFailure] = []
    loads: tuple[LoadedLibraryFacts, ...] = ()
    if session is None:
        if while_loading is not None:
            while_loading()
        probe = LoadProbeFacts(ran=False, skipped_reason="--no-load", flow=flow.source)
    else:
        rest = {**_needed_plan(walk, rows, torch_dir), "versions": _version_table()}
        session.send_rest(rest)
        if while_loading is not None:
            while_loading()
        probe, loads, failure = _run_load_plan(session, rest, owners, flow.source)
        if failure is not None:
            failures.append(failure)
        rows = _merge_loads(rows, loads)

    facts = LibrariesFacts(
        torch_lib_dir=lib_dir,
        objects=tuple(walk.objects.values()),
        cuda=tuple(rows.values()),
        loads=loads,
        loader_path=_loader_path_entries(ld_library_path, preload_files, owners),
        load_probe=probe,
        static_seconds=round(static_seconds, 4),
    )
    return facts, failures


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
    session: LoadSession, rest: dict[str, Any], owners: Mapping[str, str], flow: str
) -> tuple[LoadProbeFacts, tuple[LoadedLibraryFacts, ...], ProbeFailure | None]:
    steps: dict[str, dict[str, Any]] = {}  # step id -> begin/end, merged over the runs
    skip: list[str] = []
    skip_requested: list[str] = []
    result: dict[str, Any] | None = None
    failure: ProbeFailure | None = None
    processes = 0
    while processes < MAX_LOAD_PROCESSES:
        processes += 1
        if processes == 1:
            run = session.first_run()
        else:
            # Again without the files that crashed or hung: every line of the plan at once.
            lines = (load_options(skip, skip_requested), session.flow_plan, rest)
            run = run_contained(
                load_argv(session.python),
                timeout=session.timeout,
                env=os.environ,
                stdin_text="".join(json.dumps(line) + "\n" for line in lines),
            )
        unfinished = None
        for line in run.stdout.splitlines():
            try:
                event = clean_tree(json.loads(line))
            except (ValueError, RecursionError):
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "begin":
                steps[event["step"]] = dict(event)
                unfinished = event["step"]
            elif kind == "end" and event["step"] in steps:
                steps[event["step"]].update(ok=event["ok"], error=event["error"], done=True)
                unfinished = None
            elif kind == "result":
                result = event
        if result is not None:
            break
        if run.start_error is not None or unfinished is None:
            failure = ProbeFailure("libraries", f"the library load probe {run.describe_failure()}")
            break
        # The library being loaded when the process died or hung is the culprit.
        steps[unfinished].update(
            done=True,
            ok=False,
            crashed=run.signal_name if not run.timed_out else None,
            timed_out=run.timed_out,
            error=None if run.timed_out or run.signal_name else run.describe_failure(),
        )
        skip.append(unfinished)
        skip_requested.append(steps[unfinished]["requested"])
    else:
        failure = ProbeFailure(
            "libraries", f"the library load probe stopped after {processes} crashed processes"
        )
    started = session.started

    libraries: dict[str, Any] = (result or {}).get("libraries", {})
    loads: list[LoadedLibraryFacts] = []
    seen: set[str] = set()
    for step in steps.values():
        if step.get("stage") == "version" and not step.get("crashed") and not step.get("timed_out"):
            continue
        requested = step["requested"]
        soname = step.get("soname") or os.path.basename(requested)
        if step.get("stage") == "torch preload" and os.path.isabs(requested):
            soname = read_dynamic(requested).soname or soname  # the plan named it by file
        info = libraries.get(soname, {}) if step.get("ok") else {}
        path = info.get("path")
        loads.append(
            LoadedLibraryFacts(
                soname=soname,
                stage=step.get("stage", ""),
                requested=step["requested"],
                loaded=bool(step.get("ok")),
                path=path,
                owner=owners.get(path) if path else None,
                version=info.get("version"),
                version_api=info.get("version_api"),
                error=step.get("error"),
                crashed_signal=step.get("crashed"),
                timed_out=bool(step.get("timed_out")),
            )
        )
        seen.add(soname)
    for soname, info in libraries.items():
        if soname in seen:
            continue
        path = info.get("path")
        loads.append(
            LoadedLibraryFacts(
                soname=soname,
                stage="dependency",
                requested=soname,
                loaded=True,
                path=path,
                owner=owners.get(path) if path else None,
                version=info.get("version"),
                version_api=info.get("version_api"),
            )
        )
    probe = LoadProbeFacts(
        ran=True,
        flow=flow,
        processes=processes,
        seconds=round(time.perf_counter() - started, 4),
        torch_import_error=(result or {}).get("torch_import_error"),
        error=failure.reason if failure else None,
    )
    return probe, tuple(loads), failure


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
