"""Machine facts read from /dev, /sys and /proc, under a hand-made root."""

from __future__ import annotations

import os
from pathlib import Path

from doctor.facts import TorchBuildFacts
from doctor.probe.machine import (
    detect_container,
    detect_wsl,
    nvidia_pci_devices,
    probe_machine,
    torch_arch_list,
)


def pci_function(root: Path, address: str, vendor: str, pci_class: str, driver: str = "") -> None:
    device = root / "sys/bus/pci/devices" / address
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    (device / "device").write_text("0x2684\n")
    (device / "class").write_text(pci_class + "\n")
    if driver:
        target = root / "sys/bus/pci/drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        os.symlink(target, device / "driver")


def test_nvidia_gpus_on_the_pci_bus_are_found_without_a_driver(tmp_path: Path) -> None:
    pci_function(tmp_path, "0000:01:00.0", "0x10de", "0x030000", driver="nouveau")
    pci_function(tmp_path, "0000:01:00.1", "0x10de", "0x040300")  # its HDMI audio
    pci_function(tmp_path, "0000:02:00.0", "0x8086", "0x030000")  # not NVIDIA
    devices = nvidia_pci_devices(tmp_path)
    assert [(d.address, d.driver) for d in devices] == [("0000:01:00.0", "nouveau")]


def test_containers_and_wsl_are_recognised(tmp_path: Path) -> None:
    assert detect_container(tmp_path, {}) is None
    (tmp_path / ".dockerenv").write_text("")
    assert detect_container(tmp_path, {}) == "docker"
    assert detect_container(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "kubernetes"
    osrelease = tmp_path / "proc/sys/kernel/osrelease"
    osrelease.parent.mkdir(parents=True)
    osrelease.write_text("5.15.167.4-microsoft-standard-WSL2\n")
    assert detect_wsl(tmp_path)


def test_kernel_module_version_and_device_nodes_are_read(tmp_path: Path) -> None:
    (tmp_path / "sys/module/nvidia").mkdir(parents=True)
    (tmp_path / "sys/module/nvidia/version").write_text("570.124.06\n")
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.124.06  Wed Feb 26 2025\n"
    )
    (tmp_path / "dev").mkdir()
    for node in ("nvidia0", "nvidiactl", "nvidia-uvm", "null"):
        (tmp_path / "dev" / node).write_text("")
    facts = probe_machine(None, timeout=30, env={"PATH": os.environ.get("PATH", "")}, root=tmp_path)
    assert facts.kernel_module_version == "570.124.06"
    assert facts.proc_driver_version == "570.124.06"
    assert facts.device_nodes == ("/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl")


def test_unreadable_fatbin_falls_back_to_the_table_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/libtorch_cuda.so").write_bytes(b"\x7fELF stand-in")
    build = TorchBuildFacts(
        package_dir=str(tmp_path),
        version="2.8.0+cu128",
        cuda="12.8",
        lib_files=("libtorch_cuda.so",),
    )
    archs = torch_arch_list(build)
    assert archs.source == "table"
    assert archs.sm[0] == "sm_70" and "sm_120" in archs.sm  # 2.8 cu128 still had Volta
    assert archs.table_key == "torch >=2.8,<2.11 cu128"
    assert any("not a readable ELF file" in n for n in archs.notes)


def test_unknown_build_has_an_unknown_arch_list(tmp_path: Path) -> None:
    build = TorchBuildFacts(package_dir=str(tmp_path), version="1.13.1+cu117", cuda="11.7")
    archs = torch_arch_list(build)
    assert archs.source == "unknown"
    assert any("cu117" in n for n in archs.notes)
