"""Remedies for the driver findings, computed from the facts and the knowledge tables."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from doctor.checks.cuda_compat import (
    VariantChoice,
    best_variant,
    cuda_int_text,
    mvc_floor,
    native_driver,
    parse_cuda,
)
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for

__all__ = ["choose_variant", "platform_marker", "render_index_block"]

# torch's companions that must come from the same index (catalogue entry 18).
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")
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


def choose_variant(facts: Facts) -> VariantChoice | None:
    machine = facts.machine
    if machine is None:
        return None
    capabilities = [g.compute_capability for g in machine.gpus if g.compute_capability]
    version = facts.torch.version if facts.torch is not None else None
    return best_variant(
        driver_cuda=machine.driver_cuda_version,
        capabilities=capabilities,
        torch_version=version,
        driver_version=machine.driver_version,
        system=facts.platform.system if facts.platform is not None else "Linux",
    )


def _family(facts: Facts) -> list[str]:
    return [name for name in TORCH_FAMILY if name == "torch" or facts.distribution(name)]


def platform_marker(facts: Facts) -> str:
    """The [tool.uv.sources] marker for the inspected platform (Linux when unknown)."""
    if facts.platform is not None:
        system = facts.platform.system
    elif facts.interpreter is not None:
        system = facts.interpreter.marker_environment.get("platform_system", "Linux")
    else:
        system = "Linux"
    return PLATFORM_MARKERS.get(system, LINUX_MARKER)


def _pyproject(facts: Facts) -> str:
    if facts.project is not None and facts.project.pyproject_path:
        return facts.project.pyproject_path
    return "pyproject.toml"


def _variant_remedies(facts: Facts, choice: VariantChoice, why: str) -> list[Remedy]:
    packages = _family(facts)
    build = choice.build
    summary = f"install torch from the {build.variant} index (CUDA {build.cuda}): {why}"
    remedies = [
        Remedy(
            RemedyKind.TOML,
            summary,
            render_index_block(
                choice.index_name, choice.index_url, packages, platform_marker(facts)
            ),
            target=_pyproject(facts),
        )
    ]
    upgrade = " ".join(f"--upgrade-package {p}" for p in packages)
    if not choice.same_release:
        installed = facts.torch.version if facts.torch is not None else "the installed torch"
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"torch {installed} is not published for {build.variant}",
                f"The newest releases with a {build.variant} build are torch{build.torch}; "
                f'require such a torch in [project] dependencies (e.g. "torch{build.torch}").',
            )
        )
    remedies.append(
        Remedy(
            RemedyKind.SHELL,
            "re-lock and sync so uv installs the CUDA build",
            f"uv lock {upgrade}\nuv sync --reinstall-package torch\n",
        )
    )
    return remedies


def _capabilities_text(facts: Facts) -> str:
    machine = facts.machine
    gpus = machine.gpus if machine is not None else ()
    return ", ".join(f"{g.name} {g.sm}" for g in gpus if g.sm) or "these GPUs"


@remedy_for("cpu-only-torch")
def cpu_only_torch(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    if not finding.data.get("gpu_present"):
        return []
    choice = choose_variant(facts)
    machine = facts.machine
    if choice is None:
        return [
            Remedy(
                RemedyKind.TEXT,
                "no published CUDA build of torch fits this driver and GPU",
                f"None of the CUDA variants torch-doctor knows carries code for "
                f"{_capabilities_text(facts)} at the CUDA version this driver supports; "
                "upgrade the driver, or build torch from source with TORCH_CUDA_ARCH_LIST.",
            )
        ]
    driver = machine.driver_version if machine is not None else None
    driver_cuda = machine.driver_cuda_version if machine is not None else None
    why = (
        f"the newest CUDA that driver {driver} (CUDA {cuda_int_text(driver_cuda)}) runs natively "
        f"with code for {_capabilities_text(facts)}"
        if driver and driver_cuda
        else f"carries code for {_capabilities_text(facts)}"
    )
    return _variant_remedies(facts, choice, why)


@remedy_for("driver-too-old")
def driver_too_old(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    data = finding.data
    torch_cuda = str(data.get("torch_cuda"))
    native = data.get("native_driver")
    floor = data.get("mvc_floor")
    wanted = native or floor
    remedies: list[Remedy] = []
    if wanted:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"upgrade the NVIDIA driver to {wanted} or newer",
                f"CUDA {torch_cuda} natively needs driver >= {native or 'unknown'}"
                + (f"; {floor} is the minor-version-compatibility floor" if floor else "")
                + ". In a container, the host's driver is the one that counts. "
                "Reboot after the upgrade.",
            )
        )
    choice = choose_variant(facts)
    current = facts.torch.local_tag if facts.torch is not None else None
    if choice is not None and choice.build.variant != current:
        driver_cuda = data.get("driver_cuda")
        why = (
            f"CUDA {choice.build.cuda} is within what this driver supports "
            f"(CUDA {cuda_int_text(int(driver_cuda))})"
            if isinstance(driver_cuda, int)
            else "it fits this driver"
        )
        remedies.extend(_variant_remedies(facts, choice, why))
    return remedies


@remedy_for("gpu-arch-unsupported")
def gpu_arch_unsupported(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    choice = choose_variant(facts)
    if choice is None:
        gpus = ", ".join(f"{g['name']} ({g['sm']})" for g in finding.data.get("gpus", []))
        return [
            Remedy(
                RemedyKind.TEXT,
                "no published torch build carries code for this GPU",
                f"No CUDA variant in torch-doctor's table (torch 2.4 and later) has kernels for "
                f"{gpus}. Use an older torch release whose arch list includes it, or build "
                "torch from source with TORCH_CUDA_ARCH_LIST naming its compute capability.",
            )
        ]
    return _variant_remedies(facts, choice, f"it carries code for {_capabilities_text(facts)}")


@remedy_for("no-nvidia-driver")
def no_nvidia_driver(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    if not finding.data.get("cuda_build"):
        return []
    if finding.data.get("container"):
        return [
            Remedy(
                RemedyKind.TEXT,
                "give the container the host's GPUs",
                "Start the container with the NVIDIA Container Toolkit (`docker run --gpus all "
                "...`, or request `nvidia.com/gpu` in Kubernetes); do not install a driver "
                "inside the image.",
            )
        ]
    if finding.data.get("wsl"):
        return [
            Remedy(
                RemedyKind.TEXT,
                "update the Windows NVIDIA driver",
                "Under WSL the driver is the Windows one, exposed in /usr/lib/wsl/lib. Update "
                "it on Windows, run `wsl --shutdown`, and do not install a Linux driver in WSL.",
            )
        ]
    torch_cuda = parse_cuda(finding.data.get("torch_cuda"))
    system = facts.platform.system if facts.platform is not None else "Linux"
    native = native_driver(torch_cuda, system) if torch_cuda else None
    floor = mvc_floor(torch_cuda[0], system) if torch_cuda else None
    need = native or floor
    cuda_text = "{}.{}".format(*torch_cuda) if torch_cuda else "torch's CUDA"
    return [
        Remedy(
            RemedyKind.TEXT,
            "install the NVIDIA driver" + (f" {need} or newer" if need else ""),
            f"torch is built with CUDA {cuda_text}"
            + (f", which needs driver >= {need}" if need else "")
            + ". Install it from your distribution's NVIDIA packages or "
            "https://www.nvidia.com/Download/index.aspx, then reboot.",
        )
    ]


@remedy_for("nvml-driver-mismatch")
def nvml_driver_mismatch(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    library = finding.data.get("library_path") or "$(ldconfig -p | grep -m1 libnvidia-ml.so.1)"
    return [
        Remedy(
            RemedyKind.SHELL,
            "compare the loaded kernel module with the libraries, then reboot",
            f"cat /sys/module/nvidia/version\nls -l {library}\nsudo reboot\n",
        )
    ]


@remedy_for("cuda-init-failed")
def cuda_init_failed(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    data = finding.data
    remedies: list[Remedy] = []
    compat = [str(p) for p in data.get("compat_paths", [])]
    if compat:
        kept = [
            p
            for p in facts.environment.get("LD_LIBRARY_PATH", "").split(":")
            if p and p not in compat
        ]
        remedies.append(
            Remedy(
                RemedyKind.ENV,
                "take the cuda-compat directory out of LD_LIBRARY_PATH",
                f"export LD_LIBRARY_PATH={':'.join(kept)}\n" if kept else "unset LD_LIBRARY_PATH\n",
            )
        )
    code = data.get("code")
    if data.get("libcuda_missing"):
        if data.get("capabilities_lack_compute"):
            remedies.append(
                Remedy(
                    RemedyKind.ENV,
                    "ask the container runtime for the CUDA driver library",
                    "export NVIDIA_DRIVER_CAPABILITIES=compute,utility\n"
                    "# set it where the container is started (docker run -e ..., the image's ENV)",
                )
            )
        else:
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    "install the driver's CUDA library",
                    "Install the compute part of the NVIDIA driver (e.g. the libnvidia-compute "
                    "package of the same version as the driver) and run `sudo ldconfig`.",
                )
            )
    elif code == 803:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "reboot so the kernel module matches the upgraded driver libraries",
                "cat /sys/module/nvidia/version\nsudo reboot\n",
            )
        )
    elif code == 999:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "reload the nvidia_uvm module (or reboot)",
                "sudo rmmod nvidia_uvm && sudo modprobe nvidia_uvm\n",
            )
        )
    elif not remedies:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "check the driver installation",
                f"cuInit failed with {data.get('name') or data.get('probe_error')}: "
                f"{data.get('text') or ''}. Reinstall the driver matching the kernel module, "
                "then reboot.",
            )
        )
    return remedies


@remedy_for("no-gpu-visible")
def no_gpu_visible(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    variable = str(finding.data.get("variable"))
    indices = [str(i) for i in finding.data.get("gpu_indices", [])]
    if variable == "NVIDIA_VISIBLE_DEVICES":
        return [
            Remedy(
                RemedyKind.TEXT,
                "start the container with GPUs",
                "NVIDIA_VISIBLE_DEVICES is read by the container runtime when the container "
                "starts: restart it with `--gpus all` (or NVIDIA_VISIBLE_DEVICES=all).",
            )
        ]
    text = "unset CUDA_VISIBLE_DEVICES\n"
    if indices:
        # PCI bus order makes CUDA's indices the ones nvidia-smi shows.
        text += (
            "# or name the GPUs to use, numbered as nvidia-smi numbers them:\n"
            f"export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES={','.join(indices)}\n"
        )
    return [
        Remedy(
            RemedyKind.ENV, f"let CUDA see the GPUs: fix {variable} before starting Python", text
        )
    ]


@remedy_for("visible-devices-truncated")
def visible_devices_truncated(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    suggested = str(finding.data.get("suggested") or "")
    if not suggested:
        return []
    return [
        Remedy(
            RemedyKind.ENV,
            "name only GPUs that are here (CUDA stops at the first entry that is not)",
            f"export CUDA_VISIBLE_DEVICES={shlex.quote(suggested)}",
        )
    ]


@remedy_for("mig-enabled")
def mig_enabled(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    return [
        Remedy(
            RemedyKind.SHELL,
            "run one process per MIG instance, named by its MIG UUID",
            "nvidia-smi -L    # lists the MIG devices and their MIG-... UUIDs\n"
            "export CUDA_VISIBLE_DEVICES=MIG-<uuid from the list>\n",
        )
    ]
