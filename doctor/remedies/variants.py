"""Remedies that move torch (and its companions) to another build variant (a PyTorch index).

Used by the findings whose fix is "install the CUDA variant that fits this driver and GPU":
cpu-only-torch, driver-too-old, gpu-arch-unsupported; and by those that route torch to an
index (torch-index-not-used, torch-companion-mismatch).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from packaging.version import InvalidVersion, Version

from doctor.derive import Context, Workflow
from doctor.derive.cuda_compat import VariantChoice, best_variant, cuda_int, mvc_floor, parse_cuda
from doctor.findings import Remedy, RemedyKind
from doctor.knowledge import torch_index_family
from doctor.remedies import conda_note, install_command

__all__ = [
    "TORCH_FAMILY",
    "capabilities_text",
    "choose_variant",
    "driver_runs_text",
    "platform_marker",
    "render_index_block",
    "variant_remedies",
]

# torch's companions that must come from the same index (catalogue entry 18).
TORCH_FAMILY = torch_index_family()
LINUX_MARKER = "sys_platform == 'linux'"
# PyTorch publishes CUDA wheels for Linux and Windows only; the marker follows the platform.
PLATFORM_MARKERS = {"Linux": LINUX_MARKER, "Windows": "sys_platform == 'win32'"}


def render_index_block(
    index_name: str,
    index_url: str | None,
    packages: Sequence[str],
    marker: str = LINUX_MARKER,
) -> str:
    """``[[tool.uv.index]]`` (explicit) and ``[tool.uv.sources]`` for one PyTorch index;
    only the sources when ``index_url`` is None (the index is declared already)."""
    import tomlkit  # only when a block is needed: keeps start-up fast
    from tomlkit.items import AoT

    sources = tomlkit.table()
    for package in packages:
        entry = tomlkit.inline_table()
        entry.update({"index": index_name, "marker": marker})
        pinned = tomlkit.array()
        pinned.append(entry)
        sources.add(package, pinned)
    uv = tomlkit.table(is_super_table=True)
    if index_url is not None:
        index = tomlkit.table()
        index.add("name", index_name)
        index.add("url", index_url)
        index.add("explicit", True)
        uv.add("index", AoT([index]))
    uv.add("sources", sources)
    tool = tomlkit.table(is_super_table=True)
    tool.add("uv", uv)
    document = tomlkit.document()
    document.add("tool", tool)
    return tomlkit.dumps(document).strip() + "\n"


def choose_variant(ctx: Context) -> VariantChoice | None:
    machine = ctx.machine
    if machine is None:
        return None
    capabilities = [g.compute_capability for g in machine.gpus if g.compute_capability]
    return best_variant(
        driver_cuda=machine.driver_cuda_version,
        capabilities=capabilities,
        torch_version=ctx.torch_version,
        driver_version=machine.driver_version,
        system=ctx.facts.platform.system if ctx.facts.platform is not None else "Linux",
    )


def family(ctx: Context) -> list[str]:
    """torch and the companions installed beside it."""
    return [name for name in TORCH_FAMILY if name == "torch" or ctx.facts.distribution(name)]


def platform_marker(ctx: Context) -> str:
    """The [tool.uv.sources] marker for the inspected platform (Linux when unknown)."""
    if ctx.facts.platform is not None:
        system = ctx.facts.platform.system
    else:
        system = ctx.marker_environment.get("platform_system", "Linux")
    return PLATFORM_MARKERS.get(system, LINUX_MARKER)


def capabilities_text(ctx: Context) -> str:
    machine = ctx.machine
    gpus = machine.gpus if machine is not None else ()
    return ", ".join(f"{g.name} {g.sm}" for g in gpus if g.sm) or "these GPUs"


def driver_runs_text(ctx: Context, choice: VariantChoice) -> str | None:
    """How this driver runs the chosen variant's CUDA: natively (its CUDA version is at
    least the variant's), or through minor-version compatibility (same major, driver at or
    above that major's floor), which best_variant also accepts. None if unknown."""
    machine = ctx.machine
    cuda = parse_cuda(choice.build.cuda)
    if machine is None or not machine.driver_cuda_version or cuda is None:
        return None
    supported = cuda_int(machine.driver_cuda_version)
    driver = f"driver {machine.driver_version or '(version unknown)'}"
    driver += " (CUDA {}.{})".format(*supported)
    if cuda <= supported:
        return f"{driver} runs CUDA {choice.build.cuda} natively"
    system = ctx.facts.platform.system if ctx.facts.platform is not None else "Linux"
    floor = mvc_floor(cuda[0], system)
    return f"{driver} runs CUDA {choice.build.cuda} through minor-version compatibility" + (
        f" (CUDA {cuda[0]}.x needs driver >= {floor})" if floor else ""
    )


def _public_release(version: str | None) -> str | None:
    try:
        return Version(version).public if version else None
    except InvalidVersion:
        return None


def variant_remedies(ctx: Context, choice: VariantChoice, why: str) -> list[Remedy]:
    """Install the chosen variant, in the words of the inspected environment's workflow."""
    packages = family(ctx)
    build = choice.build
    summary = f"install torch from the {build.variant} index (CUDA {build.cuda}): {why}"
    remedies: list[Remedy] = []
    release = _public_release(ctx.torch_version) if choice.same_release else None
    if not choice.same_release:
        installed = ctx.torch_version or "the installed torch"
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"torch {installed} is not published for {build.variant}",
                f"The newest releases with a {build.variant} build are torch{build.torch}; "
                + (
                    "the project has to require one of them: `uv add` below does that."
                    if ctx.workflow is Workflow.UV_PROJECT
                    else "the command below installs the newest of them."
                ),
            )
        )
    if ctx.workflow is Workflow.UV_PROJECT and ctx.facts.project is not None:
        remedies.append(
            Remedy(
                RemedyKind.TOML,
                summary + " (or run `torch-doctor fix`)",
                render_index_block(
                    choice.index_name, choice.index_url, packages, platform_marker(ctx)
                ),
                target=ctx.facts.project.pyproject_path,
            )
        )
        if not choice.same_release:
            # A re-lock would look for the required release on an index that does not
            # have it and fail: the requirement itself has to change (uv add locks, syncs).
            remedies.append(
                Remedy(
                    RemedyKind.SHELL,
                    "then require a torch that has this build: uv add changes torch's "
                    "requirement in pyproject.toml, locks and syncs",
                    f"uv add {shlex.quote('torch' + build.torch)}\n",
                )
            )
            return remedies
        upgrade = " ".join(f"--upgrade-package {shlex.quote(p)}" for p in packages)
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "then re-lock and sync so uv installs the CUDA build",
                f"uv lock {upgrade}\nuv sync --reinstall-package torch\n",
            )
        )
        return remedies
    torch_spec = f"torch=={release}+{build.variant}" if release else f"torch{build.torch}"
    specs = [torch_spec, *(p for p in packages if p != "torch")]
    remedies.append(
        Remedy(
            RemedyKind.SHELL,
            summary,
            install_command(ctx, specs, index_url=choice.index_url),
        )
    )
    return remedies + conda_note(ctx)
