"""Facts about compiled extensions (shared objects that link torch) and the CUDA toolkit
that would build new ones."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CudaToolkitFacts",
    "ExtensionFacts",
    "ExtensionLibraryFacts",
    "ExtensionsFacts",
    "HostCompilerFacts",
    "MissingSymbol",
    "UnreadableObject",
]


@dataclass(frozen=True)
class MissingSymbol:
    """An undefined symbol of an extension that none of torch's libraries exports."""

    name: str  # mangled, as the loader reports it
    demangled: str | None = None  # None when no demangler answered
    version: str | None = None  # the version the extension requires, if any


@dataclass(frozen=True)
class ExtensionLibraryFacts:
    """One shared object of an extension that needs torch's libraries."""

    path: str
    torch_needed: tuple[str, ...] = ()  # torch's sonames among its NEEDED entries
    cuda_runtime: tuple[str, ...] = ()  # libcudart.so.N among its NEEDED entries
    torch_symbols: int = 0  # undefined symbols it expects from torch
    missing_count: int = 0
    missing: tuple[MissingSymbol, ...] = ()  # the first few
    uses_cxx11_abi: bool = False  # its torch symbols name std::__cxx11 types
    uses_old_string_abi: bool = False  # missing symbols name the pre-C++11 std::string
    gpu_targets: tuple[str, ...] | None = None  # fat binary targets; None when not read
    gpu_targets_error: str | None = None


@dataclass(frozen=True)
class UnreadableObject:
    """A shared object listed by a distribution that could not be read as this machine's ELF."""

    path: str
    reason: str


@dataclass(frozen=True)
class ExtensionFacts:
    """An installed distribution that ships shared objects needing torch."""

    name: str  # PEP 503 normalised
    display_name: str
    version: str
    installer: str | None = None
    torch_requirement: str | None = None  # its Requires-Dist on torch, as written
    built_for_torch: str | None = None  # the torch release it names: pin, tag or file name
    built_for_cxx11_abi: bool | None = None  # flash-attn's cxx11abiTRUE/FALSE
    built_for_cuda: str | None = None  # "12" from cu12 in its file name or local version
    wheel_file: str | None = None  # from direct_url.json, when installed from a file or URL
    libraries: tuple[ExtensionLibraryFacts, ...] = ()


@dataclass(frozen=True)
class ExtensionsFacts:
    """Every compiled extension of torch, and what torch's own libraries export."""

    torch_libraries: tuple[str, ...] = ()  # the torch/lib files whose exports were read
    torch_cxx11_abi: bool | None = None  # torch exports std::__cxx11 names (ABI=1)
    extensions: tuple[ExtensionFacts, ...] = ()
    unreadable: tuple[UnreadableObject, ...] = ()
    demangler: str | None = None  # what demangled the names ("c++filt"), or None
    error: str | None = None  # why torch's exports could not be read

    def extension(self, name: str) -> ExtensionFacts | None:
        return next((e for e in self.extensions if e.name == name), None)


@dataclass(frozen=True)
class HostCompilerFacts:
    """The C++ compiler nvcc would call (``$CC`` or gcc on PATH, as cpp_extension runs it)."""

    path: str
    source: str  # "CC" or "PATH"
    family: str | None = None  # "gcc" or "clang"
    version: str | None = None  # "12.2.0"
    error: str | None = None


@dataclass(frozen=True)
class CudaToolkitFacts:
    """The CUDA toolkit torch.utils.cpp_extension would build with, and the others on PATH."""

    cuda_home: str | None  # what cpp_extension picks: CUDA_HOME, CUDA_PATH, nvcc's, /usr/local/cuda
    cuda_home_source: str | None  # "CUDA_HOME", "CUDA_PATH", "nvcc on PATH", "/usr/local/cuda"
    nvcc: str | None  # <cuda_home>/bin/nvcc when it exists
    release: str | None = None  # "12.1" from `nvcc --version`
    error: str | None = None  # why the release could not be read
    others: tuple[tuple[str, str | None], ...] = ()  # (nvcc, release) of the others on PATH
    first_on_path: str | None = None  # the nvcc a plain `nvcc` runs (may be ``nvcc`` itself)
    host_compiler: HostCompilerFacts | None = None
