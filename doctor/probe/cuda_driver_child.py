"""Call cuInit and cuDriverGetVersion in libcuda.so.1; print one JSON object. Runs contained.

Run as ``python -B -c <this source>`` by doctor/probe/cuda_driver.py: cuInit can
hang or crash, so it never runs in the doctor's own process. Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any


def loaded_path(fragment: str) -> str | None:
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and fragment in parts[5]:
                    return os.path.realpath(parts[5].strip())
    except OSError:
        pass
    return None


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


def main() -> int:
    report: dict[str, Any] = {"loaded": False}
    try:
        # The CUDA driver library is nvcuda.dll on Windows, libcuda.so.1 everywhere else.
        lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError as exc:
        report["load_error"] = str(exc)
        print(json.dumps(report))
        return 0
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
        print(json.dumps(report))
        return 0
    report["init_result"] = result
    if result != 0:
        report.update(describe(lib, result))
    else:
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) == 0:
            report["device_count"] = count.value
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
