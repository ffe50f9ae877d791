"""Ask the NVIDIA driver through NVML, then through cuInit; one JSON line each. Runs contained.

Run as ``<doctor's python> -B -c <this source> [nvml] [cuda]`` by doctor/probe/driver.py,
because loading libnvidia-ml.so.1 or libcuda.so.1 and calling into the driver can hang or
crash. NVML goes first and its line is printed and flushed before libcuda is touched, so
a crash or hang in cuInit still leaves the NVML facts. It imports nvidia-ml-py (pynvml),
installed with torch-doctor, and nothing else outside the standard library. It writes
nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import sys
from typing import Any, Callable

NVML_ERROR_LIBRARY_NOT_FOUND = 12
# NVML return codes worth telling apart (nvml.h nvmlReturn_t).
STATUS_BY_CODE = {
    4: "no-permission",
    9: "driver-not-loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "library-not-found",
    18: "rm-version-mismatch",
}


def loaded_path(fragment: str) -> str | None:
    """The file the dynamic loader mapped for a library, from /proc/self/maps."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and fragment in parts[5]:
                    return os.path.realpath(parts[5].strip())
    except OSError:
        pass
    return None


def text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def error_of(pynvml: Any, exc: Exception) -> tuple[int | None, str]:
    """The return code and the driver's own text for it (nvmlErrorString), else pynvml's."""
    code = getattr(exc, "value", None)
    try:
        return code, text(pynvml.nvmlErrorString(code))
    except Exception:
        pass  # the library is not loaded, or has no nvmlErrorString
    try:
        return code, str(exc)
    except Exception:
        return code, f"NVML error {code}"


def query(pynvml: Any, call: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
    """(value, None) or (None, "message") for one optional query."""
    try:
        return call(*args), None
    except pynvml.NVMLError as exc:
        return None, error_of(pynvml, exc)[1]
    except UnicodeDecodeError as exc:
        # pynvml decodes the driver's bytes strictly; a name that is not UTF-8 is still a
        # name: its bytes, with what does not decode replaced.
        return bytes(exc.object).split(b"\0", 1)[0].decode("utf-8", "replace"), None


def gpu(pynvml: Any, index: int) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    out: dict[str, Any] = {"index": index, "errors": []}
    name, error = query(pynvml, pynvml.nvmlDeviceGetName, handle)
    out["name"] = text(name) if name is not None else f"GPU {index}"
    if error:
        out["errors"].append("name: " + error)
    cc, error = query(pynvml, pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    out["compute_capability"] = list(cc) if cc is not None else None
    if error:
        out["errors"].append("compute capability: " + error)
    memory, error = query(pynvml, pynvml.nvmlDeviceGetMemoryInfo, handle)
    out["memory_total_bytes"] = int(memory.total) if memory is not None else None
    if error:
        out["errors"].append("memory: " + error)
    mig, error = query(pynvml, pynvml.nvmlDeviceGetMigMode, handle)
    # "Not Supported" is the normal answer on GPUs without MIG: not an error worth listing.
    out["mig_enabled"] = bool(mig[0]) if mig is not None else None
    out["mig_pending"] = bool(mig[1]) if mig is not None else None
    uuid, error = query(pynvml, pynvml.nvmlDeviceGetUUID, handle)
    out["uuid"] = text(uuid) if uuid is not None else None
    if error:
        out["errors"].append("uuid: " + error)
    pci, error = query(pynvml, pynvml.nvmlDeviceGetPciInfo_v3, handle)
    out["pci_bus_id"] = text(pci.busId) if pci is not None else None
    out.update(fabric(pynvml, handle))
    return out


FABRIC_STATES = {1: "not-started", 2: "in-progress", 3: "completed"}


def fabric(pynvml: Any, handle: Any) -> dict[str, Any]:
    """The GPU's NVSwitch fabric registration (Hopper and later on NVSwitch systems).

    ``nvmlDeviceGetGpuFabricInfoV`` (drivers 550+) first, else the older
    ``nvmlDeviceGetGpuFabricInfo``; a driver or a nvidia-ml-py without either, or a GPU
    that answers "Not Supported" (state 0), has no fabric state.
    """
    attempts = (
        ("nvmlDeviceGetGpuFabricInfoV", "c_nvmlGpuFabricInfoV_t"),
        ("nvmlDeviceGetGpuFabricInfo", "c_nvmlGpuFabricInfo_t"),
    )
    for function_name, struct_name in attempts:
        call = getattr(pynvml, function_name, None)
        struct = getattr(pynvml, struct_name, None)
        if call is None or struct is None:
            continue
        info = struct()
        # These bindings pass the struct as given: it must be a pointer.
        _, error = query(pynvml, call, handle, ctypes.byref(info))
        if error is not None:
            continue  # absent from this driver (Function Not Found) or Not Supported
        state = FABRIC_STATES.get(int(info.state))
        if state is None:
            return {}
        out: dict[str, Any] = {"fabric_state": state}
        if state == "completed" and int(info.status) != 0:
            try:
                out["fabric_error"] = text(pynvml.nvmlErrorString(int(info.status)))
            except Exception:
                out["fabric_error"] = f"NVML error {int(info.status)}"
        return out
    return {}


def device_access(root: str = "/") -> list[dict[str, Any]]:
    """Open each /dev/nvidia* node read-write, as CUDA does, and say how it failed.

    In a container that lost its GPUs the nodes are still there but the device cgroup
    refuses them (EPERM); NVML then answers "Unknown Error".
    """
    dev = os.path.join(root, "dev")
    try:
        names = sorted(n for n in os.listdir(dev) if n.startswith("nvidia"))
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for name in names:
        path = os.path.join(dev, name)
        if os.path.isdir(path):
            continue  # /dev/nvidia-caps holds MIG capability nodes
        entry: dict[str, Any] = {"path": "/dev/" + name}
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            entry["error"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            entry["message"] = exc.strerror
        else:
            os.close(fd)
        out.append(entry)
    return out


# nvmlGpuP2PStatus_t, in words (nvml.h)
P2P_STATUS = {
    0: "ok",
    1: "chipset not supported",
    2: "GPU not supported",
    3: "IOH topology not supported",
    4: "disabled by regkey",
    5: "not supported",
    6: "unknown",
}


# nvmlGpuTopologyLevel_t: the closest common ancestor of two GPUs (nvidia-smi topo -m)
TOPOLOGY = {
    0: "the same board",
    10: "one PCIe switch (PIX)",
    20: "several PCIe switches (PXB)",
    30: "a PCIe host bridge (PHB)",
    40: "host bridges of one NUMA node (NODE)",
    50: "the link between NUMA nodes (SYS)",
}


def p2p_links(pynvml: Any, count: int) -> list[list[Any]]:
    """[a, b, status, topology] for each pair of GPUs: can they read each other's memory
    (P2P), and what connects them."""
    links: list[list[Any]] = []
    for a in range(count):
        for b in range(a + 1, count):
            try:
                first = pynvml.nvmlDeviceGetHandleByIndex(a)
                second = pynvml.nvmlDeviceGetHandleByIndex(b)
                # 0: NVML_P2P_CAPS_INDEX_READ (pynvml spells the constant as a tuple)
                status = pynvml.nvmlDeviceGetP2PStatus(first, second, 0)
                level, _ = query(pynvml, pynvml.nvmlDeviceGetTopologyCommonAncestor, first, second)
                links.append(
                    [
                        a,
                        b,
                        P2P_STATUS.get(int(status), f"status {int(status)}"),
                        None if level is None else TOPOLOGY.get(int(level), f"level {level}"),
                    ]
                )
            except pynvml.NVMLError as exc:
                links.append([a, b, "query failed: " + error_of(pynvml, exc)[1]])
            except AttributeError:
                return links  # an nvidia-ml-py without the call
    return links


def describe(lib: ctypes.CDLL, code: int) -> dict[str, str]:
    """cuGetErrorName / cuGetErrorString for a CUresult (they work before cuInit)."""
    name = ctypes.c_char_p()
    text = ctypes.c_char_p()
    out: dict[str, str] = {}
    try:
        if lib.cuGetErrorName(code, ctypes.byref(name)) == 0 and name.value:
            out["error_name"] = name.value.decode("utf-8", "replace")
        if lib.cuGetErrorString(code, ctypes.byref(text)) == 0 and text.value:
            out["error_text"] = text.value.decode("utf-8", "replace")
    except AttributeError:
        pass
    return out


def nvml_report() -> dict[str, Any]:
    report: dict[str, Any] = {"status": "ok"}
    if sys.platform != "win32":
        # pynvml's nvmlInit loads this very name; without a driver, importing pynvml first
        # (~35 ms) only to hear "not found" is most of this process's time.
        try:
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError as exc:
            report.update(
                status="library-not-found",
                error_code=NVML_ERROR_LIBRARY_NOT_FOUND,
                error_text=f"NVML Shared Library Not Found ({exc})",  # pynvml's words, + why
                library_path=None,
            )
            return report
    try:
        import pynvml
    except ImportError as exc:
        report.update(status="unknown", error_text=f"nvidia-ml-py is not importable: {exc}")
        return report
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        code, message = error_of(pynvml, exc)
        report.update(
            status=STATUS_BY_CODE.get(code or 0, "unknown"),
            error_code=code,
            error_text=message,
            library_path=loaded_path("libnvidia-ml"),
        )
        # The nodes are opened last (main), after cuInit's line: opening them can take long.
        report["nodes_wanted"] = sys.platform.startswith("linux")
        return report
    report["library_path"] = loaded_path("libnvidia-ml")
    try:
        version, error = query(pynvml, pynvml.nvmlSystemGetDriverVersion)
        report["driver_version"] = text(version) if version is not None else None
        cuda, error = query(pynvml, pynvml.nvmlSystemGetCudaDriverVersion_v2)
        report["cuda_driver_version"] = int(cuda) if cuda is not None else None
        if error:
            report["cuda_driver_version_error"] = error
        count, error = query(pynvml, pynvml.nvmlDeviceGetCount)
        gpus = []
        for index in range(count or 0):
            try:
                gpus.append(gpu(pynvml, index))
            except pynvml.NVMLError as exc:
                gpus.append(
                    {
                        "index": index,
                        "name": f"GPU {index}",
                        "errors": ["handle: " + error_of(pynvml, exc)[1]],
                    }
                )
        report["gpus"] = gpus
        report["p2p"] = p2p_links(pynvml, len(gpus))
        if error:
            report["device_count_error"] = error
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return report


def cuda_report() -> dict[str, Any]:
    report: dict[str, Any] = {"loaded": False}
    try:
        # The CUDA driver library is nvcuda.dll on Windows, libcuda.so.1 everywhere else.
        lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError as exc:
        report["load_error"] = str(exc)
        return report
    report["loaded"] = True
    report["library_path"] = loaded_path("libcuda")
    version = ctypes.c_int(0)
    try:
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            report["driver_version"] = version.value
    except AttributeError:
        report["load_error"] = "libcuda.so.1 has no cuDriverGetVersion"
    try:
        result = int(lib.cuInit(0))
    except AttributeError:
        report["load_error"] = "libcuda.so.1 has no cuInit"
        return report
    report["init_result"] = result
    if result != 0:
        report.update(describe(lib, result))
    else:
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) == 0:
            report["device_count"] = count.value
    return report


def die_with_the_doctor() -> None:
    """Be killed when the doctor dies, even by SIGKILL: a driver call that hangs must not
    keep this process alive as an orphan. Linux only (PR_SET_PDEATHSIG)."""
    doctor = os.environ.get("TORCH_DOCTOR_CONTAINED", "").split("-", 1)[0]
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


def main(stages: list[str]) -> int:
    die_with_the_doctor()
    nodes_wanted = False
    for stage in stages or ["nvml", "cuda"]:
        try:
            report = nvml_report() if stage == "nvml" else cuda_report()
        except Exception as exc:  # the driver's answer broke the probe: a fact, no traceback
            failure = f"the probe could not read the driver's answer: {type(exc).__name__}: {exc}"
            report = (
                {"status": "unknown", "error_text": failure}
                if stage == "nvml"
                else {"loaded": True, "load_error": failure}
            )
        nodes_wanted = nodes_wanted or bool(report.pop("nodes_wanted", False))
        sys.stdout.write(json.dumps({"stage": stage, "report": report}) + "\n")
        sys.stdout.flush()
    if nodes_wanted:
        sys.stdout.write(json.dumps({"stage": "nodes", "report": device_access()}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
