"""Load torch's CUDA libraries for real, inside the inspected interpreter.

Standard library only; run as ``python -B -c <source>`` in a contained process by
doctor/probe/libraries.py, started as the doctor starts (before it knows anything about
the environment). torch is never imported. The process finds torch as ``import torch``
would (the first sys.path entry with torch/__init__.py), reads torch's own preload list
from torch/__init__.py, and repeats what torch does before ``from torch._C import *``:

1. ``ctypes.CDLL(torch/lib/libtorch_global_deps.so, RTLD_GLOBAL)``;
2. on an OSError naming a CUDA library: preload each CUDA library by path (a missing one
   is torch's ValueError), then load libtorch_global_deps.so again; on success, when
   libcudart is mapped and this torch does so, preload them best-effort (the first
   OSError ends the preloads, as in torch);
3. the CUDA sonames torch's own libraries NEED, as the loader resolves them for
   libtorch_cuda.so (an already loaded soname is reused; otherwise the path the loader
   model found, so the loaded library's own NEEDED entries are resolved by the real loader);
4. cuDNN's sub-libraries, from the directory libcudnn was loaded from, as cuDNN loads them.

Then it reads /proc/self/maps to say which file each soname came from and asks each
library its version through its own API. Every step is announced on the report stream
before it starts, so when a library's constructor aborts or hangs the parent knows which
one it was and runs the plan again without it.

stdin carries three JSON lines: options (steps and files to skip, after a crash), the
doctor's copy of torch's flow (used only when torch/__init__.py cannot be read here), and
what torch's libraries NEED (from the doctor's ELF view) with what to report. The third
is read only after torch's flow has run, so the flow overlaps the doctor's work.

The doctor imports this module too, for the functions that read torch's preload list,
so both sides read it with the same rules. Keep it compatible with old interpreters.
"""
# ruff: noqa: UP004, UP032  (no f-strings or new-style classes assumed in old interpreters)

import ast
import ctypes
import fnmatch
import json
import os
import stat
import sys
import time

RTLD_NOLOAD = getattr(os, "RTLD_NOLOAD", 4)
RTLD_GLOBAL = getattr(os, "RTLD_GLOBAL", ctypes.RTLD_GLOBAL)
RTLD_LOCAL = getattr(os, "RTLD_LOCAL", ctypes.RTLD_LOCAL)
RTLD_DI_LINKMAP = 2

_report = None


def emit(obj):
    _report.write(json.dumps(obj) + "\n")
    _report.flush()


class LinkMap(ctypes.Structure):
    _fields_ = [
        ("l_addr", ctypes.c_void_p),
        ("l_name", ctypes.c_char_p),
        ("l_ld", ctypes.c_void_p),
        ("l_next", ctypes.c_void_p),
        ("l_prev", ctypes.c_void_p),
    ]


def _dlinfo():
    for name in (None, "libdl.so.2"):
        try:
            function = ctypes.CDLL(name).dlinfo
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        function.restype = ctypes.c_int
        return function
    return None


DLINFO = []  # [dlinfo or None] once looked up: the doctor imports this module too


def dlinfo():
    if not DLINFO:
        DLINFO.append(_dlinfo())
    return DLINFO[0]


def mapped_files():
    paths = set()
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    paths.add(parts[5].strip())
    except OSError:
        pass
    return paths


def loaded_handle(soname):
    """The already loaded object with this soname (matched as the loader matches), or None."""
    try:
        return ctypes.CDLL(soname, mode=RTLD_NOLOAD | RTLD_LOCAL)
    except OSError:
        return None


def path_of(handle, soname, maps):
    """The file mapped for a loaded library: its link map name, checked against the maps."""
    function = dlinfo()
    if function is not None:
        pointer = ctypes.POINTER(LinkMap)()
        if function(handle._handle, RTLD_DI_LINKMAP, ctypes.byref(pointer)) == 0 and pointer:
            raw = pointer.contents.l_name
            if raw:
                name = os.path.realpath(os.fsdecode(raw))
                if name in maps:
                    return name
    for path in sorted(maps):
        base = os.path.basename(path)
        if base == soname or base.startswith(soname + "."):
            return path
    return None


def decode(number, how):
    if how == "thousands":  # cudaRuntimeGetVersion: 1000 * major + 10 * minor
        return "{}.{}".format(number // 1000, (number % 1000) // 10)
    if how == "cudnn":  # cuDNN 9: 10000 * major + 100 * minor + patch; cuDNN 8: 1000 * major
        base = 10000 if number >= 90000 else 1000
        return "{}.{}.{}".format(number // base, (number % base) // 100, number % 100)
    if how == "nccl":  # NCCL >= 2.9: 10000 * major + 100 * minor + patch
        base = 10000 if number >= 20900 else 1000
        return "{}.{}.{}".format(number // base, (number % base) // 100, number % 100)
    if how == "ten_thousands":
        return "{}.{}.{}".format(number // 10000, (number % 10000) // 100, number % 100)
    return str(number)


def version_of(handle, api):
    function = getattr(handle, api["function"])  # AttributeError: not exported
    call = api["call"]
    if call == "int_out":
        value = ctypes.c_int()
        if function(ctypes.byref(value)) != 0:
            return None
        return decode(value.value, api.get("decode"))
    if call == "size_t":
        function.restype = ctypes.c_size_t
        function.argtypes = []
        return decode(int(function()), api.get("decode"))
    if call == "two_out":
        major, minor = ctypes.c_int(), ctypes.c_int()
        if function(ctypes.byref(major), ctypes.byref(minor)) != 0:
            return None
        return "{}.{}".format(major.value, minor.value)
    if call == "property":  # libraryPropertyType: MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
        parts = []
        for kind in (0, 1, 2):
            value = ctypes.c_int()
            if function(kind, ctypes.byref(value)) != 0:
                return None
            parts.append(str(value.value))
        return ".".join(parts)
    return None


class Runner(object):
    def __init__(self, plan, options):
        self.plan = plan
        self.skip = set(options.get("skip", ()))
        # Files that crashed or hung an earlier run: never loaded again, by any step.
        self.skip_requested = set(options.get("skip_requested", ()))
        self.handles = []  # keep every library loaded until the end
        self.sonames = []  # every soname a step asked for, in order
        # cuDNN's sub-libraries in the order cuDNN loads them (the doctor's knowledge).
        self.sublibrary_stems = list(options.get("cudnn_sublibraries", ()))
        self.cudnn_done = False

    def load(self, step, requested, mode, soname=None, stage=""):
        """dlopen with the step announced first; returns (ok, error)."""
        if soname and soname not in self.sonames:
            self.sonames.append(soname)
        if step in self.skip or requested in self.skip_requested:
            return False, None
        emit(
            {
                "event": "begin",
                "step": step,
                "requested": requested,
                "soname": soname,
                "stage": stage,
            }
        )
        started = time.time()
        try:
            self.handles.append(ctypes.CDLL(requested, mode=mode))
        except OSError as exc:
            error = str(exc)
            emit(
                {
                    "event": "end",
                    "step": step,
                    "ok": False,
                    "error": error,
                    "seconds": round(time.time() - started, 4),
                }
            )
            return False, error
        emit(
            {
                "event": "end",
                "step": step,
                "ok": True,
                "error": None,
                "seconds": round(time.time() - started, 4),
            }
        )
        return True, None

    def preload(self, entries, required, stop_on_error):
        """torch's _preload_cuda_deps: returns the error torch would raise, or None."""
        for index, entry in enumerate(entries):
            if entry.get("path") is None:
                if required and entry.get("required", True):
                    return "ValueError: {} not found in the system path".format(entry["glob"])
                continue
            ok, error = self.load(
                "preload:{}".format(index),
                entry["path"],
                RTLD_LOCAL,
                entry.get("soname"),
                "torch preload",
            )
            if not ok and error is not None and stop_on_error:
                return "OSError: " + error
        return None

    def run(self, read_rest):
        """torch's own flow, then ``read_rest()`` for the part that needs the ELF view."""
        plan = self.plan
        import_error = None
        global_deps = plan.get("global_deps")
        preload = plan.get("preload", {})
        entries = preload.get("libraries", [])
        if global_deps:
            ok, error = self.load(
                "global",
                global_deps,
                RTLD_GLOBAL | os.RTLD_NOW,
                "libtorch_global_deps.so",
                "torch global deps",
            )
            if not ok and error is not None:
                keys = preload.get("error_keys", [])
                if any(key in error for key in keys):
                    import_error = self.preload(entries, True, True)
                    if import_error is None:
                        ok, error = self.load(
                            "global-retry",
                            global_deps,
                            RTLD_GLOBAL | os.RTLD_NOW,
                            "libtorch_global_deps.so",
                            "torch global deps",
                        )
                        if not ok and error is not None:
                            import_error = "OSError: " + error
                else:
                    import_error = "OSError: " + error
            elif (
                ok
                and preload.get("after_success")
                # torch preloads only when libtorch_global_deps pulled libcudart in.
                and any("libcudart.so" in path for path in mapped_files())
            ):
                self.preload(entries, False, True)
        # cuDNN's sub-libraries need nothing from the doctor's ELF view when torch's flow
        # loaded libcudnn: load them now, while the doctor still walks the ELF files.
        self.cudnn_sublibraries(self.loaded_cudnn())
        plan.update(read_rest())
        mode = RTLD_GLOBAL if plan.get("rtld_global") else RTLD_LOCAL
        for entry in plan.get("needed", []):
            soname = entry["soname"]
            if loaded_handle(soname) is not None:
                continue
            self.load(
                "needed:" + soname, entry.get("path") or soname, mode, soname, "needed by torch"
            )
        self.cudnn_sublibraries(plan.get("cudnn"))
        return import_error

    def loaded_cudnn(self):
        """The libcudnn.so.N torch's flow loaded, as the doctor's plan would name it."""
        for path in mapped_files():
            base = os.path.basename(path)
            if not base.startswith("libcudnn.so."):
                continue
            major = base[len("libcudnn.so.") :].split(".")[0]
            if major.isdigit() and loaded_handle("libcudnn.so." + major) is not None:
                return {
                    "soname": "libcudnn.so." + major,
                    "major": major,
                    "sublibraries": self.sublibrary_stems,
                }
        return None

    def cudnn_sublibraries(self, cudnn):
        if not cudnn or self.cudnn_done:
            return
        handle = loaded_handle(cudnn["soname"])
        if handle is None:
            return
        path = path_of(handle, cudnn["soname"], mapped_files())
        if path is None:
            return
        self.cudnn_done = True
        directory = os.path.dirname(path)
        suffix = ".so." + cudnn["major"]
        names = [stem + suffix for stem in cudnn["sublibraries"]]
        try:
            present = sorted(os.listdir(directory))
        except OSError:
            present = []
        names += [
            n
            for n in present
            if n.startswith("libcudnn_") and n.endswith(suffix) and n not in names
        ]
        for name in names:
            candidate = os.path.join(directory, name)
            # cuDNN dlopens them by name; its DT_RPATH $ORIGIN finds its own directory first.
            requested = candidate if os.path.isfile(candidate) else name
            self.load("cudnn:" + name, requested, RTLD_LOCAL, name, "cudnn sub-library")

    def report(self, sonames, versions):
        maps = mapped_files()
        libraries = {}
        for soname in sonames:
            handle = loaded_handle(soname)
            if handle is None:
                continue
            entry = {"path": path_of(handle, soname, maps), "version": None, "version_api": None}
            api = versions.get(soname.split(".so", 1)[0])
            step = "version:" + soname
            if api and step not in self.skip:
                emit(
                    {
                        "event": "begin",
                        "step": step,
                        "requested": soname,
                        "soname": soname,
                        "stage": "version",
                    }
                )
                try:
                    entry["version"] = version_of(handle, api)
                    entry["version_api"] = api["function"]
                except AttributeError:
                    pass  # this build does not export it
                emit({"event": "end", "step": step, "ok": True, "error": None})
            libraries[soname] = entry
        return libraries


def find_torch_dir(sys_path):
    """The torch package ``import torch`` would pick: the first sys.path entry with it."""
    for entry in sys_path:
        candidate = os.path.join(entry or os.getcwd(), "torch")
        if os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None


# torch/__init__.py is ~100 KB: far below this; /dev/zero behind a link is not.
SOURCE_CAP = 4 * 1024 * 1024


def read_source(path):
    """A Python source file of torch's: only a regular file (a FIFO would block open()
    for ever), opened non-blocking, at most SOURCE_CAP bytes; OSError otherwise."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError("{} is not a regular file".format(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = os.read(fd, SOURCE_CAP + 1)
        chunk = data
        while chunk and len(data) <= SOURCE_CAP:
            chunk = os.read(fd, SOURCE_CAP + 1 - len(data))
            data += chunk
    finally:
        os.close(fd)
    if len(data) > SOURCE_CAP:
        raise OSError("{} is larger than {} bytes".format(path, SOURCE_CAP))
    return data.decode("utf-8", "replace")


def torch_cuda_major(torch_dir):
    """The major of ``cuda`` in torch/version.py ("13" for "13.0"), or None.

    Read as the inside probe reads it: the last literal assigned to ``cuda`` wins.
    """
    try:
        tree = ast.parse(read_source(os.path.join(torch_dir, "version.py")))
    except (OSError, SyntaxError, ValueError):
        return None
    cuda = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "cuda" for t in targets):
            try:
                cuda = ast.literal_eval(node.value)
            except ValueError:
                continue
    return cuda.split(".")[0] if isinstance(cuda, str) and cuda else None


FLOW_FUNCTIONS = ("_load_global_deps", "_preload_cuda_deps", "_preload_cuda_lib")


def top_level_functions(text, names):
    """The source of the named module-level functions (a def runs to the next top-level line)."""
    lines = text.splitlines()
    out = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("def ") and line[4:].split("(", 1)[0].strip() in names:
            block = [line]
            index += 1
            while index < len(lines) and (
                not lines[index] or lines[index][0] in " \t#)" or lines[index].startswith("]")
            ):
                block.append(lines[index])
                index += 1
            out.append("\n".join(block))
            continue
        index += 1
    return out


def _called(call):
    return call.func.id if isinstance(call.func, ast.Name) else None


def preload_flow(torch_dir):
    """torch/__init__.py's preload list and behaviour, read (not run), or None.

    {"source", "after_success", "libraries": [[folder, glob], ...], "optional": [...]}
    """
    path = os.path.join(torch_dir, "__init__.py")
    try:
        text = read_source(path)
        # Only the loader functions are parsed: the whole file takes ~70 ms to parse.
        tree = ast.parse("\n".join(top_level_functions(text, FLOW_FUNCTIONS)), path)
    except (OSError, SyntaxError, ValueError):
        return None
    libraries = []
    optional = []
    after_success = False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if not any(isinstance(t, ast.Name) and t.id == "cuda_libs" for t in targets):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            pairs = value.items() if isinstance(value, dict) else value
            libraries = [
                [str(pair[0]), str(pair[1])]
                for pair in pairs
                if isinstance(pair, (tuple, list)) and len(pair) == 2
            ]
        elif isinstance(node, ast.Call) and _called(node) == "_preload_cuda_lib":
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if len(args) == 2 and all(isinstance(a, str) for a in args):
                optional.append([str(args[0]), str(args[1])])
        elif isinstance(node, ast.FunctionDef) and node.name == "_load_global_deps":
            # A preload in the `try` body (not the handler) runs even when the load worked.
            for inner in ast.walk(node):
                if isinstance(inner, ast.Try):
                    for statement in inner.body:
                        if any(
                            isinstance(c, ast.Call) and _called(c) == "_preload_cuda_deps"
                            for c in ast.walk(statement)
                        ):
                            after_success = True
    if not libraries:
        return None
    return {
        "source": path,
        "after_success": after_success,
        "libraries": libraries,
        "optional": optional,
    }


def _glob_names(directory, pattern, listings):
    """glob.glob(os.path.join(directory, pattern)) for a pattern without a slash, with each
    directory listed once (a plan globs the same wheel directory a dozen times)."""
    names = listings.get(directory)
    if names is None:
        try:
            names = os.listdir(directory)  # glob's own order: the directory's
        except OSError:
            names = []
        listings[directory] = names
    if not pattern.startswith("."):
        names = [n for n in names if not n.startswith(".")]  # glob skips hidden files
    return [os.path.join(directory, n) for n in fnmatch.filter(names, pattern)]


def preload_candidate(sys_path, folder, pattern, cuda_major, listings=None):
    """The file torch's _preload_cuda_lib picks: the first sys.path entry with a match."""
    listings = {} if listings is None else listings
    for entry in sys_path:
        found = _glob_names(os.path.join(entry, "nvidia", folder, "lib"), pattern, listings)
        if cuda_major:
            cu = os.path.join(entry, "nvidia", "cu" + cuda_major, "lib")
            found += _glob_names(cu, pattern, listings)
        found += _glob_names(os.path.join(entry, folder, "lib"), pattern, listings)
        if found:
            return os.path.realpath(found[0])
    return None


def flow_plan(torch_dir, flow, sys_path, cuda_major, rtld_global):
    """What to load for torch's own flow, from a preload_flow() result."""
    global_deps = os.path.join(torch_dir, "lib", "libtorch_global_deps.so")
    entries = []
    listings = {}
    for pairs, required in ((flow["libraries"], True), (flow["optional"], False)):
        for folder, pattern in pairs:
            path = preload_candidate(sys_path, folder, pattern, cuda_major, listings)
            entries.append(
                {
                    "folder": folder,
                    "glob": pattern,
                    "path": path,
                    "soname": os.path.basename(path) if path else None,
                    "required": required,
                }
            )
    return {
        "global_deps": global_deps if os.path.isfile(global_deps) else None,
        "preload": {
            "after_success": bool(flow["after_success"]),
            "error_keys": [e["glob"].split(".", 1)[0] for e in entries if e["required"]],
            "libraries": entries,
        },
        "rtld_global": bool(rtld_global),
    }


def own_flow_plan():
    """torch's flow as this interpreter finds it, or None (the doctor's copy is used)."""
    torch_dir = find_torch_dir(sys.path)
    if torch_dir is None:
        return None
    torch_dir = os.path.realpath(torch_dir)
    flow = preload_flow(torch_dir)
    if flow is None:
        return None
    paths = [p for p in sys.path if p]
    return flow_plan(
        torch_dir,
        flow,
        paths,
        torch_cuda_major(torch_dir),
        os.environ.get("TORCH_USE_RTLD_GLOBAL"),
    )


def read_line():
    return json.loads(sys.stdin.readline() or "{}")


def die_with_the_doctor():
    """Be killed when the doctor dies, even by SIGKILL (it then cannot clean up): a
    library that hangs must not keep this process alive as an orphan. Linux only."""
    marker = os.environ.get("TORCH_DOCTOR_CONTAINED", "")
    doctor = marker.split("-", 1)[0]
    if not sys.platform.startswith("linux") or not doctor.isdigit():
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    # Started through a wrapper that does not exec, the parent is the wrapper: tied to it
    # instead. If the doctor died before prctl took effect, go now.
    if os.getppid() != int(doctor):
        try:
            os.kill(int(doctor), 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            pass


def main():
    global _report
    die_with_the_doctor()
    # Libraries may print from their constructors: keep the report on its own descriptor.
    _report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # Run as `python -c`, sys.path[0] is '' (the working directory): not torch's sys.path.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    # torch's flow is read before the first line arrives: the doctor sends the options
    # only after it started every probe process and read its knowledge files.
    plan = own_flow_plan()
    options = read_line()
    doctors_flow_read = plan is None
    if plan is None:
        plan = read_line()  # torch/__init__.py unreadable here: the doctor's copy of its list

    def read_rest():
        if not doctors_flow_read:
            sys.stdin.readline()  # the doctor's copy of the flow: this process read torch's
        return read_line()

    runner = Runner(plan, options)
    import_error = runner.run(read_rest)
    sonames = list(plan.get("report", []))
    sonames += [s for s in runner.sonames if s not in sonames]
    libraries = runner.report(sonames, plan.get("versions", {}))
    emit({"event": "result", "libraries": libraries, "torch_import_error": import_error})
    sys.stderr.flush()
    # The libraries' destructors take ~30 ms and tell nothing: skip them. Closing the
    # output first lets the doctor go on while the kernel unmaps the libraries (~20 ms).
    _report.close()
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    os._exit(0)


if __name__ == "__main__":
    main()
