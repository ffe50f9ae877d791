"""The stack around torch (catalogue 31-35): Fabric Manager, a container that lost its GPUs,
triton's libcuda lookup, torchcodec/FFmpeg and Jetson boards.

Probes run against hand-made roots and real files (fake ldconfig and nv-fabricmanager
scripts, ELF libraries compiled here); the CLI runs against the NVML/libcuda stand-ins;
pure checks get hand-built facts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from doctor.checks import CheckStatus
from doctor.facts import Facts, PlatformFacts
from doctor.facts.machine import (
    CudaDriverFacts,
    DeviceNodeAccess,
    GpuFacts,
    MachineFacts,
    NvmlFacts,
    NvmlStatus,
)
from doctor.facts.stack import JetsonFacts, StackFacts
from doctor.pipeline import judge
from doctor.probe.driver_child import device_access
from doctor.probe.stack import (
    fabric_manager_facts,
    jetson_facts,
    torchcodec_facts,
    triton_libcuda_lookup,
)
from doctor.render.markdown import render_markdown
from tests.driver_stub import H100, Driver, DriverStubs, Gpu
from tests.factory import DoctorRun, FakeEnv, doctor_env, run_doctor
from tests.handmade import dist, facts, healthy_distributions, project, torch_build

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

H100_SXM = GpuFacts(0, "NVIDIA H100 80GB HBM3", (9, 0), 85520809984, False, False, "GPU-1")


def doctor(env: FakeEnv, workdir: Path, driver_env: dict[str, str] | None = None) -> DoctorRun:
    return run_doctor("--python", str(env.root), "--format", "json", cwd=workdir, env=driver_env)


def consequences(run: DoctorRun) -> dict[str, str]:
    """Finding id -> the root it hangs under."""
    return {f["id"]: f["root"] for f in run.json["findings"] if f["root"] is not None}


def status(all_facts: Facts, check_id: str) -> tuple[CheckStatus, str | None]:
    result = next(r for r in judge(all_facts).results if r.spec.id == check_id)
    return result.status, result.reason


def ids(all_facts: Facts) -> set[str]:
    return {f.id for f in judge(all_facts).findings}


def with_machine(machine: MachineFacts, **extra: Any) -> Facts:
    return dataclasses.replace(facts(healthy_distributions()), machine=machine, **extra)


def healthy_machine(**changes: Any) -> MachineFacts:
    nvml = NvmlFacts(
        status=NvmlStatus.OK,
        driver_version="580.95.05",
        cuda_driver_version=13000,
        gpus=(H100_SXM,),
    )
    cuda = CudaDriverFacts(loaded=True, init_result=0, driver_version=13000)
    return dataclasses.replace(MachineFacts(nvml=nvml, cuda_driver=cuda), **changes)


def compiler() -> str:
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        pytest.fail("no C compiler: .ci/run installs gcc")
    return found


def shared_library(path: Path, soname: str, *, needed: tuple[Path, ...] = ()) -> Path:
    """A real ELF shared object named ``soname``, linked against ``needed``."""
    source = path.with_suffix(".c")
    source.write_text(
        f"int {path.stem.replace('.', '_').replace('-', '_')}_marker(void) {{ return 1; }}\n"
    )
    links: list[str] = ["-Wl,--no-as-needed"]  # NEEDED even though no symbol is used
    for library in needed:
        links += [f"-L{library.parent}", f"-l:{library.name}"]
    subprocess.run(
        [
            compiler(),
            "-shared",
            "-fPIC",
            f"-Wl,-soname,{soname}",
            "-o",
            str(path),
            str(source),
            *links,
        ],
        check=True,
        capture_output=True,
    )
    return path


# --- Fabric Manager (catalogue 31) -------------------------------------------------------


def _nvswitch_root(root: Path, *, fm_version: str | None, systemd: bool = True) -> None:
    (root / "dev").mkdir(parents=True)
    (root / "dev/nvidia-nvswitchctl").write_text("")
    (root / "dev/nvidia-nvswitch0").write_text("")
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)
    if fm_version is not None:
        unit = root / "usr/lib/systemd/system/nvidia-fabricmanager.service"
        unit.parent.mkdir(parents=True)
        unit.write_text("[Service]\nExecStart=/usr/bin/nv-fabricmanager\n")
        binary = root / "usr/bin/nv-fabricmanager"
        binary.parent.mkdir(parents=True)
        binary.write_text(f'#!/bin/sh\necho "Fabric Manager version is : {fm_version}"\n')
        binary.chmod(0o755)


def test_fabric_manager_version_and_state_are_read_from_the_root(tmp_path: Path) -> None:
    _nvswitch_root(tmp_path, fm_version="550.54.15")
    manager = fabric_manager_facts(tmp_path, healthy_machine(), timeout=10)
    assert manager is not None
    assert manager.nvswitches == ("/dev/nvidia-nvswitch0", "/dev/nvidia-nvswitchctl")
    assert manager.unit_file == "/usr/lib/systemd/system/nvidia-fabricmanager.service"
    assert (manager.version, manager.version_source) == ("550.54.15", "nv-fabricmanager --version")
    assert manager.running is False  # systemd runs, the unit is not active


def test_fabric_manager_version_falls_back_to_the_debian_package(tmp_path: Path) -> None:
    _nvswitch_root(tmp_path, fm_version=None)
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: nvidia-fabricmanager-580\nStatus: install ok installed\n"
        "Version: 580.95.05-1\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1:1.2\n"
    )
    manager = fabric_manager_facts(tmp_path, healthy_machine(), timeout=10)
    assert manager is not None
    assert (manager.version, manager.version_source) == (
        "580.95.05",
        "dpkg: nvidia-fabricmanager-580",
    )


def test_machines_without_nvswitches_do_not_look_for_a_fabric_manager(tmp_path: Path) -> None:
    assert fabric_manager_facts(tmp_path, healthy_machine(), timeout=10) is None


def test_fabric_manager_of_another_version_is_an_error(tmp_path: Path) -> None:
    _nvswitch_root(tmp_path, fm_version="550.54.15")
    machine = healthy_machine()
    stack = StackFacts(fabric_manager=fabric_manager_facts(tmp_path, machine, timeout=10))
    report = judge(with_machine(machine, stack=stack))
    (finding,) = [f for f in report.findings if f.id == "fabric-manager-not-running"]
    assert "550.54.15" in finding.title and "580.95.05" in finding.title
    assert "nvidia-fabricmanager-580=580.95.05-1" in finding.remedies[0].text


def test_fabric_manager_of_the_drivers_version_with_a_ready_fabric_is_quiet(tmp_path: Path) -> None:
    _nvswitch_root(tmp_path, fm_version="580.95.05")
    ready = dataclasses.replace(H100_SXM, fabric_state="completed")
    machine = healthy_machine(nvml=dataclasses.replace(healthy_machine().nvml, gpus=(ready,)))  # type: ignore[arg-type]
    stack = StackFacts(fabric_manager=fabric_manager_facts(tmp_path, machine, timeout=10))
    assert "fabric-manager-not-running" not in ids(with_machine(machine, stack=stack))


def test_a_fabric_registration_that_completed_with_an_error_fires() -> None:
    failed = dataclasses.replace(H100_SXM, fabric_state="completed", fabric_error="Unknown Error")
    machine = healthy_machine(nvml=dataclasses.replace(healthy_machine().nvml, gpus=(failed,)))  # type: ignore[arg-type]
    report = judge(with_machine(machine))
    (finding,) = [f for f in report.findings if f.id == "fabric-manager-not-running"]
    assert (
        "GPU 0 (NVIDIA H100 80GB HBM3): NVSwitch fabric completed with Unknown Error"
        in finding.evidence
    )


@pytest.mark.parametrize(
    ("state", "error", "down"),
    [
        ("not-started", None, True),
        ("in-progress", None, True),
        ("completed", "Unknown Error", True),
        ("completed", None, False),
        (None, None, False),
    ],
)
def test_the_gpu_row_shows_the_fabric_the_context_judged_down(
    state: str | None, error: str | None, down: bool
) -> None:
    from doctor.render.terminal import render_terminal_text

    gpu = dataclasses.replace(H100_SXM, fabric_state=state, fabric_error=error)
    machine = healthy_machine(nvml=dataclasses.replace(healthy_machine().nvml, gpus=(gpu,)))  # type: ignore[arg-type]
    report = judge(with_machine(machine))
    [coverage] = report.context.coverage
    assert coverage.fabric_unready is down
    fired = any(f.id == "fabric-manager-not-running" for f in report.findings)
    assert fired is down  # the row and the finding say the same
    shown = f"NVSwitch fabric {state}" in render_terminal_text(report, width=120)
    assert shown is down


def test_error_802_with_an_unregistered_fabric_is_one_finding_through_the_cli(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    hgx = tuple(Gpu("NVIDIA H100 80GB HBM3", "9.0", fabric="1") for _ in range(2))
    driver_env = driver_stubs.env(Driver(gpus=hgx, cu_init_error=802, fabric_v=False))
    run = doctor(env, workdir, driver_env)
    finding = run.finding("fabric-manager-not-running")
    assert finding["severity"] == "error"
    assert (
        "cuInit(0) returned 802 CUDA_ERROR_SYSTEM_NOT_READY: system not yet initialized"
        in finding["evidence"]
    )
    assert any("NVSwitch fabric not-started" in e for e in finding["evidence"])
    # One cause, one finding: cuInit's failure hangs under the fabric.
    assert consequences(run) == {"cuda-init-failed": "fabric-manager-not-running"}
    gpus = run.json["facts"]["machine"]["nvml"]["gpus"]
    assert [g["fabric_state"] for g in gpus] == ["not-started", "not-started"]
    assert run.returncode == 1
    ticket = run_doctor(
        "--python", str(env.root), "--format", "markdown", cwd=workdir, env=driver_env
    ).stdout
    assert "| GPU 0 | NVIDIA H100 80GB HBM3" in ticket
    assert "NVSwitch fabric not-started |" in ticket


def test_explain_error_802_confirms_the_fabric_and_rules_it_out_when_ready(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    error = (
        "RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda "
        "functions before calling NumCudaDevices() that might have already set an error? "
        "Error 802: system not yet initialized"
    )
    args = ("explain", error, "--python", str(env.root), "--format", "json")
    down = Driver(gpus=(Gpu("NVIDIA H100 80GB HBM3", "9.0", fabric="2"),), cu_init_error=802)
    explained = run_doctor(*args, cwd=workdir, env=driver_stubs.env(down)).json["explain"]
    assert [r["id"] for r in explained["recognised"]] == ["system-not-yet-initialized"]
    # The root, and cuInit's failure it causes.
    assert explained["confirmed"] == ["fabric-manager-not-running", "cuda-init-failed"]
    up = Driver(gpus=(Gpu("NVIDIA H100 80GB HBM3", "9.0", fabric="3"),))
    explained = run_doctor(*args, cwd=workdir, env=driver_stubs.env(up)).json["explain"]
    assert explained["confirmed"] == []
    assert "fabric-manager-not-running" in explained["ruled_out"]


def test_a_registered_fabric_is_quiet_through_the_cli(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    ready = Gpu("NVIDIA H100 80GB HBM3", "9.0", fabric="3")
    run = doctor(
        env,
        workdir,
        driver_stubs.env(Driver(gpus=(ready,))),
    )
    assert "fabric-manager-not-running" not in run.finding_ids()
    assert run.json["facts"]["machine"]["nvml"]["gpus"][0]["fabric_state"] == "completed"
    assert run.returncode == 0, run.stdout


# --- A container that lost its GPUs (catalogue 32) ---------------------------------------


def test_device_nodes_are_opened_and_refusals_named(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").write_text("")
    (dev / "nvidia0").symlink_to(tmp_path / "gone")  # a node whose target vanished
    (dev / "nvidia-caps").mkdir()  # MIG capabilities: a directory, not a node
    (dev / "null").write_text("")
    nodes = device_access(str(tmp_path))
    assert nodes == [
        {"path": "/dev/nvidia0", "error": "ENOENT", "message": "No such file or directory"},
        {"path": "/dev/nvidiactl"},
    ]


def _lost(container: str | None = "docker") -> MachineFacts:
    nvml = NvmlFacts(
        status=NvmlStatus.UNKNOWN,
        error_code=999,
        error_text="Unknown Error",
        device_access=(
            DeviceNodeAccess("/dev/nvidia0", "EPERM", "Operation not permitted"),
            DeviceNodeAccess("/dev/nvidiactl", "EPERM", "Operation not permitted"),
            DeviceNodeAccess("/dev/nvidia-uvm", None, None),
        ),
    )
    cuda = CudaDriverFacts(loaded=True, init_result=999, error_name="CUDA_ERROR_UNKNOWN")
    return MachineFacts(
        nvml=nvml, cuda_driver=cuda, device_nodes=("/dev/nvidia0",), container=container
    )


def test_nodes_refusing_to_open_in_a_container_are_the_lost_gpus() -> None:
    report = judge(with_machine(_lost()))
    (finding,) = [f for f in report.findings if f.id == "container-lost-gpus"]
    assert finding.title.startswith("the container lost its GPUs")
    assert "/dev/nvidia0: EPERM (Operation not permitted)" in finding.evidence
    # cuInit's failure hangs under the lost nodes: one cause, one finding.
    assert {f.id: f.root for f in report.findings if f.root} == {
        "cuda-init-failed": "container-lost-gpus"
    }
    commands = "\n".join(r.text for r in finding.remedies)
    assert "nvidia-ctk system create-dev-char-symlinks --create-all" in commands
    assert "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in commands
    assert "native.cgroupdriver=cgroupfs" in commands
    # Every way out is a command (paste-safe), none a command inside prose.
    assert all(r.kind.value == "shell" for r in finding.remedies)
    for remedy in finding.remedies:
        checked = subprocess.run(["bash", "-n"], input=remedy.text, text=True, capture_output=True)
        assert checked.returncode == 0, (remedy.text, checked.stderr)
    # Without the container's name: a placeholder the summary explains, not a shell
    # variable nothing sets (pasted, `docker ps; docker restart "$CONTAINER"` ran
    # `docker restart ""`).
    assert finding.remedies[0].text == "docker restart CONTAINER\n"
    assert "(CONTAINER: its name or ID, as `docker ps` lists it)" in finding.remedies[0].summary


@pytest.mark.parametrize(
    ("container", "host", "command"),
    [
        ("docker", "3f2a1b9c8d7e", "docker restart 3f2a1b9c8d7e\n"),
        ("podman", "3f2a1b9c8d7e", "podman restart 3f2a1b9c8d7e\n"),
        ("kubernetes", "train-7d9f-0", "kubectl delete pod train-7d9f-0\n"),
    ],
)
def test_the_lost_container_is_restarted_by_the_id_its_host_name_is(
    container: str, host: str, command: str
) -> None:
    from doctor.facts.node import NodeFacts, NodeIdentity

    lost = with_machine(_lost(container), node=NodeFacts(identity=NodeIdentity(host)))
    finding = next(f for f in judge(lost).findings if f.id == "container-lost-gpus")
    assert finding.remedies[0].text == command


def test_lost_gpus_are_not_judged_without_nvml() -> None:
    unprobed = dataclasses.replace(_lost(), nvml=None)
    assert status(with_machine(unprobed), "container-lost-gpus") == (
        CheckStatus.SKIPPED,
        "NVML was not probed",
    )


def test_unknown_error_with_nodes_that_open_is_not_the_lost_container() -> None:
    machine = _lost()
    assert machine.nvml is not None
    opened = dataclasses.replace(
        machine.nvml, device_access=(DeviceNodeAccess("/dev/nvidia0", None, None),)
    )
    found = ids(with_machine(dataclasses.replace(machine, nvml=opened)))
    assert "container-lost-gpus" not in found
    no_nodes = dataclasses.replace(machine.nvml, device_access=())
    assert status(
        with_machine(dataclasses.replace(machine, nvml=no_nodes)), "container-lost-gpus"
    ) == (
        CheckStatus.SKIPPED,
        "no /dev/nvidia* node to open",
    )
    assert "cuda-init-failed" in found  # the suspend/resume story, told by its own check


DEVICES_CGROUP = Path("/sys/fs/cgroup/devices")
# A private /dev for the CLI under test (a mount namespace: the machine's /dev is untouched):
# the usual character devices, and NVIDIA nodes with the driver's real major number 195.
PRIVATE_DEV = (
    "set -e; mount -t tmpfs -o mode=755 none /dev; "
    "mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7; "
    "mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; "
    "ln -s /proc/self/fd /dev/fd; "
    "mknod -m 666 /dev/nvidia0 c 195 0; mknod -m 666 /dev/nvidiactl c 195 255; "
)


@contextlib.contextmanager
def gpus_taken_away() -> Iterator[Path]:
    """A devices cgroup (v1) that refuses the NVIDIA nodes, as the host's systemd leaves a
    container after `systemctl daemon-reload`: opening them gives a real EPERM."""
    if shutil.which("unshare") is None or not (DEVICES_CGROUP / "devices.deny").exists():
        pytest.skip("needs unshare and the cgroup v1 devices controller (this machine has neither)")
    group = DEVICES_CGROUP / f"torch-doctor-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        group.mkdir()
        (group / "devices.deny").write_text("c 195:* rwm\n")
    except OSError as exc:
        pytest.skip(f"cannot create a devices cgroup here: {exc}")
    try:
        yield group
    finally:
        for _ in range(50):  # its processes have exited; the kernel frees it shortly after
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def run_with_private_dev(
    args: list[str], env: dict[str, str], workdir: Path, cgroup: Path | None
) -> DoctorRun:
    enter = f"echo $$ > {cgroup}/cgroup.procs; " if cgroup is not None else ""
    proc = subprocess.run(
        [
            *("unshare", "-m", "sh", "-c", PRIVATE_DEV + enter + 'exec "$@"', "sh"),
            *(sys.executable, "-m", "doctor", *args),
        ],
        cwd=workdir,
        env=doctor_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == 2 and "unshare" in proc.stderr:
        pytest.skip(f"cannot make a mount namespace here: {proc.stderr.strip()}")
    assert proc.stdout, proc.stderr
    return DoctorRun(proc.returncode, proc.stdout, proc.stderr)


def test_gpus_taken_away_from_the_process_fire_through_the_cli_and_a_restart_is_clean(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    # NVML and cuInit answer as they do in such a container: Unknown Error (999).
    driver_env = driver_stubs.env(Driver(nvml_init_error=999, cu_init_error=999))
    args = ["--python", str(env.root), "--format", "json"]
    with gpus_taken_away() as cgroup:
        run = run_with_private_dev(args, driver_env, workdir, cgroup)
    finding = run.finding("container-lost-gpus")
    assert "/dev/nvidia0: EPERM (Operation not permitted)" in finding["evidence"]
    assert "/dev/nvidiactl: EPERM (Operation not permitted)" in finding["evidence"]
    assert consequences(run) == {"cuda-init-failed": "container-lost-gpus"}
    assert run.returncode == 1
    # "Restart the container": the same /dev without the cgroup's refusal. The nodes open
    # (to a kernel without the NVIDIA driver: ENXIO), so nothing is blamed on them.
    restarted = run_with_private_dev(args, driver_env, workdir, None)
    access = restarted.json["facts"]["machine"]["nvml"]["device_access"]
    assert {n["path"]: n.get("error") for n in access} == {
        "/dev/nvidia0": "ENXIO",
        "/dev/nvidiactl": "ENXIO",
    }
    assert "container-lost-gpus" not in restarted.finding_ids()


# --- triton's libcuda lookup (catalogue 33) ----------------------------------------------

# triton's libcuda_dirs() as shipped: 3.4 and later want libcuda.so.1, earlier libcuda.so.
TRITON_NEW = """
libraries = ['libcuda.so.1']
def libcuda_dirs():
    if env_libcuda_path := knobs.nvidia.libcuda_path:
        return [env_libcuda_path]
    libs = subprocess.check_output(["/sbin/ldconfig", "-p"]).decode(errors="ignore")
    locs = [line.split()[-1] for line in libs.splitlines() if "libcuda.so.1" in line]
    dirs = [os.path.dirname(loc) for loc in locs]
    env_ld_library_path = os.getenv("LD_LIBRARY_PATH")
    if env_ld_library_path and not dirs:
        dirs = [
            dir for dir in env_ld_library_path.split(":")
            if os.path.exists(os.path.join(dir, "libcuda.so.1"))
        ]
    msg = 'libcuda.so cannot found!\\n'
    assert any(os.path.exists(os.path.join(path, 'libcuda.so.1')) for path in dirs), msg
    return dirs
"""
TRITON_OLD = TRITON_NEW.replace("libcuda.so.1", "libcuda.so")


def _triton(root: Path, source: str) -> Path:
    driver = root / "triton/backends/nvidia/driver.py"
    driver.parent.mkdir(parents=True)
    driver.write_text(source)
    return root / "triton"


def _ldconfig(root: Path, *paths: str) -> str:
    script = root / "sbin/ldconfig"
    script.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f'echo "\t{os.path.basename(p)} (libc6,x86-64) => {p}"\n' for p in paths)
    script.write_text(f'#!/bin/sh\necho "{len(paths)} libs found in cache"\n{lines}')
    script.chmod(0o755)
    return str(script)


def test_triton_lookup_follows_the_ld_cache(tmp_path: Path) -> None:
    lib = tmp_path / "usr/lib"
    lib.mkdir(parents=True)
    (lib / "libcuda.so.1").write_text("")
    triton = _triton(tmp_path / "site", TRITON_NEW)
    lookup = triton_libcuda_lookup(
        str(triton), {}, ldconfig=_ldconfig(tmp_path, f"{lib}/libcuda.so.1")
    )
    assert (lookup.wanted, lookup.source) == ("libcuda.so.1", "ldconfig")
    assert lookup.found == f"{lib}/libcuda.so.1"


@pytest.mark.parametrize(
    ("source", "cached", "problem"),
    [
        (TRITON_NEW, "gone", "stale ld cache"),
        (TRITON_OLD, "present", "only libcuda.so.1"),
        (TRITON_NEW, None, "no ldconfig"),
    ],
)
def test_triton_lookup_fails_as_triton_would(
    tmp_path: Path, source: str, cached: str | None, problem: str
) -> None:
    lib = tmp_path / "usr/lib"
    lib.mkdir(parents=True)
    if cached == "present":
        (lib / "libcuda.so.1").write_text("")
    triton = _triton(tmp_path / "site", source)
    ldconfig = (
        _ldconfig(tmp_path, f"{lib}/libcuda.so.1")
        if cached is not None
        else str(tmp_path / "sbin/ldconfig")
    )
    lookup = triton_libcuda_lookup(str(triton), {}, ldconfig=ldconfig)
    assert lookup.found is None, problem
    if cached is None:
        assert lookup.ldconfig_error is not None
    else:
        assert lookup.listed == (f"{lib}/libcuda.so.1",)


def test_triton_libcuda_path_is_taken_as_it_is(tmp_path: Path) -> None:
    triton = _triton(tmp_path / "site", TRITON_NEW)
    lookup = triton_libcuda_lookup(
        str(triton), {"TRITON_LIBCUDA_PATH": str(tmp_path)}, ldconfig="/nonexistent"
    )
    assert (lookup.source, lookup.found) == ("TRITON_LIBCUDA_PATH", None)


def _with_triton(env: FakeEnv, source: str) -> None:
    # 3.8.0 satisfies torch's pin; the lookup generation is read from the source given.
    env.install(
        "triton",
        "3.8.0",
        files={"triton/__init__.py": "", "triton/backends/nvidia/driver.py": source},
    )


def test_old_triton_beside_only_libcuda_so_1_warns_and_its_remedy_works(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs, tmp_path: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    _with_triton(env, TRITON_OLD)
    home = tmp_path / "home"
    home.mkdir()
    driver_env = driver_stubs.env(Driver(gpus=(H100,)), HOME=str(home))
    run = doctor(env, workdir, driver_env)
    finding = run.finding("triton-libcuda-not-found")
    assert finding["data"]["wanted"] == "libcuda.so"
    assert run.returncode == 0  # a warning: torch itself works
    # The remedy, run literally, then the next run with what it exported.
    (shell,) = [r for r in finding["remedies"] if "TRITON_LIBCUDA_PATH" in r["text"]]
    done = subprocess.run(
        ["bash", "-c", shell["text"] + 'echo "$TRITON_LIBCUDA_PATH"'],
        env={**os.environ, **driver_env},
        capture_output=True,
        text=True,
        check=True,
    )
    fixed = {**driver_env, "TRITON_LIBCUDA_PATH": done.stdout.strip().splitlines()[-1]}
    again = doctor(env, workdir, fixed)
    assert "triton-libcuda-not-found" not in again.finding_ids()


def run_with_ldconfig(
    ldconfig: Path, args: list[str], env: dict[str, str], workdir: Path
) -> DoctorRun:
    """The CLI in a mount namespace whose /sbin/ldconfig is ``ldconfig`` (the machine's own
    is untouched): what triton runs, and what the doctor replays."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    target = os.path.realpath("/sbin/ldconfig")
    proc = subprocess.run(
        [
            *("unshare", "-m", "sh", "-c", f'mount --bind {ldconfig} {target} && exec "$@"', "sh"),
            *(sys.executable, "-m", "doctor", *args),
        ],
        cwd=workdir,
        env=doctor_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if not proc.stdout and ("unshare" in proc.stderr or "mount" in proc.stderr):
        pytest.skip(f"cannot bind-mount in a mount namespace here: {proc.stderr.strip()}")
    assert proc.stdout, proc.stderr
    return DoctorRun(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("problem", ["stale ld cache", "no ldconfig"])
def test_triton_lookup_failing_through_the_cli_and_its_remedy_run_literally(
    problem: str,
    make_env: Callable[..., FakeEnv],
    workdir: Path,
    driver_stubs: DriverStubs,
    tmp_path: Path,
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    _with_triton(env, TRITON_NEW)
    driver_env = driver_stubs.env(Driver(gpus=(H100,)))
    if problem == "stale ld cache":
        # The cache still lists a libcuda.so.1 a driver update removed: triton takes the
        # cache's directories and never looks at LD_LIBRARY_PATH.
        ldconfig = Path(_ldconfig(tmp_path, "/usr/lib/x86_64-linux-gnu/libcuda.so.1"))
    else:
        # An ldconfig that cannot run (a minimal image): triton's check_output raises.
        ldconfig = tmp_path / "ldconfig-not-executable"
        ldconfig.write_text("not a program\n")
    args = ["--python", str(env.root), "--format", "json"]
    run = run_with_ldconfig(ldconfig, args, driver_env, workdir)
    finding = run.finding("triton-libcuda-not-found")
    lookup = run.json["facts"]["stack"]["triton_libcuda"]
    if problem == "stale ld cache":
        assert lookup["listed"] == ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
        assert lookup["ldconfig_error"] is None
    else:
        assert lookup["ldconfig_error"] and lookup["listed"] == []
    assert run.returncode == 0  # a warning: torch itself works
    # The variable remedy, exported literally, and the next run (same ldconfig) is clean.
    (export,) = [r for r in finding["remedies"] if r["kind"] == "env"]
    assert export["text"] == (f"export TRITON_LIBCUDA_PATH={driver_stubs.libraries}\n")
    done = subprocess.run(
        ["bash", "-c", export["text"] + 'echo "$TRITON_LIBCUDA_PATH"'],
        capture_output=True,
        text=True,
        check=True,
    )
    fixed = {**driver_env, "TRITON_LIBCUDA_PATH": done.stdout.strip()}
    again = run_with_ldconfig(ldconfig, args, fixed, workdir)
    assert "triton-libcuda-not-found" not in again.finding_ids()
    assert again.json["facts"]["stack"]["triton_libcuda"]["source"] == "TRITON_LIBCUDA_PATH"


def test_current_triton_finds_libcuda_so_1_on_ld_library_path(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    _with_triton(env, TRITON_NEW)
    run = doctor(
        env,
        workdir,
        driver_stubs.env(Driver(gpus=(H100,))),
    )
    lookup = run.json["facts"]["stack"]["triton_libcuda"]
    assert lookup["source"] in ("ldconfig", "LD_LIBRARY_PATH") and lookup["found"]
    assert "triton-libcuda-not-found" not in run.finding_ids()


def test_without_a_gpu_triton_lookup_does_not_run(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    _with_triton(env, TRITON_OLD)
    run = doctor(env, workdir)
    assert run.json["facts"]["stack"] is None  # nothing of the stack applies here


# --- torchaudio, torchcodec and FFmpeg (catalogue 34) ------------------------------------


@pytest.fixture(scope="module")
def ffmpeg_stand_ins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(libtorchcodec_core7.so linked against a stand-in libavutil.so.59, its directory)."""
    root = tmp_path_factory.mktemp("ffmpeg")
    ffmpeg = root / "ffmpeg7"
    ffmpeg.mkdir()
    avutil = shared_library(ffmpeg / "libavutil.so.59", "libavutil.so.59")
    core = shared_library(
        root / "libtorchcodec_core7.so", "libtorchcodec_core7.so", needed=(avutil,)
    )
    return core, ffmpeg


def _with_torchcodec(env: FakeEnv, core: Path, *, torchaudio: str = "2.9.1+cpu") -> None:
    env.install("torchaudio", torchaudio, requires_dist=["torch==2.9.1"])
    env.install(
        "torchcodec",
        "0.9.0",
        files={"torchcodec/__init__.py": "", "torchcodec/libtorchcodec_core7.so": core},
    )


def test_loader_resolution_of_torchcodecs_ffmpeg(
    ffmpeg_stand_ins: tuple[Path, Path], tmp_path: Path
) -> None:
    core, ffmpeg = ffmpeg_stand_ins
    package = tmp_path / "torchcodec"
    package.mkdir()
    shutil.copy(core, package / "libtorchcodec_core7.so")
    (package / "libtorchcodec_core4.so").write_bytes(b"not an ELF file")
    codec_dist = dataclasses.replace(dist("torchcodec", "0.9.0"), location=str(tmp_path))
    missing = torchcodec_facts([codec_dist], {})
    assert missing is not None
    by_major = {lib.ffmpeg_major: lib for lib in missing.libraries}
    assert by_major[7].missing == ("libavutil.so.59",)
    assert by_major[4].error is not None  # a broken file is reported, never a crash
    report = judge(
        dataclasses.replace(facts(healthy_distributions()), stack=StackFacts(torchcodec=missing))
    )
    (finding,) = [f for f in report.findings if f.id == "ffmpeg-not-found"]
    assert any(
        e.startswith("libtorchcodec_core4.so (FFmpeg 4: libavutil.so.56)") for e in finding.evidence
    )
    found = torchcodec_facts([codec_dist], {"LD_LIBRARY_PATH": str(ffmpeg)})
    assert found is not None and [lib.ffmpeg_major for lib in found.loadable] == [7]


def test_torchcodec_without_ffmpeg_fires_and_ffmpeg_on_the_loader_path_fixes_it(
    make_env: Callable[..., FakeEnv], workdir: Path, ffmpeg_stand_ins: tuple[Path, Path]
) -> None:
    core, ffmpeg = ffmpeg_stand_ins
    env = make_env()
    env.install_torch("2.9.1+cpu", cuda=None, requires_dist=())
    _with_torchcodec(env, core)
    run = doctor(env, workdir)
    finding = run.finding("ffmpeg-not-found")
    assert finding["data"] == {"ffmpeg_majors": [7], "missing": ["libavutil.so.59"]}
    assert "torchcodec-mismatch" not in run.finding_ids()
    again = doctor(
        env,
        workdir,
        {"LD_LIBRARY_PATH": str(ffmpeg)},
    )
    assert "ffmpeg-not-found" not in again.finding_ids()
    assert again.returncode == 0, again.stdout


def test_explain_could_not_load_libtorchcodec_points_at_the_missing_ffmpeg(
    make_env: Callable[..., FakeEnv], workdir: Path, ffmpeg_stand_ins: tuple[Path, Path]
) -> None:
    core, _ = ffmpeg_stand_ins
    env = make_env()
    env.install_torch("2.9.1+cpu", cuda=None, requires_dist=())
    _with_torchcodec(env, core)
    error = (
        "RuntimeError: Could not load libtorchcodec. Likely causes:\n"
        "  1. FFmpeg is not properly installed in your environment. We support versions "
        "4, 5, 6 and 7."
    )
    run = run_doctor("explain", error, "--python", str(env.root), "--format", "json", cwd=workdir)
    explained = run.json["explain"]
    assert explained["confirmed"] == ["ffmpeg-not-found"]
    assert explained["ruled_out"] == ["torchcodec-mismatch"]


def test_torchaudio_2_9_without_torchcodec_warns_with_the_pinned_install(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_torch("2.9.1+cpu", cuda=None, requires_dist=())
    env.install("torchaudio", "2.9.1+cpu", requires_dist=["torch==2.9.1"])
    run = doctor(env, workdir)
    finding = run.finding("torchcodec-mismatch")
    assert finding["severity"] == "warning"
    assert "torchcodec==0.9.*" in finding["remedies"][0]["text"]


def test_torchcodec_built_for_another_torch_is_an_error() -> None:
    all_facts = facts([*healthy_distributions(), dist("torchcodec", "0.7.0")])
    finding = next(f for f in judge(all_facts).findings if f.id == "torchcodec-mismatch")
    assert finding.data.built_for == ">=2.8,<2.9"
    assert finding.data.wanted == "0.15.*"  # torch 2.14.1


def test_torchcodecs_own_torch_pin_wins_over_the_table() -> None:
    pinned = dist("torchcodec", "0.15.0", requires_dist=["torch==2.13.*"])
    finding = next(
        f
        for f in judge(facts([*healthy_distributions(), pinned])).findings
        if f.id == "torchcodec-mismatch"
    )
    assert finding.data.built_for == "==2.13.*"
    assert "(its Requires-Dist)" in finding.evidence[0]


def test_torchcodec_paired_with_its_torch_and_older_torchaudio_are_quiet() -> None:
    paired = facts([*healthy_distributions(), dist("torchcodec", "0.15.0")])
    old_audio = facts([*healthy_distributions(), dist("torchaudio", "2.8.0")])
    assert "torchcodec-mismatch" not in ids(paired) | ids(old_audio)
    # A pass only on evidence: nothing to judge is a skip that says why.
    assert status(paired, "torchcodec-mismatch") == (CheckStatus.PASSED, None)
    assert status(old_audio, "torchcodec-mismatch") == (
        CheckStatus.SKIPPED,
        "torchaudio 2.8.0 does not use torchcodec",
    )
    unlisted = facts([*healthy_distributions(), dist("torchcodec", "0.12.0")])
    assert status(unlisted, "torchcodec-mismatch") == (
        CheckStatus.SKIPPED,
        "torchcodec 0.12.0 is not in its compatibility table",
    )


# --- Jetson (catalogue 35) ---------------------------------------------------------------


def _jetson_root(root: Path, release: str, model: str) -> None:
    (root / "etc").mkdir(parents=True)
    major, revision = release.split(".", 1)
    (root / "etc/nv_tegra_release").write_text(
        f"# R{major} (release), REVISION: {revision}, GCID: 38968081, BOARD: generic, "
        "EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    )
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\0")


def test_a_jetson_is_recognised_from_its_root(tmp_path: Path) -> None:
    assert jetson_facts(tmp_path) is None
    _jetson_root(tmp_path, "36.4.3", "NVIDIA Jetson AGX Orin Developer Kit")
    jetson = jetson_facts(tmp_path)
    assert jetson == JetsonFacts(
        model="NVIDIA Jetson AGX Orin Developer Kit",
        l4t_release="36.4.3",
        tegra_release_line=jetson.tegra_release_line if jetson else None,
    )
    assert jetson is not None and jetson.l4t_major == 36


def _aarch64_facts(
    tmp_path: Path, version: str, tag: str, cuda: str | None, release: str, model: str
) -> Facts:
    _jetson_root(tmp_path, release, model)
    torch = dataclasses.replace(dist("torch", version), wheel_tags=(tag,))
    others = [d for d in healthy_distributions() if d.name != "torch"]
    base = facts([torch, *others], build=torch_build(version, cuda=cuda))
    return dataclasses.replace(
        base,
        platform=PlatformFacts("Linux", "aarch64", "5.15.148-tegra", "glibc", "2.35"),
        stack=StackFacts(jetson=jetson_facts(tmp_path)),
    )


@pytest.mark.parametrize(
    ("version", "tag", "cuda", "release", "fires"),
    [
        ("2.9.1+cu126", "cp310-cp310-manylinux_2_28_aarch64", "12.6", "36.4.3", True),
        ("2.9.1", "cp310-cp310-manylinux_2_28_aarch64", None, "36.4.3", True),
        ("2.5.0a0+872d972e41.nv24.08", "cp310-cp310-linux_aarch64", "12.6", "36.4.3", False),
        ("2.8.0", "cp310-cp310-linux_aarch64", "12.6", "36.4.3", False),
        ("2.9.1+cu130", "cp312-cp312-manylinux_2_28_aarch64", "13.0", "38.2.0", False),
        ("2.9.1+cu128", "cp312-cp312-manylinux_2_28_aarch64", "12.8", "38.2.0", True),
    ],
)
def test_jetson_builds_against_server_arm_builds(
    tmp_path: Path, version: str, tag: str, cuda: str | None, release: str, fires: bool
) -> None:
    model = "NVIDIA Jetson AGX Thor" if release.startswith("38") else "NVIDIA Jetson AGX Orin"
    report = judge(_aarch64_facts(tmp_path, version, tag, cuda, release, model))
    found = [f for f in report.findings if f.id == "jetson-server-wheel"]
    assert bool(found) == fires
    if found:
        rule = found[0].evidence[-1]
        assert rule.startswith(
            "compute capability 11.0" if "Thor" in model else "compute capability 8.7"
        )
        remedy = found[0].remedies[0]
        assert remedy.text.startswith("uv pip install --python ")  # uv installed this torch
        assert ("jetson-ai-lab.io/jp6/cu126" in remedy.text) == release.startswith("36")
        assert ("whl/cu130" in remedy.text) == release.startswith("38")
        if release.startswith("38"):
            # Thor runs the server builds: the installed release, in the CUDA 13 variant.
            assert remedy.text.endswith(" torch==2.9.1+cu130\n")
        else:
            # The Jetson indexes keep their own releases: unpinned, and the remedy says why.
            assert remedy.text.endswith(" torch\n")
            assert "not pinned: that index carries its own torch releases" in remedy.summary


def test_the_ticket_names_the_jetson_board(tmp_path: Path) -> None:
    jetson = _aarch64_facts(
        tmp_path,
        "2.5.0a0+872d972e41.nv24.08",
        "cp310-cp310-linux_aarch64",
        "12.6",
        "36.4.3",
        "NVIDIA Jetson AGX Orin Developer Kit",
    )
    text = render_markdown(judge(dataclasses.replace(jetson, machine=MachineFacts())))
    assert "| Board | NVIDIA Jetson AGX Orin Developer Kit  L4T 36.4.3 |" in text


def test_jetson_remedy_in_a_uv_project_is_the_index_block(tmp_path: Path) -> None:
    base = _aarch64_facts(
        tmp_path,
        "2.9.1+cu126",
        "cp310-cp310-manylinux_2_28_aarch64",
        "12.6",
        "36.4.3",
        "NVIDIA Jetson Orin Nano Developer Kit",
    )
    assert base.interpreter is not None
    in_project = dataclasses.replace(
        base,
        project=project(),
        interpreter=dataclasses.replace(base.interpreter, prefix="/project/.venv"),
    )
    finding = next(f for f in judge(in_project).findings if f.id == "jetson-server-wheel")
    remedy, sync = finding.remedies
    # The inspected venv's own project, never a pyproject.toml relative to the cwd.
    assert (remedy.kind.value, remedy.target) == ("toml", "/project/pyproject.toml")
    assert "torch-doctor fix" in remedy.summary
    assert sync.text == "uv lock --upgrade-package torch\nuv sync --reinstall-package torch\n"
    block = tomllib.loads(remedy.text)
    assert block["tool"]["uv"]["index"] == [
        {"name": "jetpack-6", "url": "https://pypi.jetson-ai-lab.io/jp6/cu126", "explicit": True}
    ]
    (source,) = block["tool"]["uv"]["sources"]["torch"]
    assert source == {
        "index": "jetpack-6",
        "marker": "sys_platform == 'linux' and platform_machine == 'aarch64'",
    }


def test_jetson_in_a_venv_found_beside_another_checkout_gets_no_pyproject_block(
    tmp_path: Path,
) -> None:
    base = _aarch64_facts(
        tmp_path,
        "2.9.1+cu126",
        "cp310-cp310-manylinux_2_28_aarch64",
        "12.6",
        "36.4.3",
        "NVIDIA Jetson Orin Nano Developer Kit",
    )
    assert base.interpreter is not None
    elsewhere = dataclasses.replace(
        base,
        project=dataclasses.replace(project(), found_by="working directory"),
        interpreter=dataclasses.replace(base.interpreter, prefix="/elsewhere/venv"),
    )
    finding = next(f for f in judge(elsewhere).findings if f.id == "jetson-server-wheel")
    assert [r.kind.value for r in finding.remedies] == ["shell"]
    assert "pyproject" not in finding.remedies[0].text


def test_x86_64_and_server_arm_are_never_judged_as_jetsons() -> None:
    assert "jetson-server-wheel" not in ids(facts(healthy_distributions()))


@pytest.mark.slow
def test_real_triton_wheel_wants_libcuda_so_1_and_finds_the_stand_in(
    real_torch_venv: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    # torch 2.14.1's triton 3.8.0: its driver.py is read, not imported; it wants
    # libcuda.so.1, which the stand-in directory on LD_LIBRARY_PATH holds.
    run = doctor(real_torch_venv, workdir, driver_stubs.env(Driver(gpus=(H100,))))
    lookup = run.json["facts"]["stack"]["triton_libcuda"]
    assert lookup["wanted"] == "libcuda.so.1"
    assert lookup["found"] == str(driver_stubs.libraries / "libcuda.so.1")
    assert "triton-libcuda-not-found" not in run.finding_ids()
