"""Compiled extensions built for another torch, C++ ABI, CUDA major or GPU (catalogue 29),
and the toolkit that would build new ones (catalogue 37).

An extension's shared objects are judged against the installed torch: the symbols they
need from torch's libraries (read by doctor/probe/extensions.py), the CUDA runtime they
NEED, and the GPU code in their fat binaries. One cause per shared object: a C++11-ABI
mismatch explains its missing symbols, so those are not reported again as a release
mismatch.
"""

from __future__ import annotations

from doctor.checks.cuda_compat import covering_target, parse_cuda, parse_target
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts
from doctor.facts.extensions import (
    CudaToolkitFacts,
    ExtensionFacts,
    ExtensionLibraryFacts,
    ExtensionsFacts,
)
from doctor.findings import Finding, Severity
from doctor.knowledge import host_compiler_limit

__all__ = ["abi_mismatch", "built_for_text", "symbol_text"]

FAMILY = "extensions"
SYMBOLS_SHOWN = 2


def symbol_text(name: str, demangled: str | None) -> str:
    return f"{demangled} ({name})" if demangled else name


def built_for_text(extension: ExtensionFacts) -> str | None:
    """What the extension says it was built for, in its own words."""
    parts = []
    if extension.wheel_file:
        parts.append(f"its wheel {extension.wheel_file}")
    if extension.torch_requirement:
        parts.append(f"Requires-Dist: {extension.torch_requirement}")
    elif extension.built_for_torch and not extension.wheel_file:
        parts.append(f"torch {extension.built_for_torch}")
    if "+" in extension.version and not extension.wheel_file:
        parts.append(f"local version {extension.version}")
    return "; ".join(parts) or None


def abi_mismatch(library: ExtensionLibraryFacts, torch_cxx11: bool | None) -> str | None:
    """ "cxx11" (built with the C++11 ABI beside an old-ABI torch), "old" (the reverse)."""
    if torch_cxx11 is False and library.uses_cxx11_abi:
        return "cxx11"
    if torch_cxx11 is True and library.uses_old_string_abi and library.missing_count:
        return "old"
    return None


def _extensions(facts: Facts) -> ExtensionsFacts | Skip:
    if facts.torch is None:
        return Skip("torch is not installed")
    extensions = facts.extensions
    if extensions is None or extensions.error is not None:
        reason = extensions.error if extensions is not None else None
        return Skip(reason or "torch's libraries were not read")
    if not extensions.extensions:
        return Skip("no installed distribution links torch's libraries")
    return extensions


def _companions_reported(facts: Facts) -> set[str]:
    """torchvision/torchaudio that torch-companion-mismatch already reports as built for
    another torch: that is their root cause, so their symbols are not reported again."""
    from doctor.checks.companions import torch_companion_mismatch

    outcome = torch_companion_mismatch(facts)
    if isinstance(outcome, Skip):
        return set()
    return {str(c["name"]) for f in outcome for c in f.data.get("companions", [])}


def _toolkit(facts: Facts) -> CudaToolkitFacts | Skip:
    if facts.cuda_toolkit is None:
        return Skip("no CUDA toolkit (CUDA_HOME, nvcc) found")
    return facts.cuda_toolkit


def _torch_label(facts: Facts) -> str:
    return f"torch {facts.torch.version}" if facts.torch and facts.torch.version else "torch"


def _missing_line(extension: ExtensionFacts, library: ExtensionLibraryFacts) -> str:
    shown = [
        symbol_text(m.name, m.demangled) + (f", version {m.version}" if m.version else "")
        for m in library.missing[:SYMBOLS_SHOWN]
    ]
    more = library.missing_count - len(shown)
    tail = f" and {more} more" if more > 0 else ""
    return (
        f"{extension.display_name} {extension.version}: {library.path} needs "
        f"{library.missing_count} of its {library.torch_symbols} torch symbols that torch does "
        f"not export: {'; '.join(shown)}{tail}"
    )


@check(
    "extension-abi-mismatch",
    family=FAMILY,
    summary="A compiled extension needs symbols the installed torch does not export: it was "
    "built for another torch.",
    label="compiled extensions find every torch symbol they need",
)
def extension_abi_mismatch(facts: Facts) -> Outcome:
    found = _extensions(facts)
    if isinstance(found, Skip):
        return found
    findings = []
    reported = _companions_reported(facts)
    for extension in found.extensions:
        if extension.name in reported:
            continue
        broken = [
            lib
            for lib in extension.libraries
            if lib.missing_count and abi_mismatch(lib, found.torch_cxx11_abi) is None
        ]
        if not broken:
            continue
        evidence = [_missing_line(extension, lib) for lib in broken]
        built_for = built_for_text(extension)
        if built_for:
            evidence.append(f"built for: {built_for}")
        evidence.append(f"installed: {_torch_label(facts)}")
        first = broken[0].missing[0]
        findings.append(
            Finding(
                id="extension-abi-mismatch",
                severity=Severity.ERROR,
                title=f"{extension.display_name} {extension.version} was built for another "
                f"torch than {_torch_label(facts)}",
                detail=(
                    "Its compiled code needs C++ symbols that none of the installed torch's "
                    "libraries exports, so importing it fails with `ImportError: … undefined "
                    f"symbol: {first.name}` (torch's C++ API is not stable across releases; "
                    "an extension works only with the torch it was compiled against)."
                ),
                evidence=tuple(evidence),
                data={
                    "distribution": extension.name,
                    "version": extension.version,
                    "libraries": [lib.path for lib in broken],
                    "missing": [m.name for lib in broken for m in lib.missing[:SYMBOLS_SHOWN]],
                    "built_for_torch": extension.built_for_torch,
                },
            )
        )
    return findings


@check(
    "extension-cxx11-abi-mismatch",
    family=FAMILY,
    summary="A compiled extension was built with the other C++11 ABI setting than torch.",
    label="compiled extensions use torch's C++11 ABI",
)
def extension_cxx11_abi_mismatch(facts: Facts) -> Outcome:
    found = _extensions(facts)
    if isinstance(found, Skip):
        return found
    if found.torch_cxx11_abi is None:
        return Skip("torch's C++ ABI could not be read (no libc10.so)")
    torch_abi = "1 (C++11 ABI)" if found.torch_cxx11_abi else "0 (pre-C++11 ABI)"
    findings = []
    reported = _companions_reported(facts)
    for extension in found.extensions:
        if extension.name in reported:
            continue
        mismatched = [
            (lib, kind)
            for lib in extension.libraries
            if (kind := abi_mismatch(lib, found.torch_cxx11_abi)) is not None
        ]
        if not mismatched:
            continue
        evidence = []
        for lib, kind in mismatched:
            own = "1 (std::__cxx11 names)" if kind == "cxx11" else "0 (std::string as Ss)"
            line = f"{lib.path}: built with _GLIBCXX_USE_CXX11_ABI={own}"
            if lib.missing:
                line += "; missing " + symbol_text(lib.missing[0].name, lib.missing[0].demangled)
            evidence.append(line)
        evidence.append(f"{_torch_label(facts)} is built with _GLIBCXX_USE_CXX11_ABI={torch_abi}")
        built_for = built_for_text(extension)
        if built_for:
            evidence.append(f"built for: {built_for}")
        wanted_cxx11 = bool(found.torch_cxx11_abi)
        findings.append(
            Finding(
                id="extension-cxx11-abi-mismatch",
                severity=Severity.ERROR,
                title=f"{extension.display_name} {extension.version} was built with the other "
                f"C++ ABI than {_torch_label(facts)}",
                detail=(
                    "libstdc++ has two ABIs for std::string and std::list, chosen at compile "
                    "time by _GLIBCXX_USE_CXX11_ABI. Every torch function taking a string has "
                    "a different symbol name in each, so an extension built with the other "
                    "setting fails to import with `undefined symbol: _ZN3c10…`."
                ),
                evidence=tuple(evidence),
                data={
                    "distribution": extension.name,
                    "version": extension.version,
                    "libraries": [lib.path for lib, _ in mismatched],
                    "torch_cxx11_abi": wanted_cxx11,
                    "built_for_torch": extension.built_for_torch,
                },
            )
        )
    return findings


@check(
    "extension-cuda-major-mismatch",
    family=FAMILY,
    summary="A compiled extension needs the CUDA runtime of another major than torch's.",
    label="compiled extensions need torch's CUDA runtime",
)
def extension_cuda_major_mismatch(facts: Facts) -> Outcome:
    found = _extensions(facts)
    if isinstance(found, Skip):
        return found
    torch_cuda = parse_cuda(facts.torch.cuda if facts.torch else None)
    if torch_cuda is None:
        return Skip("torch is not a CUDA build")
    wanted = f"libcudart.so.{torch_cuda[0]}"
    findings = []
    reported = _companions_reported(facts)
    for extension in found.extensions:
        if extension.name in reported:
            continue
        other = sorted(
            {
                (lib.path, soname)
                for lib in extension.libraries
                for soname in lib.cuda_runtime
                if soname != wanted
            }
        )
        if not other:
            continue
        runtimes = sorted({soname for _, soname in other})
        findings.append(
            Finding(
                id="extension-cuda-major-mismatch",
                severity=Severity.ERROR,
                title=f"{extension.display_name} {extension.version} needs "
                f"{', '.join(runtimes)}; {_torch_label(facts)} uses {wanted}",
                detail=(
                    f"The extension was compiled with CUDA {runtimes[0].rsplit('.', 1)[-1]}; "
                    f"torch was built with CUDA {facts.torch.cuda if facts.torch else ''}. "
                    "Importing it fails with `"
                    f"{runtimes[0]}: cannot open shared object file`, or, where that runtime is "
                    "installed too, two CUDA runtimes share the process and fail at the first "
                    "kernel launch."
                ),
                evidence=tuple(f"{path} NEEDs {soname}" for path, soname in other)
                + (
                    (f"built for: {built_for_text(extension)}",)
                    if built_for_text(extension)
                    else ()
                ),
                data={
                    "distribution": extension.name,
                    "version": extension.version,
                    "needs": runtimes,
                    "torch_cuda": facts.torch.cuda if facts.torch else None,
                    "built_for_cuda": extension.built_for_cuda,
                },
            )
        )
    return findings


@check(
    "extension-gpu-arch-unsupported",
    family=FAMILY,
    summary="A compiled extension carries no GPU code for a GPU here.",
    label="compiled extensions carry code for every GPU",
)
def extension_gpu_arch_unsupported(facts: Facts) -> Outcome:
    found = _extensions(facts)
    if isinstance(found, Skip):
        return found
    gpus = [g for g in (facts.machine.gpus if facts.machine else ()) if g.compute_capability]
    if not gpus:
        return Skip("no GPU is known")
    findings = []
    for extension in found.extensions:
        lacking = []
        for lib in extension.libraries:
            if not lib.gpu_targets:  # None: not read; (): CPU code only
                continue
            targets = [t for t in map(parse_target, lib.gpu_targets) if t is not None]
            for gpu in gpus:
                assert gpu.compute_capability is not None
                if covering_target(gpu.compute_capability, targets) is None:
                    lacking.append((lib, gpu))
        if not lacking:
            continue
        sms = sorted({str(gpu.sm) for _, gpu in lacking})
        findings.append(
            Finding(
                id="extension-gpu-arch-unsupported",
                severity=Severity.ERROR,
                title=f"{extension.display_name} {extension.version} carries no GPU code for "
                + ", ".join(sms),
                detail=(
                    "Its CUDA kernels were compiled for other GPU architectures and carry no "
                    "PTX the driver could compile for these GPUs, so its operations fail with "
                    "`CUDA error: no kernel image is available for execution on the device`."
                ),
                evidence=tuple(
                    f"GPU {gpu.index} ({gpu.name}, {gpu.sm}): {lib.path} carries "
                    + ", ".join(lib.gpu_targets or ())
                    for lib, gpu in lacking
                ),
                data={
                    "distribution": extension.name,
                    "version": extension.version,
                    "gpus": sms,
                },
            )
        )
    return findings


@check(
    "nvcc-cuda-mismatch",
    family=FAMILY,
    summary="The CUDA toolkit that would build extensions is of another major than torch's CUDA.",
    label="the CUDA toolkit (nvcc) matches torch's CUDA",
)
def nvcc_cuda_mismatch(facts: Facts) -> Outcome:
    toolkit = _toolkit(facts)
    if isinstance(toolkit, Skip):
        return toolkit
    torch_cuda = parse_cuda(facts.torch.cuda if facts.torch else None)
    if torch_cuda is None:
        return Skip("torch is not a CUDA build")
    release = parse_cuda(toolkit.release)
    if release is None:
        return Skip(f"nvcc's release is unknown ({toolkit.error or 'not read'})")
    if release[0] == torch_cuda[0]:
        return []
    evidence = [
        f"CUDA_HOME: {toolkit.cuda_home} (from {toolkit.cuda_home_source}); "
        f"{toolkit.nvcc}: release {toolkit.release}",
        f"{_torch_label(facts)} was built with CUDA {facts.torch.cuda if facts.torch else ''}",
    ]
    evidence += [
        f"also on PATH: {path} (release {rel or 'unknown'})" for path, rel in toolkit.others
    ]
    return [
        Finding(
            id="nvcc-cuda-mismatch",
            severity=Severity.WARNING,
            title=f"building extensions would use CUDA {toolkit.release}; torch was built with "
            f"CUDA {facts.torch.cuda if facts.torch else ''}",
            detail=(
                "torch.utils.cpp_extension refuses to build a CUDA extension with a toolkit of "
                "another major: `RuntimeError: The detected CUDA version "
                f"({toolkit.release}) mismatches the version that was used to compile PyTorch "
                f"({facts.torch.cuda if facts.torch else ''}). Please make sure to use the same "
                "CUDA versions.` Installing a package from source (flash-attn, xformers, a "
                "`--no-build-isolation` rebuild) stops there."
            ),
            evidence=tuple(evidence),
            data={
                "cuda_home": toolkit.cuda_home,
                "nvcc_release": toolkit.release,
                "torch_cuda": facts.torch.cuda if facts.torch else None,
                "others": [{"nvcc": p, "release": r} for p, r in toolkit.others],
            },
        )
    ]


@check(
    "nvcc-host-compiler-unsupported",
    family=FAMILY,
    summary="The host compiler is newer than the CUDA toolkit's nvcc accepts.",
    label="nvcc accepts the host compiler",
)
def nvcc_host_compiler_unsupported(facts: Facts) -> Outcome:
    toolkit = _toolkit(facts)
    if isinstance(toolkit, Skip):
        return toolkit
    release = parse_cuda(toolkit.release)
    compiler = toolkit.host_compiler
    if release is None or compiler is None or compiler.version is None:
        return Skip("nvcc's release or the host compiler's version is unknown")
    limit = host_compiler_limit(release)
    if limit is None:
        return Skip(f"no host compiler table entry for CUDA {toolkit.release}")
    major = int(compiler.version.split(".")[0])
    newest = limit.gcc_max if compiler.family == "gcc" else limit.clang_max
    if newest is None or major <= newest:
        return []
    family = compiler.family or "gcc"
    return [
        Finding(
            id="nvcc-host-compiler-unsupported",
            severity=Severity.WARNING,
            title=f"nvcc {toolkit.release} refuses {family} {compiler.version} as host compiler "
            f"({family} {newest} is its newest)",
            detail=(
                "nvcc compiles the host side of every .cu file with this compiler and stops at "
                f"its own version check: `#error -- unsupported GNU version! gcc versions later "
                f"than {newest} are not supported!`. Building an extension from source fails."
            ),
            evidence=(
                f"host compiler: {compiler.path} ({family} {compiler.version}, from "
                f"{compiler.source})",
                f"nvcc: {toolkit.nvcc} (CUDA {toolkit.release}); newest {family} it accepts: "
                f"{newest} ({limit.verified})",
            ),
            data={
                "compiler": compiler.path,
                "family": family,
                "version": compiler.version,
                "newest": newest,
                "nvcc_release": toolkit.release,
            },
        )
    ]


@check(
    "several-cuda-toolkits",
    family=FAMILY,
    summary="The first nvcc on PATH is of another CUDA major than CUDA_HOME's: builds disagree "
    "on the toolkit.",
    label="the nvcc on PATH is CUDA_HOME's CUDA major",
)
def several_cuda_toolkits(facts: Facts) -> Outcome:
    toolkit = _toolkit(facts)
    if isinstance(toolkit, Skip):
        return toolkit
    chosen = parse_cuda(toolkit.release)
    torch_cuda = parse_cuda(facts.torch.cuda if facts.torch else None)
    if chosen is None or torch_cuda is None:
        return Skip("nvcc's release or torch's CUDA is unknown")
    if chosen[0] != torch_cuda[0]:
        return Skip("nvcc-cuda-mismatch names the toolkits")
    # What a plain `nvcc` runs: the first on PATH, when it is not CUDA_HOME's own.
    first = next(((p, r) for p, r in toolkit.others if p == toolkit.first_on_path), None)
    first_release = parse_cuda(first[1]) if first is not None else None
    if first is None or first_release is None or first_release[0] == chosen[0]:
        return []
    other = [first]
    return [
        Finding(
            id="several-cuda-toolkits",
            severity=Severity.WARNING,
            title=f"`nvcc` on PATH is CUDA {first[1]}; torch's extensions build with CUDA_HOME's "
            f"CUDA {toolkit.release}",
            detail=(
                "torch.utils.cpp_extension builds with CUDA_HOME's toolkit, but build systems "
                "that run `nvcc` from PATH (CMake's CUDA language support, Makefiles, "
                "scripts) take the other one, so one package builds against "
                f"CUDA {toolkit.release} and the next against another major."
            ),
            evidence=(
                f"CUDA_HOME: {toolkit.cuda_home} (from {toolkit.cuda_home_source}); "
                f"{toolkit.nvcc}: release {toolkit.release}",
                *(f"first nvcc on PATH: {path} (release {rel})" for path, rel in other),
            ),
            data={
                "cuda_home": toolkit.cuda_home,
                "nvcc_release": toolkit.release,
                "others": [{"nvcc": p, "release": r} for p, r in other],
            },
        )
    ]
