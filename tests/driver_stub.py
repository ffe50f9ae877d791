"""The NVIDIA driver, stood in at its C ABI for machines without a GPU.

tests/c/nvml_stub.c and tests/c/cuda_stub.c are compiled with the system C compiler
into ``libnvidia-ml.so.1`` and ``libcuda.so.1`` in one directory. A scenario is a small
config file the stubs read (TORCH_DOCTOR_STUB_CONFIG); ``LD_LIBRARY_PATH`` pointing at
the directory makes the real nvidia-ml-py and the doctor's real probes load them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

C_SOURCES = Path(__file__).resolve().parent / "c"
LIBRARIES = {"libnvidia-ml.so.1": "nvml_stub.c", "libcuda.so.1": "cuda_stub.c"}


def compile_stubs(directory: Path) -> Path:
    """Build both stand-in libraries into ``directory`` (needs `cc`)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build the driver stand-ins")
    directory.mkdir(parents=True, exist_ok=True)
    for soname, source in LIBRARIES.items():
        subprocess.run(
            [
                compiler,
                "-shared",
                "-fPIC",
                "-O1",
                "-Wall",
                "-Werror",
                f"-Wl,-soname,{soname}",
                "-o",
                str(directory / soname),
                str(C_SOURCES / source),
            ],
            check=True,
            capture_output=True,
        )
    return directory


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: str  # "9.0"
    memory_mib: int = 81559
    mig: bool | None = None  # None: MIG not supported
    uuid: str = ""
    # NVSwitch fabric state as NVML reports it: "1" not started, "2" in progress,
    # "3" completed, "3:999" completed with an error; "" not supported.
    fabric: str = ""

    def line(self, index: int) -> str:
        mig = "-" if self.mig is None else ("1" if self.mig else "0")
        uuid = self.uuid or f"GPU-{index:08x}-1111-2222-3333-444455556666"
        return f"gpu={self.name}|{self.capability}|{self.memory_mib}|{mig}|{uuid}||{self.fabric}"


H100 = Gpu("NVIDIA H100 80GB HBM3", "9.0", 81559, mig=False)
RTX_5090 = Gpu("NVIDIA GeForce RTX 5090", "12.0", 32607)
RTX_4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9", 24564)
TESLA_K80 = Gpu("Tesla K80", "3.7", 11441)
GTX_980 = Gpu("NVIDIA GeForce GTX 980", "5.2", 4096)


@dataclass(frozen=True)
class Driver:
    """One driver scenario: versions, GPUs and injected errors."""

    version: str = "580.95.05"
    cuda: int = 13000
    gpus: Sequence[Gpu] = field(default_factory=lambda: (H100,))
    nvml_init_error: int = 0
    cu_init_error: int = 0
    nvml_init_sleep: int = 0  # seconds: a driver that hangs
    cu_init_crash: bool = False  # cuInit aborts the process
    fabric_v: bool = True  # False: nvmlDeviceGetGpuFabricInfoV is "Function Not Found"
    raw_byte: int = 0  # appended to GPU names and the driver version: 255 is not UTF-8
    init_fork: int = 0  # seconds a daemon forked in nvmlInit holds the caller's stdout
    fork_pidfile: str = ""  # where that daemon writes its pid
    init_print: int = 0  # "[" characters nvmlInit writes to the caller's stdout, then "\n"
    # (gpu a, gpu b, nvmlGpuP2PStatus_t) for pairs whose P2P is not OK
    p2p: Sequence[tuple[int, int, int]] = ()
    # (gpu a, gpu b, nvmlGpuTopologyLevel_t) for pairs not behind one PCIe switch (10)
    topology: Sequence[tuple[int, int, int]] = ()

    def config(self) -> str:
        lines = [
            f"driver_version={self.version}",
            f"cuda_version={self.cuda}",
            f"nvml_init_error={self.nvml_init_error}",
            f"cu_init_error={self.cu_init_error}",
            f"nvml_init_sleep={self.nvml_init_sleep}",
            f"cu_init_crash={int(self.cu_init_crash)}",
            f"fabric_v={int(self.fabric_v)}",
            f"nvml_raw_byte={self.raw_byte}",
            f"nvml_init_fork={self.init_fork}",
            f"nvml_fork_pidfile={self.fork_pidfile}",
            f"nvml_init_print={self.init_print}",
            *(gpu.line(i) for i, gpu in enumerate(self.gpus)),
            *(f"p2p={a}-{b}:{status}" for a, b, status in self.p2p),
            *(f"topology={a}-{b}:{level}" for a, b, level in self.topology),
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DriverStubs:
    """The compiled stand-ins; ``env(driver)`` is what a CLI run under a scenario needs."""

    libraries: Path
    scratch: Path

    def env(self, driver: Driver, *, libcuda: bool = True, **extra: str) -> dict[str, str]:
        """The CLI's environment; ``libcuda=False`` leaves only libnvidia-ml.so.1 loadable."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        config = self.scratch / f"driver-{abs(hash(driver.config())):x}.conf"
        config.write_text(driver.config())
        libraries = self.libraries
        if not libcuda:
            libraries = self.scratch / "nvml-only"
            libraries.mkdir(exist_ok=True)
            if not (libraries / "libnvidia-ml.so.1").exists():
                (libraries / "libnvidia-ml.so.1").symlink_to(self.libraries / "libnvidia-ml.so.1")
        return {
            "LD_LIBRARY_PATH": str(libraries),
            "TORCH_DOCTOR_STUB_CONFIG": str(config),
            **extra,
        }
