"""The library checks and remedies as pure functions over hand-built facts."""

from __future__ import annotations

from typing import Any

from doctor.checks import CheckStatus
from doctor.facts import DistributionFacts, Facts, InterpreterFacts, TorchBuildFacts
from doctor.facts.libraries import (
    CudaLibraryFacts,
    ElfObjectFacts,
    LibrariesFacts,
    LoadedLibraryFacts,
    LoaderPathEntry,
    LoadProbeFacts,
    ResolvedDependency,
)
from doctor.pipeline import judge

SITE = "/venv/lib/python3.11/site-packages"
CUDNN = f"{SITE}/nvidia/cudnn/lib/libcudnn.so.9"
OLD_LIB = "/usr/local/cuda-12.1/lib64"
LINUX = {
    "platform_system": "Linux",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
LIBRARY_IDS = (
    "library-not-found",
    "library-load-failed",
    "library-shadowed",
    "library-version-mismatch",
    "cuda-libs-in-loader-path",
)


def _dist(name: str, version: str, requires: tuple[str, ...] = ()) -> DistributionFacts:
    return DistributionFacts(
        name=name,
        display_name=name,
        version=version,
        location=SITE,
        metadata_dir=f"{SITE}/{name.replace('-', '_')}-{version}.dist-info",
        installer="uv",
        requires_dist=requires,
    )


def _facts(
    rows: tuple[CudaLibraryFacts, ...] = (),
    *,
    pins: tuple[str, ...] = ('nvidia-cudnn-cu13==9.24.0.43; platform_system == "Linux"',),
    environment: dict[str, str] | None = None,
    objects: tuple[ElfObjectFacts, ...] = (),
    loads: tuple[LoadedLibraryFacts, ...] = (),
    loader_path: tuple[LoaderPathEntry, ...] = (),
    cuda: str | None = "13.0",
) -> Facts:
    interpreter = InterpreterFacts(
        executable="/project/.venv/bin/python",
        version="3.11.7",
        implementation="CPython",
        prefix="/venv",
        base_prefix="/usr",
        is_venv=True,
        purelib=SITE,
        platlib=SITE,
        sys_path=(SITE,),
        marker_environment=LINUX,
    )
    return Facts(
        interpreter=interpreter,
        distributions=(
            _dist("torch", "2.14.1+cu130", pins),
            _dist("nvidia-cudnn-cu13", "9.24.0.43"),
        ),
        torch=TorchBuildFacts(
            package_dir=f"{SITE}/torch",
            version="2.14.1+cu130",
            cuda=cuda,
            lib_files=("libtorch_cuda.so",) if cuda else (),
        ),
        environment=environment or {},
        libraries=LibrariesFacts(
            torch_lib_dir=f"{SITE}/torch/lib",
            objects=objects,
            cuda=rows,
            loads=loads,
            loader_path=loader_path,
            load_probe=LoadProbeFacts(ran=True, processes=1),
        ),
    )


def _cudnn_row(
    path: str = CUDNN,
    version: str = "9.24.0",
    owner: str | None = "nvidia-cudnn-cu13",
    how: str = "torch preload",
) -> CudaLibraryFacts:
    return CudaLibraryFacts(
        soname="libcudnn.so.9",
        needed_by=("libtorch_cuda.so",),
        resolved=ResolvedDependency(
            "libcudnn.so.9", how, path, entry=path, owner=owner, expected_path=CUDNN
        ),
        load=LoadedLibraryFacts(
            "libcudnn.so.9",
            "torch preload",
            path,
            loaded=True,
            path=path,
            owner=owner,
            version=version,
            version_api="cudnnGetVersion",
        ),
    )


def _results(facts: Facts) -> dict[str, Any]:
    report = judge(facts)
    return {r.spec.id: r for r in report.results if r.spec.id in LIBRARY_IDS}


def _finding(facts: Facts, finding_id: str) -> Any:
    report = judge(facts)
    return next(f for f in report.findings if f.id == finding_id)


def test_the_wheels_own_cudnn_at_the_pinned_version_raises_nothing() -> None:
    results = _results(_facts((_cudnn_row(),)))
    assert {r.status for r in results.values()} == {CheckStatus.PASSED}


def test_cpu_only_torch_and_missing_torch_skip_every_library_check() -> None:
    cpu = _results(_facts(cuda=None))
    assert all(r.status is CheckStatus.SKIPPED and "CPU-only" in r.reason for r in cpu.values())
    none = _results(Facts())
    assert all(r.reason == "torch is not installed" for r in none.values())


def test_an_older_cudnn_from_ld_preload_is_shadowed_and_mismatched() -> None:
    old = "/opt/cudnn-9.1/lib/libcudnn.so.9"
    facts = _facts(
        (_cudnn_row(old, "9.1.0", None, "LD_PRELOAD"),),
        environment={"LD_PRELOAD": f"{old} /usr/lib/libjemalloc.so.2"},
    )
    shadowed = _finding(facts, "library-shadowed")
    assert shadowed.evidence == (
        f"libcudnn.so.9: loaded from {old} (through the LD_PRELOAD entry {old}); expected {CUDNN}",
    )
    assert shadowed.remedies[0].text == "export LD_PRELOAD=/usr/lib/libjemalloc.so.2"
    # One cause: the version mismatch is the preload's consequence, and the wheel is
    # intact, so nothing tells the user to reinstall it.
    mismatch = _finding(facts, "library-version-mismatch")
    assert mismatch.data.mismatched[0].expected == "9.24.0.43"
    assert mismatch.root == "library-shadowed"
    assert mismatch.remedies == ()


def test_a_torch_built_against_a_system_cuda_is_not_told_its_libraries_are_shadowed() -> None:
    system = "/usr/lib/x86_64-linux-gnu/libcudnn.so.9"
    facts = _facts((_cudnn_row(system, "9.1.0", None, "ld.so.cache"),), pins=())
    results = _results(facts)
    assert results["library-shadowed"].status is CheckStatus.PASSED
    assert results["library-version-mismatch"].status is CheckStatus.PASSED


def test_undefined_symbol_names_the_ld_library_path_entry_and_drops_every_copy_of_it() -> None:
    cusparse = f"{SITE}/nvidia/cusparse/lib/libcusparse.so.12"
    error = (
        f"{SITE}/torch/lib/../../nvidia/cusparse/lib/libcusparse.so.12: undefined symbol: "
        "__nvJitLinkComplete_12_4, version libnvJitLink.so.12"
    )
    jitlink = ResolvedDependency(
        "libnvJitLink.so.12",
        "LD_LIBRARY_PATH",
        f"{OLD_LIB}/libnvJitLink.so.12",
        entry=OLD_LIB,
        expected_path=f"{SITE}/nvidia/nvjitlink/lib/libnvJitLink.so.12",
    )
    facts = _facts(
        objects=(
            ElfObjectFacts(
                cusparse, "libcusparse.so.12", ("libnvJitLink.so.12",), dependencies=(jitlink,)
            ),
        ),
        loads=(
            LoadedLibraryFacts(
                "libtorch_global_deps.so",
                "torch global deps",
                f"{SITE}/torch/lib/libtorch_global_deps.so",
                error=error,
                error_object=cusparse,  # the load probe resolves the object the error names
            ),
        ),
        environment={"LD_LIBRARY_PATH": f"{OLD_LIB}:/opt/x:{OLD_LIB}"},
    )
    failed = _finding(facts, "library-load-failed")
    assert failed.data.failures[0].soname == "libcusparse.so.12"
    assert failed.evidence[1] == (
        f"cause: libnvJitLink.so.12 was found first through the LD_LIBRARY_PATH entry {OLD_LIB}: "
        f"{OLD_LIB}/libnvJitLink.so.12, ahead of the wheel's copy "
        f"{SITE}/nvidia/nvjitlink/lib/libnvJitLink.so.12"
    )
    assert failed.remedies[0].text == "export LD_LIBRARY_PATH=/opt/x"


def test_the_drivers_own_library_is_never_reported_as_not_found() -> None:
    driver = CudaLibraryFacts(
        "libcuda.so.1", ("libcaffe2_nvrtc.so",), ResolvedDependency("libcuda.so.1", "not found")
    )
    results = _results(_facts((_cudnn_row(), driver)))
    assert results["library-not-found"].status is CheckStatus.PASSED


def test_loader_path_entry_with_cuda_libraries_is_named_with_the_value_to_keep() -> None:
    facts = _facts(
        (_cudnn_row(),),
        loader_path=(
            LoaderPathEntry("LD_LIBRARY_PATH", OLD_LIB, ("libcudart.so.12",)),
            LoaderPathEntry("LD_LIBRARY_PATH", "/opt/x", ()),
        ),
        environment={"LD_LIBRARY_PATH": f"{OLD_LIB}:/opt/x"},
    )
    finding = _finding(facts, "cuda-libs-in-loader-path")
    assert finding.evidence == (f"LD_LIBRARY_PATH entry {OLD_LIB} holds libcudart.so.12",)
    assert [r.text for r in finding.remedies] == ["export LD_LIBRARY_PATH=/opt/x"]
    only = _facts(
        (_cudnn_row(),),
        environment={"LD_LIBRARY_PATH": OLD_LIB},
        loader_path=(LoaderPathEntry("LD_LIBRARY_PATH", OLD_LIB, ("libcudart.so.12",)),),
    )
    assert [r.text for r in _finding(only, "cuda-libs-in-loader-path").remedies] == [
        "unset LD_LIBRARY_PATH"
    ]
