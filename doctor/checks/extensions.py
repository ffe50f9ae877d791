"""Compiled extensions built for another torch, C++ ABI, CUDA major or GPU (catalogue 29),
and the toolkit that would build new ones (catalogue 37).

An extension's shared objects are judged against the installed torch: the symbols they
need from torch's libraries (read by doctor/probe/extensions.py), the CUDA runtime they
NEED, and the GPU code in their fat binaries. One cause per shared object: a C++11-ABI
mismatch explains its missing symbols, so those are not reported again as a release
mismatch. torchvision/torchaudio built for another torch are torch-companion-mismatch's
(their findings here hang under it: ``caused_by``). Remedies: the extension's own build
for this torch, a rebuild against the installed torch, or the torch it was built for.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context, Workflow
from doctor.derive.cuda_compat import covering_target, parse_cuda, parse_target
from doctor.facts.extensions import (
    CudaToolkitFacts,
    ExtensionFacts,
    ExtensionLibraryFacts,
    ExtensionsFacts,
)
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import (
    host_compiler_limit,
    pytorch_index_url,
    torch_builds,
    torch_release,
)
from doctor.remedies import conda_note, install_command, pyproject_target

__all__ = [
    "ExtensionAbiMismatch",
    "ExtensionCudaMajorMismatch",
    "ExtensionCxx11AbiMismatch",
    "ExtensionGpuArchUnsupported",
    "NvccCudaMismatch",
    "NvccHostCompilerUnsupported",
    "NvccRef",
    "SeveralCudaToolkits",
    "abi_mismatch",
    "built_for_text",
    "symbol_text",
]

FAMILY = "extensions"
SYMBOLS_SHOWN = 2
# torchvision/torchaudio: when their pin names another torch, that is the root cause.
COMPANION_ROOT = ("torch-companion-mismatch",)


# --- payloads ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ExtensionPayload(Payload):
    """The extension a finding is about, and what it says it was built for."""

    distribution: str  # PEP 503 normalised name
    display_name: str
    version: str
    built_for_torch: str | None  # the torch release its pin, tag or file name names
    wheel_file: str | None  # its wheel's file name, from direct_url.json

    def subjects(self) -> frozenset[str]:
        return frozenset({self.distribution})


@dataclass(frozen=True)
class ExtensionAbiMismatch(_ExtensionPayload):
    libraries: tuple[str, ...]  # its shared objects that miss torch symbols
    missing: tuple[str, ...]  # the first missing symbols of each, mangled


@dataclass(frozen=True)
class ExtensionCxx11AbiMismatch(_ExtensionPayload):
    libraries: tuple[str, ...]
    torch_cxx11_abi: bool  # torch's _GLIBCXX_USE_CXX11_ABI, which a rebuild must use


@dataclass(frozen=True)
class ExtensionCudaMajorMismatch(_ExtensionPayload):
    needs: tuple[str, ...]  # the CUDA runtimes it NEEDs, e.g. libcudart.so.12
    torch_cuda: str | None
    built_for_cuda: str | None


@dataclass(frozen=True)
class ExtensionGpuArchUnsupported(_ExtensionPayload):
    gpus: tuple[str, ...]  # sm_XY of the GPUs it has no code for


@dataclass(frozen=True)
class NvccRef:
    nvcc: str
    release: str | None


@dataclass(frozen=True)
class NvccCudaMismatch(Payload):
    cuda_home: str | None
    nvcc_release: str | None
    torch_cuda: str | None
    others: tuple[NvccRef, ...]  # every other nvcc on PATH


@dataclass(frozen=True)
class NvccHostCompilerUnsupported(Payload):
    compiler: str
    family: str
    version: str
    newest: int
    nvcc_release: str | None


@dataclass(frozen=True)
class SeveralCudaToolkits(Payload):
    cuda_home: str | None
    nvcc_release: str | None
    others: tuple[NvccRef, ...]  # the first nvcc on PATH, of another major


# --- shared pieces ----------------------------------------------------------------------------


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


def _extension_fields(
    extension: ExtensionFacts,
) -> tuple[str, str, str, str | None, str | None]:
    """The fields every extension payload starts with, in _ExtensionPayload's order."""
    return (
        extension.name,
        extension.display_name,
        extension.version,
        extension.built_for_torch,
        extension.wheel_file,
    )


def _extensions(ctx: Context) -> ExtensionsFacts | Skip:
    extensions = ctx.facts.extensions
    if extensions is None or extensions.error is not None:
        reason = extensions.error if extensions is not None else None
        return Skip(reason or "torch's libraries were not read")
    if not extensions.extensions:
        return Skip("no installed distribution links torch's libraries")
    return extensions


def _toolkit(ctx: Context) -> CudaToolkitFacts | Skip:
    if ctx.facts.cuda_toolkit is None:
        return Skip("no CUDA toolkit (CUDA_HOME, nvcc) found")
    return ctx.facts.cuda_toolkit


def _torch_cuda(ctx: Context) -> str:
    return (ctx.facts.torch.cuda or "") if ctx.facts.torch is not None else ""


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


# --- compiled extensions ----------------------------------------------------------------------


@check(
    "extension-abi-mismatch",
    severities=(Severity.ERROR,),
    family=FAMILY,
    summary="A compiled extension needs symbols the installed torch does not export: it was "
    "built for another torch.",
    label="compiled extensions find every torch symbol they need",
    payload=ExtensionAbiMismatch,
    requires=("torch", "linux"),
    caused_by=COMPANION_ROOT,
)
def extension_abi_mismatch(ctx: Context) -> Outcome:
    found = _extensions(ctx)
    if isinstance(found, Skip):
        return found
    findings = []
    for extension in found.extensions:
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
        evidence.append(f"installed: {ctx.torch_label}")
        first = broken[0].missing[0]
        findings.append(
            Finding(
                id="extension-abi-mismatch",
                severity=Severity.ERROR,
                title=f"{extension.display_name} {extension.version} was built for another "
                f"torch than {ctx.torch_label}",
                detail=(
                    "Its compiled code needs C++ symbols that none of the installed torch's "
                    "libraries exports, so importing it fails with `ImportError: … undefined "
                    f"symbol: {first.name}` (torch's C++ API is not stable across releases; "
                    "an extension works only with the torch it was compiled against)."
                ),
                evidence=tuple(evidence),
                data=ExtensionAbiMismatch(
                    *_extension_fields(extension),
                    libraries=tuple(lib.path for lib in broken),
                    missing=tuple(m.name for lib in broken for m in lib.missing[:SYMBOLS_SHOWN]),
                ),
            )
        )
    return findings


@check(
    "extension-cxx11-abi-mismatch",
    severities=(Severity.ERROR,),
    family=FAMILY,
    summary="A compiled extension was built with the other C++11 ABI setting than torch.",
    label="compiled extensions use torch's C++11 ABI",
    payload=ExtensionCxx11AbiMismatch,
    requires=("torch", "linux"),
    caused_by=COMPANION_ROOT,
)
def extension_cxx11_abi_mismatch(ctx: Context) -> Outcome:
    found = _extensions(ctx)
    if isinstance(found, Skip):
        return found
    if found.torch_cxx11_abi is None:
        return Skip("torch's C++ ABI could not be read (no libc10.so)")
    torch_abi = "1 (C++11 ABI)" if found.torch_cxx11_abi else "0 (pre-C++11 ABI)"
    findings = []
    for extension in found.extensions:
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
        evidence.append(f"{ctx.torch_label} is built with _GLIBCXX_USE_CXX11_ABI={torch_abi}")
        built_for = built_for_text(extension)
        if built_for:
            evidence.append(f"built for: {built_for}")
        findings.append(
            Finding(
                id="extension-cxx11-abi-mismatch",
                severity=Severity.ERROR,
                title=f"{extension.display_name} {extension.version} was built with the other "
                f"C++ ABI than {ctx.torch_label}",
                detail=(
                    "libstdc++ has two ABIs for std::string and std::list, chosen at compile "
                    "time by _GLIBCXX_USE_CXX11_ABI. Every torch function taking a string has "
                    "a different symbol name in each, so an extension built with the other "
                    "setting fails to import with `undefined symbol: _ZN3c10…`."
                ),
                evidence=tuple(evidence),
                data=ExtensionCxx11AbiMismatch(
                    *_extension_fields(extension),
                    libraries=tuple(lib.path for lib, _ in mismatched),
                    torch_cxx11_abi=bool(found.torch_cxx11_abi),
                ),
            )
        )
    return findings


@check(
    "extension-cuda-major-mismatch",
    severities=(Severity.ERROR,),
    family=FAMILY,
    summary="A compiled extension needs the CUDA runtime of another major than torch's.",
    label="compiled extensions need torch's CUDA runtime",
    payload=ExtensionCudaMajorMismatch,
    requires=("torch", "linux", "torch-cuda-version"),
    caused_by=COMPANION_ROOT,
)
def extension_cuda_major_mismatch(ctx: Context) -> Outcome:
    found = _extensions(ctx)
    if isinstance(found, Skip):
        return found
    torch_cuda = parse_cuda(_torch_cuda(ctx))
    if torch_cuda is None:
        return Skip(f"torch's CUDA release is unreadable ({_torch_cuda(ctx)!r})")
    wanted = f"libcudart.so.{torch_cuda[0]}"
    findings = []
    for extension in found.extensions:
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
        built_for = built_for_text(extension)
        findings.append(
            Finding(
                id="extension-cuda-major-mismatch",
                severity=Severity.ERROR,
                title=f"{extension.display_name} {extension.version} needs "
                f"{', '.join(runtimes)}; {ctx.torch_label} uses {wanted}",
                detail=(
                    f"The extension was compiled with CUDA {runtimes[0].rsplit('.', 1)[-1]}; "
                    f"torch was built with CUDA {_torch_cuda(ctx)}. Importing it fails with `"
                    f"{runtimes[0]}: cannot open shared object file`, or, where that runtime is "
                    "installed too, two CUDA runtimes share the process and fail at the first "
                    "kernel launch."
                ),
                evidence=tuple(f"{path} NEEDs {soname}" for path, soname in other)
                + ((f"built for: {built_for}",) if built_for else ()),
                data=ExtensionCudaMajorMismatch(
                    *_extension_fields(extension),
                    needs=tuple(runtimes),
                    torch_cuda=_torch_cuda(ctx) or None,
                    built_for_cuda=extension.built_for_cuda,
                ),
            )
        )
    return findings


@check(
    "extension-gpu-arch-unsupported",
    severities=(Severity.ERROR,),
    family=FAMILY,
    summary="A compiled extension carries no GPU code for a GPU here.",
    label="compiled extensions carry code for every GPU",
    payload=ExtensionGpuArchUnsupported,
    requires=("torch", "linux", "gpu"),
)
def extension_gpu_arch_unsupported(ctx: Context) -> Outcome:
    found = _extensions(ctx)
    if isinstance(found, Skip):
        return found
    machine = ctx.facts.machine
    gpus = [g for g in (machine.gpus if machine is not None else ()) if g.compute_capability]
    if not gpus:
        return Skip("no GPU's compute capability is known")
    if not any(lib.gpu_targets for e in found.extensions for lib in e.libraries):
        return Skip("no extension's shared objects carry GPU code")
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
                data=ExtensionGpuArchUnsupported(
                    *_extension_fields(extension),
                    gpus=tuple(sms),
                ),
            )
        )
    return findings


# --- the toolkit that would build extensions --------------------------------------------------


@check(
    "nvcc-cuda-mismatch",
    severities=(Severity.WARNING,),
    family=FAMILY,
    summary="The CUDA toolkit that would build extensions is of another major than torch's CUDA.",
    label="the CUDA toolkit (nvcc) matches torch's CUDA",
    payload=NvccCudaMismatch,
    requires=("torch", "torch-cuda-version"),
)
def nvcc_cuda_mismatch(ctx: Context) -> Outcome:
    toolkit = _toolkit(ctx)
    if isinstance(toolkit, Skip):
        return toolkit
    torch_text = _torch_cuda(ctx)
    torch_cuda = parse_cuda(torch_text)
    if torch_cuda is None:
        return Skip(f"torch's CUDA release is unreadable ({torch_text!r})")
    release = parse_cuda(toolkit.release)
    if release is None:
        return Skip(f"nvcc's release is unknown ({toolkit.error or 'not read'})")
    if release[0] == torch_cuda[0]:
        return []
    evidence = [
        f"CUDA_HOME: {toolkit.cuda_home} (from {toolkit.cuda_home_source}); "
        f"{toolkit.nvcc}: release {toolkit.release}",
        f"{ctx.torch_label} was built with CUDA {torch_text}",
    ]
    evidence += [
        f"also on PATH: {path} (release {rel or 'unknown'})" for path, rel in toolkit.others
    ]
    return [
        Finding(
            id="nvcc-cuda-mismatch",
            severity=Severity.WARNING,
            title=f"building extensions would use CUDA {toolkit.release}; torch was built with "
            f"CUDA {torch_text}",
            detail=(
                "torch.utils.cpp_extension refuses to build a CUDA extension with a toolkit of "
                "another major: `RuntimeError: The detected CUDA version "
                f"({toolkit.release}) mismatches the version that was used to compile PyTorch "
                f"({torch_text}). Please make sure to use the same "
                "CUDA versions.` Installing a package from source (flash-attn, xformers, a "
                "`--no-build-isolation` rebuild) stops there."
            ),
            evidence=tuple(evidence),
            data=NvccCudaMismatch(
                cuda_home=toolkit.cuda_home,
                nvcc_release=toolkit.release,
                torch_cuda=torch_text,
                others=tuple(NvccRef(p, r) for p, r in toolkit.others),
            ),
        )
    ]


@check(
    "nvcc-host-compiler-unsupported",
    severities=(Severity.WARNING,),
    family=FAMILY,
    summary="The host compiler is newer than the CUDA toolkit's nvcc accepts.",
    label="nvcc accepts the host compiler",
    payload=NvccHostCompilerUnsupported,
)
def nvcc_host_compiler_unsupported(ctx: Context) -> Outcome:
    toolkit = _toolkit(ctx)
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
    family = compiler.family or "gcc"
    newest = limit.gcc_max if family == "gcc" else limit.clang_max
    if newest is None:
        return Skip(f"no {family} limit for CUDA {toolkit.release} in the host compiler table")
    if major <= newest:
        return []
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
            data=NvccHostCompilerUnsupported(
                compiler=compiler.path,
                family=family,
                version=compiler.version,
                newest=newest,
                nvcc_release=toolkit.release,
            ),
        )
    ]


@check(
    "several-cuda-toolkits",
    severities=(Severity.WARNING,),
    family=FAMILY,
    summary="The first nvcc on PATH is of another CUDA major than CUDA_HOME's: builds disagree "
    "on the toolkit.",
    label="the nvcc on PATH is CUDA_HOME's CUDA major",
    payload=SeveralCudaToolkits,
    # When CUDA_HOME's toolkit is itself of another major, nvcc-cuda-mismatch names the
    # toolkits on PATH and the one to point CUDA_HOME at: one cause, one finding.
    requires=("torch", "torch-cuda-version", "nvcc-cuda-mismatch"),
)
def several_cuda_toolkits(ctx: Context) -> Outcome:
    toolkit = _toolkit(ctx)
    if isinstance(toolkit, Skip):
        return toolkit
    chosen = parse_cuda(toolkit.release)
    if chosen is None:
        return Skip(f"nvcc's release is unknown ({toolkit.error or 'not read'})")
    # What a plain `nvcc` runs: the first on PATH, when it is not CUDA_HOME's own.
    first = next(((p, r) for p, r in toolkit.others if p == toolkit.first_on_path), None)
    first_release = parse_cuda(first[1]) if first is not None else None
    if first is None or first_release is None or first_release[0] == chosen[0]:
        return []
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
                f"first nvcc on PATH: {first[0]} (release {first[1]})",
            ),
            data=SeveralCudaToolkits(
                cuda_home=toolkit.cuda_home,
                nvcc_release=toolkit.release,
                others=(NvccRef(*first),),
            ),
        )
    ]


# --- remedies ---------------------------------------------------------------------------------


def _uses_uv(ctx: Context) -> bool:
    return ctx.workflow in (Workflow.UV_VENV, Workflow.UV_PROJECT)


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def _uv_package_list(ctx: Context, key: str, name: str) -> list[str]:
    """[tool.uv]'s ``key`` as the project has it, with ``name`` added (never dropped)."""
    project = ctx.facts.project
    current = project.tool_uv.get(key) if project is not None else None
    names = [str(n) for n in current] if isinstance(current, list) else []
    return names if name in names else [*names, name]


def _rebuild_in_project(
    extension: _ExtensionPayload, ctx: Context, target: str, prefix: str = ""
) -> list[Remedy]:
    """In a uv project, `uv pip install` is undone by the next `uv sync`: the project builds
    the extension itself, from source and without build isolation (so against the torch
    of its venv), and keeps doing so on every sync."""
    import tomlkit

    name = extension.distribution
    uv = tomlkit.table()
    for key in ("no-build-isolation-package", "no-binary-package"):
        array = tomlkit.array()
        array.extend(_uv_package_list(ctx, key, name))
        uv.add(key, array)
    tool = tomlkit.table(is_super_table=True)
    tool.add("uv", uv)
    document = tomlkit.document()
    document.add("tool", tool)
    project = ctx.facts.project
    locked = project is not None and name in project.locked_names
    spec = f"{name}=={_public(extension.version)}"
    # --no-cache: a wheel uv built earlier, against the old torch, would be reused.
    command = prefix + (
        f"uv sync --reinstall-package {shlex.quote(name)} --no-cache\n"
        if locked
        else f"uv add --reinstall-package {shlex.quote(name)} --no-cache {shlex.quote(spec)}\n"
    )
    return [
        Remedy(
            RemedyKind.TOML,
            f"rebuild {extension.display_name} against the installed torch, the project's way: "
            "run `torch-doctor fix`, or add this block to pyproject.toml (uv then builds it "
            "from source in the project's venv on every sync)",
            tomlkit.dumps(document).strip() + "\n",
            target=target,
        ),
        Remedy(
            RemedyKind.SHELL,
            "then build it (needs a C++ compiler, the package's build requirements in the "
            "venv, and an nvcc of torch's CUDA major for CUDA code)",
            command,
        ),
    ]


def _rebuild(extension: _ExtensionPayload, ctx: Context) -> Remedy:
    """A source build against the torch in the environment: no build isolation (an
    isolated build installs another torch to build against) and no cached wheel (a wheel
    built earlier, against the old torch, would be reused)."""
    name = extension.display_name
    spec = f"{name}=={_public(extension.version)}"
    flags = ["--no-build-isolation", "--no-binary", name]
    if _uses_uv(ctx):
        flags += ["--reinstall-package", name, "--no-cache", "--no-deps", spec]
    else:
        flags += ["--force-reinstall", "--no-cache-dir", "--no-deps", spec]
    return Remedy(
        RemedyKind.SHELL,
        f"rebuild {name} against the installed torch (needs a C++ compiler, and an nvcc of "
        "torch's CUDA major for CUDA code)",
        install_command(ctx, flags) + "\n",
    )


def _own_build(extension: _ExtensionPayload, ctx: Context, cxx11: bool | None) -> Remedy | None:
    """flash-attn names its builds +cu<major>torch<X.Y>cxx11abi<TRUE|FALSE>: name the one
    for this torch (its GitHub release assets). Advice, not a command: the URL of that
    wheel is the project's, and not every release has every build."""
    torch = ctx.facts.torch
    if extension.wheel_file is None or torch is None or not torch.version:
        return None
    if "cxx11abi" not in extension.wheel_file.lower():
        return None
    torch_mm = ".".join(_public(torch.version).split(".")[:2])
    cuda = (torch.cuda or "").split(".")[0]
    if cxx11 is None:
        found = ctx.facts.extensions
        cxx11 = bool(found is not None and found.torch_cxx11_abi)
    tag = f"cu{cuda}torch{torch_mm}cxx11abi{'TRUE' if cxx11 else 'FALSE'}"
    return Remedy(
        RemedyKind.TEXT,
        f"or install the {extension.display_name} build made for this torch: the wheel tagged "
        f"+{tag}",
        f"Installed: {extension.wheel_file}. The project publishes one wheel per CUDA major, "
        "torch release and C++ ABI with each release; the one of the same version whose name "
        f"carries +{tag} is built for {ctx.torch_label}. Install that file without its "
        "dependencies, with the installer this environment uses.",
    )


def _exact_release(built_for: str) -> str | None:
    """torch's exact release: a full pin as it is, "2.6" as the table's newest 2.6.x."""
    if built_for.count(".") >= 2:
        return _public(built_for)
    row = torch_release(built_for + ".0")
    return row.latest if row is not None else None


def _variant_for(release: str, extension: _ExtensionPayload, ctx: Context) -> str | None:
    """The CUDA variant to take that torch in: the CUDA major the extension was built for
    (PyPI's variant of that release when it is that major), else the installed torch's,
    else PyPI's. None when no published variant fits."""
    version = Version(release)
    builds = [b for b in torch_builds() if version in SpecifierSet(b.torch)]
    row = torch_release(release)
    pypi = row.pypi_linux if row is not None else None
    facts = ctx.facts.extensions
    found = facts.extension(extension.distribution) if facts is not None else None
    major = found.built_for_cuda if found is not None else None
    if major:
        same = [b for b in builds if b.cuda.split(".")[0] == major]
        if pypi is not None and any(b.variant == pypi for b in same):
            return pypi
        best = max(same, key=lambda b: parse_cuda(b.cuda) or (0, 0), default=None)
        return best.variant if best is not None else None
    installed = ctx.facts.torch.local_tag if ctx.facts.torch is not None else None
    if installed is not None and any(b.variant == installed for b in builds):
        return installed
    return pypi


def _torch_it_was_built_for(extension: _ExtensionPayload, ctx: Context) -> Remedy | None:
    built_for = extension.built_for_torch
    torch = ctx.facts.torch
    if not built_for or torch is None or not torch.version:
        return None
    installed = _public(torch.version)
    if installed == built_for or installed.startswith(built_for + "."):
        return None  # it was built for this release: the cause is another (its ABI, CUDA)
    release = _exact_release(built_for)
    if release is None:
        return None
    try:
        Version(release)
    except InvalidVersion:
        return None  # not a release this remedy can pin
    row = torch_release(release)
    companions = [
        f"torchvision=={row.torchvision}.*"
        for name in ("torchvision",)
        if row is not None and row.torchvision and ctx.facts.distribution(name)
    ]
    summary = (
        f"or go back to the torch {extension.display_name} was built for, torch {release} "
        "(its CUDA wheels follow"
        + (", and torchvision of that release" if companions else "")
        + ")"
    )
    if ctx.workflow is Workflow.UV_PROJECT:
        words = ["uv", "add", f"torch=={release}", *companions]
        return Remedy(
            RemedyKind.SHELL,
            summary + "; the project's torch index stays as configured",
            " ".join(shlex.quote(w) for w in words) + "\n",
        )
    variant = _variant_for(release, extension, ctx)
    on_pypi = row is not None and variant == row.pypi_linux and torch.local_tag is None
    if variant is None or on_pypi:
        spec, index = f"torch=={release}", None
    else:
        spec, index = f"torch=={release}+{variant}", pytorch_index_url() + variant
    return Remedy(
        RemedyKind.SHELL,
        summary,
        install_command(ctx, [spec, *companions], index_url=index) + "\n",
    )


def _extension_remedies(
    extension: _ExtensionPayload, ctx: Context, cxx11: bool | None = None
) -> list[Remedy]:
    own = _own_build(extension, ctx, cxx11)
    remedies = [own] if own is not None else []
    target = pyproject_target(ctx)
    if target is not None:
        remedies += _rebuild_in_project(extension, ctx, target)
    else:
        remedies.append(_rebuild(extension, ctx))
    back = _torch_it_was_built_for(extension, ctx)
    if back is not None:
        remedies.append(back)
    return remedies + conda_note(ctx)


@remedy("extension-abi-mismatch")
def _extension_abi_mismatch(
    finding: Finding[ExtensionAbiMismatch], ctx: Context
) -> Sequence[Remedy]:
    return _extension_remedies(finding.data, ctx)


@remedy("extension-cxx11-abi-mismatch")
def _extension_cxx11_abi_mismatch(
    finding: Finding[ExtensionCxx11AbiMismatch], ctx: Context
) -> Sequence[Remedy]:
    return _extension_remedies(finding.data, ctx, finding.data.torch_cxx11_abi)


@remedy("extension-cuda-major-mismatch")
def _extension_cuda_major_mismatch(
    finding: Finding[ExtensionCudaMajorMismatch], ctx: Context
) -> Sequence[Remedy]:
    return _extension_remedies(finding.data, ctx)


@remedy("extension-gpu-arch-unsupported")
def _extension_gpu_arch_unsupported(
    finding: Finding[ExtensionGpuArchUnsupported], ctx: Context
) -> Sequence[Remedy]:
    archs = ";".join(g.replace("sm_", "")[:-1] + "." + g[-1] for g in finding.data.gpus)
    prefix = f"TORCH_CUDA_ARCH_LIST={shlex.quote(archs)} "
    target = pyproject_target(ctx)
    if target is not None:
        remedies = _rebuild_in_project(finding.data, ctx, target, prefix)
    else:
        remedies = [
            Remedy(
                RemedyKind.SHELL,
                f"rebuild {finding.data.display_name} for these GPUs (TORCH_CUDA_ARCH_LIST names "
                "them)",
                prefix + _rebuild(finding.data, ctx).text,
            )
        ]
    return remedies + conda_note(ctx)


@remedy("nvcc-cuda-mismatch")
def _nvcc_cuda_mismatch(finding: Finding[NvccCudaMismatch], ctx: Context) -> Sequence[Remedy]:
    torch_cuda = finding.data.torch_cuda or ""
    major = torch_cuda.split(".")[0]
    matching = [o.nvcc for o in finding.data.others if (o.release or "").split(".")[0] == major]
    if matching:
        home = matching[0].rsplit("/bin/nvcc", 1)[0]
        text = f"export CUDA_HOME={shlex.quote(home)}\n"
        summary = f"point CUDA_HOME at the CUDA {major} toolkit already on PATH"
    else:
        text = f"export CUDA_HOME=/usr/local/cuda-{torch_cuda}  # a CUDA {major}.x toolkit\n"
        summary = f"install a CUDA {major}.x toolkit and point CUDA_HOME at it"
    return [Remedy(RemedyKind.ENV, summary, text)]


@remedy("nvcc-host-compiler-unsupported")
def _nvcc_host_compiler_unsupported(
    finding: Finding[NvccHostCompilerUnsupported], ctx: Context
) -> Sequence[Remedy]:
    newest = finding.data.newest
    family = finding.data.family
    cxx = "g++" if family == "gcc" else "clang++"
    # Debian/Ubuntu: gcc-N and g++-N are two packages; clang-N brings clang++-N.
    packages = f"gcc-{newest} g++-{newest}" if family == "gcc" else f"clang-{newest}"
    return [
        Remedy(
            RemedyKind.SHELL,
            f"install {family} {newest}, the newest nvcc {finding.data.nvcc_release} accepts "
            "(Debian/Ubuntu package names)",
            f"sudo apt-get install {packages}\n",
        ),
        Remedy(
            RemedyKind.ENV,
            "then build with it: cpp_extension passes CC to nvcc as -ccbin",
            f"export CC={family}-{newest} CXX={cxx}-{newest} NVCC_CCBIN={family}-{newest}\n",
        ),
    ]


@remedy("several-cuda-toolkits")
def _several_cuda_toolkits(finding: Finding[SeveralCudaToolkits], ctx: Context) -> Sequence[Remedy]:
    home = finding.data.cuda_home
    if not home:
        return []
    return [
        Remedy(
            RemedyKind.ENV,
            "put CUDA_HOME's nvcc first on PATH, so every build uses the same toolkit",
            f'export PATH={shlex.quote(home)}/bin:"$PATH"\n',
        )
    ]
