"""Remedies for compiled extensions: the extension's build for this torch, a rebuild
against the installed torch, or the torch it was built for (pinned)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from doctor.facts import Facts
from doctor.facts.extensions import ExtensionFacts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for
from doctor.remedies.packages import install_command

__all__: list[str] = []


def _extension(finding: Finding, facts: Facts) -> ExtensionFacts | None:
    if facts.extensions is None:
        return None
    return facts.extensions.extension(str(finding.data.get("distribution", "")))


def _rebuild(extension: ExtensionFacts, facts: Facts) -> Remedy:
    """A source build against the torch in the environment: no build isolation (an
    isolated build installs another torch to build against) and no cached wheel (a wheel
    built earlier, against the old torch, would be reused)."""
    name = extension.display_name
    spec = f"{name}=={extension.version.split('+', 1)[0]}"
    torch = facts.distribution("torch")
    if torch is not None and torch.installer == "uv":
        flags = ["--no-build-isolation", "--no-binary", name, "--reinstall-package", name]
        flags += ["--no-cache", "--no-deps", spec]
    else:
        flags = ["--no-build-isolation", "--no-binary", name, "--force-reinstall"]
        flags += ["--no-cache-dir", "--no-deps", spec]
    return Remedy(
        RemedyKind.SHELL,
        f"rebuild {name} against the installed torch (needs a C++ compiler, and an nvcc of "
        "torch's CUDA major for CUDA code)",
        install_command(facts, flags) + "\n",
    )


def _own_build(extension: ExtensionFacts, facts: Facts, cxx11: bool | None) -> Remedy | None:
    """flash-attn names its builds +cu<major>torch<X.Y>cxx11abi<TRUE|FALSE>: name the one
    for this torch (its GitHub release assets)."""
    if extension.wheel_file is None or facts.torch is None or not facts.torch.version:
        return None
    if "cxx11abi" not in extension.wheel_file.lower():
        return None
    torch_mm = ".".join(facts.torch.version.split("+", 1)[0].split(".")[:2])
    cuda = (facts.torch.cuda or "").split(".")[0]
    abi = (
        "TRUE"
        if (cxx11 if cxx11 is not None else facts.extensions and facts.extensions.torch_cxx11_abi)
        else "FALSE"
    )
    tag = f"cu{cuda}torch{torch_mm}cxx11abi{abi}"
    return Remedy(
        RemedyKind.TEXT,
        f"install the {extension.display_name} build for this torch: the wheel tagged +{tag}",
        f"Installed: {extension.wheel_file}. Take the wheel of the same version whose name "
        f"carries +{tag} from the project's release assets, and install it with "
        f"`{install_command(facts, ['--force-reinstall', '--no-deps', '<that wheel URL>'])}`.",
    )


def _torch_spec(release: str) -> str:
    """torch==2.6.0 for a pin; torch==2.6.* for flash-attn's "torch2.6" (any 2.6.x)."""
    return f"torch=={release}.*" if release.count(".") == 1 else f"torch=={release}"


def _torch_it_was_built_for(extension: ExtensionFacts, facts: Facts) -> Remedy | None:
    release = extension.built_for_torch
    if not release or facts.torch is None or facts.torch.version == release:
        return None
    return Remedy(
        RemedyKind.SHELL,
        f"or go back to the torch {extension.display_name} was built for (its companions and "
        "CUDA wheels must follow)",
        install_command(facts, [_torch_spec(release)]) + "\n",
    )


def _extension_remedies(finding: Finding, facts: Facts, cxx11: bool | None = None) -> list[Remedy]:
    extension = _extension(finding, facts)
    if extension is None:
        return []
    remedies = [r for r in (_own_build(extension, facts, cxx11),) if r is not None]
    remedies.append(_rebuild(extension, facts))
    back = _torch_it_was_built_for(extension, facts)
    if back is not None:
        remedies.append(back)
    return remedies


@remedy_for("extension-abi-mismatch")
def extension_abi_mismatch(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    return _extension_remedies(finding, facts)


@remedy_for("extension-cxx11-abi-mismatch")
def extension_cxx11_abi_mismatch(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    return _extension_remedies(finding, facts, bool(finding.data.get("torch_cxx11_abi")))


@remedy_for("extension-cuda-major-mismatch")
def extension_cuda_major_mismatch(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    return _extension_remedies(finding, facts)


@remedy_for("extension-gpu-arch-unsupported")
def extension_gpu_arch_unsupported(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    extension = _extension(finding, facts)
    if extension is None:
        return []
    archs = ";".join(g.replace("sm_", "")[:-1] + "." + g[-1] for g in finding.data.get("gpus", []))
    rebuild = _rebuild(extension, facts)
    return [
        Remedy(
            RemedyKind.SHELL,
            f"rebuild {extension.display_name} for these GPUs (TORCH_CUDA_ARCH_LIST names them)",
            f"TORCH_CUDA_ARCH_LIST={shlex.quote(archs)} {rebuild.text}",
        )
    ]


@remedy_for("nvcc-cuda-mismatch")
def nvcc_cuda_mismatch(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    torch_cuda = str(finding.data.get("torch_cuda") or "")
    major = torch_cuda.split(".")[0]
    matching = [
        o["nvcc"]
        for o in finding.data.get("others", [])
        if str(o.get("release") or "").split(".")[0] == major
    ]
    if matching:
        home = matching[0].rsplit("/bin/nvcc", 1)[0]
        text = f"export CUDA_HOME={shlex.quote(home)}\n"
        summary = f"point CUDA_HOME at the CUDA {major} toolkit already on PATH"
    else:
        text = f"export CUDA_HOME=/usr/local/cuda-{torch_cuda}  # a CUDA {major}.x toolkit\n"
        summary = f"install a CUDA {major}.x toolkit and point CUDA_HOME at it"
    return [Remedy(RemedyKind.ENV, summary, text)]


@remedy_for("nvcc-host-compiler-unsupported")
def nvcc_host_compiler_unsupported(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    newest = finding.data.get("newest")
    family = finding.data.get("family", "gcc")
    cxx = "g++" if family == "gcc" else "clang++"
    return [
        Remedy(
            RemedyKind.ENV,
            f"build with {family} {newest} (Debian/Ubuntu: apt-get install {family}-{newest} "
            f"{cxx}-{newest}); cpp_extension passes CC to nvcc as -ccbin",
            f"export CC={family}-{newest} CXX={cxx}-{newest} NVCC_CCBIN={family}-{newest}\n",
        )
    ]


@remedy_for("several-cuda-toolkits")
def several_cuda_toolkits(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    home = finding.data.get("cuda_home")
    if not home:
        return []
    return [
        Remedy(
            RemedyKind.ENV,
            "put CUDA_HOME's nvcc first on PATH, so every build uses the same toolkit",
            f'export PATH={shlex.quote(str(home))}/bin:"$PATH"\n',
        )
    ]
