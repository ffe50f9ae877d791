"""Load torch's CUDA libraries for real, inside the inspected interpreter.

Standard library only; run as ``python -B -I -S -c <source>`` in a contained process by
doctor/probe/libraries.py, which sends a load plan as JSON on stdin. torch is never
imported: the plan repeats what torch/__init__.py does before ``from torch._C import *``:

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
one it was and runs the plan again without it. Keep it compatible with old interpreters.
"""
# ruff: noqa: UP004, UP032  (no f-strings or new-style classes assumed in old interpreters)

import ctypes
import json
import os
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


DLINFO = _dlinfo()


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
    if DLINFO is not None:
        pointer = ctypes.POINTER(LinkMap)()
        if DLINFO(handle._handle, RTLD_DI_LINKMAP, ctypes.byref(pointer)) == 0 and pointer:
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
    def __init__(self, plan):
        self.plan = plan
        self.skip = set(plan.get("skip", ()))
        # Files that crashed or hung an earlier run: never loaded again, by any step.
        self.skip_requested = set(plan.get("skip_requested", ()))
        self.handles = []  # keep every library loaded until the end
        self.sonames = []  # every soname a step asked for, in order

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

    def cudnn_sublibraries(self, cudnn):
        if not cudnn:
            return
        handle = loaded_handle(cudnn["soname"])
        if handle is None:
            return
        path = path_of(handle, cudnn["soname"], mapped_files())
        if path is None:
            return
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


def main():
    global _report
    # Libraries may print from their constructors: keep the report on its own descriptor.
    _report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # Two JSON lines: torch's flow first (it starts while the doctor reads the ELF files),
    # then what torch's libraries NEED and what to report.
    plan = json.loads(sys.stdin.readline())
    runner = Runner(plan)
    import_error = runner.run(lambda: json.loads(sys.stdin.readline() or "{}"))
    sonames = list(plan.get("report", []))
    sonames += [s for s in runner.sonames if s not in sonames]
    libraries = runner.report(sonames, plan.get("versions", {}))
    emit({"event": "result", "libraries": libraries, "torch_import_error": import_error})


if __name__ == "__main__":
    main()
