"""Facts about the inspected interpreter and what is installed in it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class InterpreterFacts:
    """The inspected interpreter: where it is, its version, its paths and PEP 508 markers."""

    executable: str
    version: str
    implementation: str
    prefix: str
    base_prefix: str
    is_venv: bool
    purelib: str
    platlib: str
    sys_path: tuple[str, ...]
    marker_environment: dict[str, str] = field(default_factory=dict)
    conda: bool = False  # the prefix is a conda environment (it has conda-meta/)
    venv_creator: str | None = None  # "uv", "virtualenv" or "venv", from pyvenv.cfg
    # The prefix and the site directories (purelib, platlib) symlink-resolved, as library
    # paths are: resolved by the probe on the inspected machine, never by a later stage.
    real_prefix: str | None = None
    real_site_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlatformFacts:
    """The operating system, machine and C library the interpreter runs on."""

    system: str
    machine: str
    release: str
    libc: str | None
    libc_version: str | None


@dataclass(frozen=True)
class RecordFacts:
    """What the distribution's RECORD lists and whether those files exist."""

    present: bool
    files: int = 0
    missing_count: int = 0
    missing: tuple[str, ...] = ()  # the first few missing paths, relative to location
    error: str | None = None


@dataclass(frozen=True)
class DistributionFacts:
    """One installed distribution (a .dist-info directory) and its metadata."""

    name: str  # PEP 503 normalised
    display_name: str
    version: str
    location: str  # the sys.path entry holding the .dist-info
    metadata_dir: str
    installer: str | None = None
    requires_dist: tuple[str, ...] = ()
    provides_extra: tuple[str, ...] = ()
    requires_python: str | None = None
    wheel_tags: tuple[str, ...] = ()
    record: RecordFacts | None = None
    shadowed: bool = False  # an earlier sys.path entry holds another copy
    # location with symlinks resolved, by the probe on the inspected machine (for torch's
    # family and requirements): torch's RPATH reaches only its own real directory.
    real_location: str | None = None
    error: str | None = None  # corrupt or unreadable metadata


@dataclass(frozen=True)
class TorchBuildFacts:
    """torch's build, read from torch/version.py as text (torch is never imported)."""

    package_dir: str
    version: str | None = None
    cuda: str | None = None
    hip: str | None = None
    git_version: str | None = None
    debug: bool | None = None
    lib_files: tuple[str, ...] = ()  # names in torch/lib
    error: str | None = None

    @property
    def local_tag(self) -> str | None:
        if self.version and "+" in self.version:
            return self.version.split("+", 1)[1]
        return None

    @property
    def is_cuda_build(self) -> bool:
        return bool(self.cuda) or "libtorch_cuda.so" in self.lib_files


def triton_tool_variable(name: str) -> str:
    """The variable that points triton at its own copy of a tool: TRITON_PTXAS_BLACKWELL_PATH."""
    return f"TRITON_{name.upper().replace('-', '_')}_PATH"


@dataclass(frozen=True)
class NvidiaToolFacts:
    """One of triton's CUDA tools (ptxas, ptxas-blackwell), as triton would pick it."""

    name: str  # "ptxas", "ptxas-blackwell"
    path: str | None  # the file triton runs; None when there is none
    source: str  # "TRITON_PTXAS_PATH" (its environment variable) or "bundled with triton"
    release: str | None = None  # the CUDA release of the tool, "12.9", from `--version`
    error: str | None = None  # why the version could not be read


@dataclass(frozen=True)
class ToolchainFacts:
    """What torch.compile's GPU path needs beside torch: triton's ptxas and a C compiler."""

    triton_dir: str | None  # the triton package triton's import would use
    c_compiler: str | None  # what triton runs to build its launcher: $CC, gcc, then clang
    c_compiler_source: str | None = None  # "CC", "gcc" or "clang"
    tools: tuple[NvidiaToolFacts, ...] = ()
    tools_skipped: str | None = None  # why the tools were not asked for their version

    def tool(self, name: str) -> NvidiaToolFacts | None:
        return next((t for t in self.tools if t.name == name), None)
