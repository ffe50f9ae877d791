"""Real ELF fixtures: stand-in CUDA libraries compiled at test time, packed into fake wheels.

Each stand-in is built from tests/c/stand_in.c by the system C compiler with a chosen
SONAME, NEEDED entries, DT_RPATH or DT_RUNPATH, symbol version script and exported version
function, so the doctor's ELF reader, loader model and load probe meet real files.

The fake torch mirrors the real one's layout: torch/lib/libtorch_global_deps.so and
libtorch_cuda.so carry NEEDED entries and a DT_RPATH of ``$ORIGIN/../../nvidia/<x>/lib``;
each NVIDIA wheel puts its libraries in ``nvidia/<component>/lib`` (the CUDA 12 layout).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.factory import FakeEnv

SOURCE = Path(__file__).with_name("c") / "stand_in.c"
LINUX = 'platform_system == "Linux"'


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


@dataclass(frozen=True)
class StandIn:
    """How to build one stand-in shared library."""

    soname: str
    defines: Mapping[str, str] = field(default_factory=dict)
    needed: Sequence[Path] = ()  # libraries to link against: each adds a NEEDED entry
    search: Sequence[str] = ()  # RPATH or RUNPATH entries
    runpath: bool = False  # DT_RUNPATH (--enable-new-dtags) instead of DT_RPATH
    version_script: str | None = None


class ElfBuilder:
    """Compiles stand-ins into a build directory, each distinct one once."""

    def __init__(self, build_dir: Path) -> None:
        self.build_dir = build_dir
        build_dir.mkdir(parents=True, exist_ok=True)

    def build(self, spec: StandIn) -> Path:
        key = hashlib.sha256(repr(spec).encode()).hexdigest()[:12]
        out_dir = self.build_dir / key
        out = out_dir / spec.soname
        if out.exists():
            return out
        out_dir.mkdir(parents=True, exist_ok=True)
        cc = compiler()
        assert cc is not None, "no C compiler"
        command = [
            cc,
            "-shared",
            "-fPIC",
            "-O0",
            "-o",
            str(out),
            str(SOURCE),
            f"-Wl,-soname,{spec.soname}",
            "-Wl,--no-as-needed",
        ]
        command += [f"-D{name}={value}" for name, value in spec.defines.items()]
        if spec.version_script is not None:
            script = out_dir / "symbols.map"
            script.write_text(spec.version_script)
            command.append(f"-Wl,--version-script={script}")
        if spec.search:
            command.append("-Wl,-rpath," + ":".join(spec.search))
            command.append("-Wl,--enable-new-dtags" if spec.runpath else "-Wl,--disable-new-dtags")
        command += [str(p) for p in spec.needed]
        subprocess.run(command, check=True, capture_output=True, text=True)
        return out


def nvjitlink(builder: ElfBuilder, minor: int, exports: Sequence[str]) -> Path:
    """libnvJitLink.so.12 whose symbols carry the version node libnvJitLink.so.12, as NVIDIA's."""
    symbols = " ".join(f"{s};" for s in (*exports, "nvJitLinkVersion"))
    defines = {
        "TWO_OUT_VERSION": "nvJitLinkVersion",
        "VERSION_MAJOR": "12",
        "VERSION_MINOR": str(minor),
    }
    if exports:
        defines["EXPORTED_SYMBOL"] = exports[0]
    return builder.build(
        StandIn(
            "libnvJitLink.so.12",
            defines=defines,
            version_script=f"libnvJitLink.so.12 {{ global: {symbols} local: *; }};\n",
        )
    )


def cudnn(builder: ElfBuilder, version: int) -> Path:
    return builder.build(
        StandIn(
            "libcudnn.so.9",
            defines={"SIZE_T_VERSION": "cudnnGetVersion", "VERSION_VALUE": str(version)},
            search=("$ORIGIN",),
        )
    )


CUDNN_SUBLIBRARIES = (
    "libcudnn_graph",
    "libcudnn_engines_precompiled",
    "libcudnn_engines_runtime_compiled",
    "libcudnn_heuristic",
    "libcudnn_ops",
    "libcudnn_cnn",
    "libcudnn_adv",
)

# torch 2.3's _load_global_deps (abridged to the wheels these tests install): the CUDA
# libraries are preloaded only when libtorch_global_deps.so fails, and nvjitlink is not
# among them (pytorch#111469, fixed later by pytorch#131295).
OLD_TORCH_INIT = '''
import ctypes, glob, os, platform, sys


def _preload_cuda_deps(lib_folder, lib_name):
    """Preloads cuda deps if they could not be found otherwise."""
    assert platform.system() == 'Linux', 'Should only be called on Linux'
    lib_path = None
    for path in sys.path:
        nvidia_path = os.path.join(path, 'nvidia')
        if not os.path.exists(nvidia_path):
            continue
        candidate_lib_paths = glob.glob(os.path.join(nvidia_path, lib_folder, 'lib', lib_name))
        if candidate_lib_paths and not lib_path:
            lib_path = candidate_lib_paths[0]
        if lib_path:
            break
    if not lib_path:
        raise ValueError(f"{lib_name} not found in the system path {sys.path}")
    ctypes.CDLL(lib_path)


def _load_global_deps():
    lib_path = os.path.join(os.path.dirname(__file__), 'lib', 'libtorch_global_deps.so')
    try:
        ctypes.CDLL(lib_path, mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        cuda_libs = {
            'cuda_runtime': 'libcudart.so.*[0-9]',
            'cudnn': 'libcudnn.so.*[0-9]',
            'cusparse': 'libcusparse.so.*[0-9]',
        }
        is_cuda_lib_err = [lib for lib in cuda_libs.values() if lib.split('.')[0] in err.args[0]]
        if not is_cuda_lib_err:
            raise err
        for lib_folder, lib_name in cuda_libs.items():
            _preload_cuda_deps(lib_folder, lib_name)
        ctypes.CDLL(lib_path, mode=ctypes.RTLD_GLOBAL)


raise ImportError("torch-doctor must never import torch")
'''

MODERN_TORCH_INIT = "raise ImportError('torch-doctor must never import torch')\n"


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    component: str  # nvidia/<component>/lib
    libraries: Mapping[str, Path]  # file name -> built library


class CudaTorchKit:
    """Builds a fake CUDA 12 torch and its NVIDIA wheels from stand-ins."""

    TORCH_VERSION = "2.5.1+cu124"

    def __init__(self, builder: ElfBuilder) -> None:
        self.builder = builder

    def runtime(self) -> Wheel:
        lib = self.builder.build(
            StandIn(
                "libcudart.so.12",
                defines={"INT_OUT_VERSION": "cudaRuntimeGetVersion", "VERSION_VALUE": "12040"},
            )
        )
        return Wheel(
            "nvidia-cuda-runtime-cu12", "12.4.127", "cuda_runtime", {"libcudart.so.12": lib}
        )

    def cudnn(self, version: int = 90100, wheel_version: str = "9.1.0.70") -> Wheel:
        libraries = {"libcudnn.so.9": cudnn(self.builder, version)}
        for stem in CUDNN_SUBLIBRARIES:
            libraries[f"{stem}.so.9"] = self.builder.build(
                StandIn(f"{stem}.so.9", search=("$ORIGIN",), runpath=True)
            )
        return Wheel("nvidia-cudnn-cu12", wheel_version, "cudnn", libraries)

    def nvjitlink(self) -> Wheel:
        lib = nvjitlink(self.builder, 4, ["__nvJitLinkComplete_12_4"])
        return Wheel("nvidia-nvjitlink-cu12", "12.4.127", "nvjitlink", {"libnvJitLink.so.12": lib})

    def cusparse(self) -> Wheel:
        # Linked against nvJitLink 12.4: needs __nvJitLinkComplete_12_4@libnvJitLink.so.12.
        # RUNPATH, as NVIDIA ships it: LD_LIBRARY_PATH is searched first.
        lib = self.builder.build(
            StandIn(
                "libcusparse.so.12",
                defines={
                    "PROPERTY_VERSION": "cusparseGetProperty",
                    "VERSION_MAJOR": "12",
                    "VERSION_MINOR": "3",
                    "VERSION_PATCH": "1",
                    "USED_SYMBOL": "__nvJitLinkComplete_12_4",
                },
                needed=(nvjitlink(self.builder, 4, ["__nvJitLinkComplete_12_4"]),),
                search=("$ORIGIN/../../nvjitlink/lib", "$ORIGIN"),
                runpath=True,
            )
        )
        return Wheel("nvidia-cusparse-cu12", "12.3.1.170", "cusparse", {"libcusparse.so.12": lib})

    def cufft(self, constructor: str | None = None) -> Wheel:
        defines = {
            "PROPERTY_VERSION": "cufftGetProperty",
            "VERSION_MAJOR": "11",
            "VERSION_MINOR": "2",
            "VERSION_PATCH": "1",
        }
        if constructor:
            defines[constructor] = "1"
        lib = self.builder.build(StandIn("libcufft.so.11", defines=defines))
        return Wheel("nvidia-cufft-cu12", "11.2.1.3", "cufft", {"libcufft.so.11": lib})

    def curand(self, constructor: str | None = None) -> Wheel:
        defines = {
            "PROPERTY_VERSION": "curandGetProperty",
            "VERSION_MAJOR": "10",
            "VERSION_MINOR": "3",
            "VERSION_PATCH": "5",
        }
        if constructor:
            defines[constructor] = "1"
        lib = self.builder.build(StandIn("libcurand.so.10", defines=defines))
        return Wheel("nvidia-curand-cu12", "10.3.5.147", "curand", {"libcurand.so.10": lib})

    def healthy_wheels(self) -> list[Wheel]:
        return [self.runtime(), self.cudnn(), self.nvjitlink(), self.cusparse()]

    def install(
        self,
        env: FakeEnv,
        wheels: Sequence[Wheel],
        *,
        pinned: Sequence[Wheel] = (),
        global_deps_needs: Sequence[str] = ("libcudart.so.12",),
        torch_init: str = MODERN_TORCH_INIT,
        install_wheels: bool = True,
    ) -> None:
        """torch needing every wheel's libraries, the wheels (unless told not to) and pins.

        ``pinned``: wheels torch requires without them being installed.
        """
        components = [w.component for w in (*wheels, *pinned)]
        rpath = [f"$ORIGIN/../../nvidia/{c}/lib" for c in components] + ["$ORIGIN"]
        by_soname = {name: lib for w in wheels for name, lib in w.libraries.items()}
        torch_needs = [s for w in (*wheels, *pinned) for s in self._sonames(w)]
        # Link against whatever is built; a pinned-only library is linked too (NEEDED only).
        global_deps = self.builder.build(
            StandIn(
                "libtorch_global_deps.so",
                needed=tuple(self._lib(s, by_soname, pinned) for s in global_deps_needs),
                search=tuple(rpath),
            )
        )
        torch_cuda = self.builder.build(
            StandIn(
                "libtorch_cuda.so",
                needed=tuple(self._lib(s, by_soname, pinned) for s in torch_needs),
                search=tuple(rpath),
            )
        )
        version_py = (
            f"__version__ = {self.TORCH_VERSION!r}\n"
            "debug = False\n"
            "cuda = '12.4'\n"
            "git_version = 'a8d6afb511a69687bbb2b7e88a3cf67917e1697e'\n"
            "hip = None\n"
        )
        requires = [f"{w.name}=={w.version}; {LINUX}" for w in (*wheels, *pinned)]
        env.install(
            "torch",
            self.TORCH_VERSION,
            requires_dist=requires,
            requires_python=">=3.9",
            files={
                "torch/__init__.py": torch_init,
                "torch/version.py": version_py,
                "torch/lib/libtorch_global_deps.so": global_deps,
                "torch/lib/libtorch_cuda.so": torch_cuda,
            },
            wheel_tag="cp311-cp311-manylinux_2_28_x86_64",
        )
        if install_wheels:
            for wheel in wheels:
                self.install_wheel(env, wheel)

    @staticmethod
    def _sonames(wheel: Wheel) -> list[str]:
        # torch NEEDs the main library of each wheel, not cuDNN's sub-libraries.
        return [n for n in wheel.libraries if not n.startswith("libcudnn_")]

    @staticmethod
    def _lib(soname: str, built: Mapping[str, Path], pinned: Sequence[Wheel]) -> Path:
        if soname in built:
            return built[soname]
        for wheel in pinned:
            if soname in wheel.libraries:
                return wheel.libraries[soname]
        raise KeyError(soname)

    @staticmethod
    def install_wheel(env: FakeEnv, wheel: Wheel) -> None:
        env.install(
            wheel.name,
            wheel.version,
            files={
                **{f"nvidia/{wheel.component}/lib/{n}": p for n, p in wheel.libraries.items()},
                f"nvidia/{wheel.component}/__init__.py": "",
            },
            wheel_tag="py3-none-manylinux_2_27_x86_64",
        )
