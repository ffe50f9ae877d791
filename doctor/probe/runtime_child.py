"""The runtime probe's child: runs inside the inspected interpreter, imports torch, runs stages.

Standard library only (torch aside): it is sent to the inspected interpreter as source and
must run on whatever Python that is. It reads one JSON line on stdin,
``{"stages": ["import", "build", ...], "config": {...}}``, and writes one JSON line per
event on stdout, flushed at once so the parent can time and kill a stage that hangs:

    {"event": "start", "stage": "import"}
    {"event": "stage", "stage": "import", "status": "passed", "seconds": 2.1, ...}
    {"event": "done"}

A stage returns its evidence (a dict of JSON values) or raises ``Skipped(reason)``; any
other exception fails it with the exception's text and the last frames of its traceback.
Other runners (a torchrun collective stage) register more stages in ``STAGES`` and call
``main()``. Nothing here writes files.
"""

import json
import os
import sys
import time
import traceback
import warnings

TRACEBACK_FRAMES = 6
CUDA_LIBRARY_PREFIXES = (
    "libcuda.",
    "libcudart",
    "libcublas",
    "libcudnn",
    "libcufft",
    "libcufile",
    "libcurand",
    "libcusolver",
    "libcusparse",
    "libnccl",
    "libnvrtc",
    "libnvJitLink",
    "libnvToolsExt",
    "libnvshmem",
    "libcupti",
    "libnvidia-ml",
)

_OUT = sys.stdout


class Skipped(Exception):
    """The stage did not run here; the message says why."""


def emit(event):
    _OUT.write(json.dumps(event) + "\n")
    _OUT.flush()


class State:
    """What earlier stages learned (torch, the devices) for later ones."""

    def __init__(self, config):
        self.config = config
        self.torch = None
        self.cuda_devices = 0

    def need_torch(self):
        if self.torch is None:
            raise Skipped("torch did not import")
        return self.torch


def _warning_texts(caught):
    return [str(w.message) for w in caught]


def stage_import(state):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
    state.torch = torch
    return {
        "version": getattr(torch, "__version__", None),
        "file": getattr(torch, "__file__", None),
        "warnings": _warning_texts(caught),
    }


def stage_build(state):
    torch = state.need_torch()
    evidence = {"cuda": torch.version.cuda, "devices": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = bool(torch.cuda.is_available())
        count = torch.cuda.device_count() if available else 0
        try:
            evidence["cudnn"] = torch.backends.cudnn.version()
        except Exception as exc:  # cuDNN failing to load is evidence, not a crash
            evidence["cudnn_error"] = "%s: %s" % (type(exc).__name__, exc)
        for index in range(count):
            props = torch.cuda.get_device_properties(index)
            evidence["devices"].append(
                {
                    "index": index,
                    "name": props.name,
                    "capability": "%d.%d" % (props.major, props.minor),
                    "memory_bytes": int(props.total_memory),
                    "bf16": bool(_bf16_supported(torch, index)),
                }
            )
    evidence["available"] = available
    evidence["device_count"] = count
    evidence["warnings"] = _warning_texts(caught)
    state.cuda_devices = count
    return evidence


def _bf16_supported(torch, index):
    major, _ = torch.cuda.get_device_capability(index)
    return major >= 8  # Ampere and later run bf16 matmuls natively


def _small_inputs(torch):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=generator)
    b = torch.randn(64, 64, generator=generator)
    image = torch.randn(1, 3, 16, 16, generator=generator)
    kernel = torch.randn(4, 3, 3, 3, generator=generator)
    return a, b, image, kernel


def _max_error(torch, got, want):
    return float((got.float().cpu() - want).abs().max())


def stage_cpu(state):
    """fp32 matmul and a conv on the CPU: the reference the GPU stages compare with."""
    torch = state.need_torch()
    a, b, image, kernel = _small_inputs(torch)
    product = a @ b
    reference = sum(a[0, k].item() * b[k, 0].item() for k in range(a.shape[1]))
    error = abs(product[0, 0].item() - reference)
    if error > 1e-3:
        raise AssertionError("CPU matmul differs from a plain sum by %g" % error)
    out = torch.nn.functional.conv2d(image, kernel)
    return {"matmul_max_error": error, "conv_shape": list(out.shape)}


def stage_gpu(state, index):
    torch = state.need_torch()
    if index >= state.cuda_devices:
        raise Skipped("no such GPU visible to torch")
    device = torch.device("cuda", index)
    a, b, image, kernel = _small_inputs(torch)
    evidence = {"device": "cuda:%d" % index}
    block = torch.empty(1 << 20, dtype=torch.float32, device=device)  # allocate 4 MiB
    block.fill_(1.0)
    want = a @ b
    got = a.to(device) @ b.to(device)
    torch.cuda.synchronize(device)
    evidence["fp32_max_error"] = _max_error(torch, got, want)
    if evidence["fp32_max_error"] > 1e-2:  # TF32 may be on: loose, but not wrong
        raise AssertionError(
            "fp32 matmul on cuda:%d differs from the CPU by %g"
            % (index, evidence["fp32_max_error"])
        )
    if _bf16_supported(torch, index):
        got16 = a.to(device, torch.bfloat16) @ b.to(device, torch.bfloat16)
        torch.cuda.synchronize(device)
        evidence["bf16_max_error"] = _max_error(torch, got16, want)
        if evidence["bf16_max_error"] > 1.0:  # 8-bit mantissa over 64 products
            raise AssertionError(
                "bf16 matmul on cuda:%d differs from the CPU by %g"
                % (index, evidence["bf16_max_error"])
            )
    else:
        evidence["bf16"] = "not supported by this GPU: not run"
    conv_want = torch.nn.functional.conv2d(image, kernel)
    conv_got = torch.nn.functional.conv2d(image.to(device), kernel.to(device))
    torch.cuda.synchronize(device)
    evidence["conv_max_error"] = _max_error(torch, conv_got, conv_want)
    if evidence["conv_max_error"] > 1e-2:
        raise AssertionError(
            "conv on cuda:%d differs from the CPU by %g" % (index, evidence["conv_max_error"])
        )
    del block
    return evidence


def stage_no_gpu(state):
    """Stands for the GPU stages when torch sees no GPU: says why they did not run."""
    torch = state.need_torch()
    if torch.version.cuda is None:
        raise Skipped("not exercised: this torch is a CPU-only build")
    raise Skipped("not exercised: torch sees no GPU (torch.cuda.is_available() is False)")


def stage_nccl(state):
    torch = state.need_torch()
    nccl = getattr(torch.cuda, "nccl", None)
    if torch.version.cuda is None or nccl is None or not hasattr(torch._C, "_nccl_version"):
        raise Skipped("this torch is built without NCCL")
    version = nccl.version()
    if isinstance(version, tuple):
        version = ".".join(str(part) for part in version)
    evidence = {"version": str(version)}
    if state.cuda_devices < 2:
        evidence["all_reduce"] = "not exercised: needs 2 GPUs, %d visible" % state.cuda_devices
        return evidence
    tensors = [
        torch.full((4,), float(i + 1), device="cuda:%d" % i) for i in range(state.cuda_devices)
    ]
    nccl.all_reduce(tensors)
    for i in range(state.cuda_devices):
        torch.cuda.synchronize(i)
    want = float(sum(range(1, state.cuda_devices + 1)))
    got = [t[0].item() for t in tensors]
    if any(abs(g - want) > 1e-3 for g in got):
        raise AssertionError("NCCL all-reduce gave %r, expected %g on every GPU" % (got, want))
    evidence["all_reduce"] = "passed over %d GPUs" % state.cuda_devices
    return evidence


def stage_compile(state):
    torch = state.need_torch()
    device = "cuda" if state.cuda_devices else "cpu"

    def tiny(x):
        return torch.sin(x) * 2 + x

    x = torch.arange(16, dtype=torch.float32, device=device)
    compiled = torch.compile(tiny)
    got = compiled(x)
    error = _max_error(torch, got, tiny(x.cpu()))
    if error > 1e-4:
        raise AssertionError("compiled result differs by %g" % error)
    backend = "inductor (triton)" if device == "cuda" else "inductor (C++)"
    return {"device": device, "backend": backend}


def stage_maps(state):
    """The CUDA libraries this process has mapped (after importing torch)."""
    mapped = {}
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    path = parts[5].strip()
                    name = os.path.basename(path)
                    if name.startswith(CUDA_LIBRARY_PREFIXES) and ".so" in name:
                        mapped[name] = os.path.realpath(path)
    except OSError as exc:
        raise Skipped("/proc/self/maps unreadable: %s" % exc) from None
    return {"mapped": mapped}


STAGES = {
    "import": stage_import,
    "build": stage_build,
    "maps": stage_maps,
    "cpu": stage_cpu,
    "gpu": stage_no_gpu,
    "nccl": stage_nccl,
    "compile": stage_compile,
}


def stage_function(name):
    if name in STAGES:
        return STAGES[name]
    if name.startswith("gpu:"):
        index = int(name[4:])
        return lambda state: stage_gpu(state, index)
    return None


def _traceback_tail(exc):
    # This script's own frames ("<string>": it runs as python -c) say nothing to the user.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != "<string>"]
    frames = frames[-TRACEBACK_FRAMES:]
    return [line.rstrip("\n") for line in traceback.format_list(frames)]


def run_stage(name, state):
    function = stage_function(name)
    emit({"event": "start", "stage": name})
    started = time.perf_counter()
    event = {"event": "stage", "stage": name}
    if function is None:
        event.update(status="skipped", reason="unknown stage")
    else:
        try:
            event["evidence"] = function(state)
            event["status"] = "passed"
        except Skipped as exc:
            event.update(status="skipped", reason=str(exc))
        except BaseException as exc:  # SystemExit from a library is a failure too
            event.update(
                status="failed",
                error="%s: %s" % (type(exc).__name__, exc),
                traceback=_traceback_tail(exc),
            )
    event["seconds"] = round(time.perf_counter() - started, 3)
    emit(event)


def _private_stdout():
    """Events go to a copy of stdout; fd 1 becomes stderr so prints from torch or its
    libraries cannot corrupt the event stream (the parent captures stderr as evidence)."""
    global _OUT
    _OUT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def main():
    _private_stdout()
    request = json.loads(sys.stdin.readline() or "{}")
    state = State(request.get("config", {}))
    stages = list(request.get("stages", []))
    position = 0
    while position < len(stages):
        name = stages[position]
        run_stage(name, state)
        if name == "build":
            # One stage per GPU torch sees, right after the device count is known.
            gpus = ["gpu:%d" % i for i in range(state.cuda_devices)] or ["gpu"]
            stages[position + 1 : position + 1] = gpus
            emit({"event": "gpus", "stages": gpus})
        position += 1
    emit({"event": "done"})


if __name__ == "__main__":
    main()
