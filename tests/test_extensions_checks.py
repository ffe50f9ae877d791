"""The extension and toolkit checks as pure functions of hand-built facts (table-driven)."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from doctor.checks import Skip
from doctor.facts import Facts
from doctor.facts.extensions import (
    CudaToolkitFacts,
    ExtensionFacts,
    ExtensionLibraryFacts,
    ExtensionsFacts,
    HostCompilerFacts,
    MissingSymbol,
)
from doctor.pipeline import judge
from tests.handmade import CheckUnderTest, dist, healthy_facts
from tests.test_driver_checks import machine, with_machine

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LIBRARY = "/venv/lib/python3.11/site-packages/demo_ext/_C.so"


def with_extension(
    library: ExtensionLibraryFacts, *, torch_cxx11: bool | None = True, **extension: object
) -> Facts:
    found = ExtensionFacts(
        name="demo-ext", display_name="demo-ext", version="1.0", libraries=(library,)
    )
    found = dataclasses.replace(found, **extension)  # type: ignore[arg-type]
    return dataclasses.replace(
        healthy_facts(),
        extensions=ExtensionsFacts(("libc10.so",), torch_cxx11, (found,)),
    )


def missing(name: str, count: int = 1, **flags: bool) -> ExtensionLibraryFacts:
    return ExtensionLibraryFacts(
        LIBRARY,
        torch_needed=("libc10.so",),
        torch_symbols=10,
        missing_count=count,
        missing=(MissingSymbol(name),) if count else (),
        **flags,
    )


@pytest.mark.parametrize(
    ("library", "torch_cxx11", "abi", "cxx11"),
    [
        (missing("_ZN3c104cuda9SetDeviceEi"), True, True, False),
        (missing("_ZN3c104cuda9SetDeviceEi", uses_cxx11_abi=True), True, True, False),
        (missing("_ZN3c104cuda9SetDeviceEi", uses_cxx11_abi=True), False, False, True),
        (
            missing("_ZN5torch3jit17parseSchemaOrNameERKSsb", uses_old_string_abi=True),
            True,
            False,
            True,
        ),
        (missing("x", count=0, uses_cxx11_abi=True), True, False, False),
        (missing("x", count=0), None, False, False),
    ],
)
def test_one_cause_per_shared_object(
    library: ExtensionLibraryFacts, torch_cxx11: bool | None, abi: bool, cxx11: bool
) -> None:
    facts = with_extension(library, torch_cxx11=torch_cxx11)
    abi_outcome = CheckUnderTest("extension-abi-mismatch").run(facts)
    cxx11_outcome = CheckUnderTest("extension-cxx11-abi-mismatch").run(facts)
    assert bool(abi_outcome) == abi
    if torch_cxx11 is None:
        assert isinstance(cxx11_outcome, Skip)
    else:
        assert bool(cxx11_outcome) == cxx11


def test_cuda_runtime_of_torchs_major_is_quiet_and_another_fires() -> None:
    check = CheckUnderTest("extension-cuda-major-mismatch")
    same = missing("x", count=0)
    assert (
        check.run(with_extension(dataclasses.replace(same, cuda_runtime=("libcudart.so.13",))))
        == []
    )
    finding = check.only(
        with_extension(
            dataclasses.replace(same, cuda_runtime=("libcudart.so.12",)), built_for_cuda="12"
        )
    )
    assert finding.data.needs == ("libcudart.so.12",)


def toolkit(release: str | None, compiler: HostCompilerFacts | None = None) -> Facts:
    return dataclasses.replace(
        healthy_facts(),
        cuda_toolkit=CudaToolkitFacts(
            "/usr/local/cuda",
            "CUDA_HOME",
            "/usr/local/cuda/bin/nvcc",
            release,
            host_compiler=compiler,
        ),
    )


@pytest.mark.parametrize(
    ("release", "compiler", "fires"),
    [
        ("13.0", HostCompilerFacts("/usr/bin/gcc", "PATH", "gcc", "15.2.0"), False),
        ("13.0", HostCompilerFacts("/usr/bin/gcc", "PATH", "gcc", "16.0.1"), True),
        ("12.1", HostCompilerFacts("/usr/bin/gcc", "PATH", "gcc", "13.3.0"), True),
        ("12.4", HostCompilerFacts("/usr/bin/gcc", "PATH", "gcc", "13.3.0"), False),
        ("13.0", HostCompilerFacts("/usr/bin/clang", "CC", "clang", "21.1.0"), True),
        # The table has no clang limit before CUDA 13.0: not judged, so not a pass.
        ("12.8", HostCompilerFacts("/usr/bin/clang", "CC", "clang", "21.1.0"), None),
    ],
)
def test_host_compiler_against_the_table(
    release: str, compiler: HostCompilerFacts, fires: bool | None
) -> None:
    outcome = CheckUnderTest("nvcc-host-compiler-unsupported").run(toolkit(release, compiler))
    if fires is None:
        assert isinstance(outcome, Skip)
        return
    assert not isinstance(outcome, Skip)
    assert bool(outcome) == fires


def test_toolkit_checks_skip_without_a_release_or_a_toolkit() -> None:
    for check_id in (
        "nvcc-cuda-mismatch",
        "nvcc-host-compiler-unsupported",
        "several-cuda-toolkits",
    ):
        assert isinstance(CheckUnderTest(check_id).run(healthy_facts()), Skip)
        assert isinstance(CheckUnderTest(check_id).run(toolkit(None)), Skip)


# --- relations: one cause, one finding ---------------------------------------------------------


def companion_with_missing_symbols(torch_pin: str) -> Facts:
    """torchvision pinned to ``torch_pin``, whose _C.so misses a torch symbol."""
    torchvision = dist("torchvision", "0.28.0", requires_dist=("numpy", f"torch=={torch_pin}"))
    base = healthy_facts()
    library = dataclasses.replace(missing("_ZN3c104cuda9SetDeviceEi"), path="torchvision/_C.so")
    found = ExtensionFacts(
        name="torchvision",
        display_name="torchvision",
        version="0.28.0",
        torch_requirement=f"torch=={torch_pin}",
        built_for_torch=torch_pin,
        libraries=(library,),
    )
    return dataclasses.replace(
        base,
        distributions=(*base.distributions, torchvision),
        extensions=ExtensionsFacts(("libc10.so",), True, (found,)),
    )


def test_a_companion_built_for_another_torch_is_one_root_with_its_symbols_under_it() -> None:
    report = judge(companion_with_missing_symbols("2.13.0"))
    roots = [f for f in report.findings if f.is_root]
    assert [f.id for f in roots] == ["torch-companion-mismatch"]
    symbols = next(f for f in report.findings if f.id == "extension-abi-mismatch")
    assert symbols.root == "torch-companion-mismatch"
    assert symbols.remedies == ()  # its root's remedy fixes it


def test_a_companion_whose_pin_accepts_torch_but_whose_symbols_do_not_is_a_root() -> None:
    report = judge(companion_with_missing_symbols("2.14.1"))
    symbols = next(f for f in report.findings if f.id == "extension-abi-mismatch")
    assert symbols.is_root and symbols.remedies
    assert "torch-companion-mismatch" not in {f.id for f in report.findings}


def test_several_toolkits_is_left_to_nvcc_cuda_mismatch_when_cuda_home_is_another_major() -> None:
    all_facts = toolkit("12.8")
    assert all_facts.cuda_toolkit is not None
    all_facts = dataclasses.replace(
        all_facts,
        cuda_toolkit=dataclasses.replace(
            all_facts.cuda_toolkit,
            others=(("/opt/cuda-13.0/bin/nvcc", "13.0"),),
            first_on_path="/opt/cuda-13.0/bin/nvcc",
        ),
    )
    assert CheckUnderTest("several-cuda-toolkits").run(all_facts) == Skip("see nvcc-cuda-mismatch")
    finding = CheckUnderTest("nvcc-cuda-mismatch").judged(all_facts)
    assert finding.remedies[0].text == "export CUDA_HOME=/opt/cuda-13.0\n"


@pytest.mark.parametrize(
    ("targets", "outcome"),
    [
        ((), "skip"),  # CPU code only: nothing to judge, not a pass
        (("sm_90",), "quiet"),  # the H100's own cubin
        (("sm_80",), "fires"),  # an A100 cubin does not run on 9.0
    ],
)
def test_extension_gpu_code_against_the_gpu_here(targets: tuple[str, ...], outcome: str) -> None:
    library = dataclasses.replace(missing("x", count=0), gpu_targets=targets)
    all_facts = with_machine(machine(), with_extension(library))
    result = CheckUnderTest("extension-gpu-arch-unsupported").run(all_facts)
    if outcome == "skip":
        assert result == Skip("no extension's shared objects carry GPU code")
    else:
        assert not isinstance(result, Skip) and bool(result) == (outcome == "fires")


# --- remedies, per workflow -------------------------------------------------------------------


def _in_uv_project(
    all_facts: Facts, *locked: str, tool_uv: dict[str, object] | None = None
) -> Facts:
    """The same facts, in the venv of a uv project whose lock holds ``locked``."""
    from tests.handmade import project

    own = dataclasses.replace(
        project(),
        locked_names=tuple(sorted({"torch", *locked})),
        tool_uv=dict(tool_uv or {}),
    )
    return dataclasses.replace(all_facts, project=own)


def _abi_remedies(all_facts: Facts) -> list[tuple[str, str, str | None]]:
    finding = CheckUnderTest("extension-abi-mismatch").judged(all_facts)
    return [(r.kind.value, r.text, r.target) for r in finding.remedies]


def test_in_a_uv_project_the_rebuild_is_the_projects_and_survives_uv_sync() -> None:
    broken = with_extension(missing("_ZN3c104cuda9SetDeviceEi"))
    remedies = _abi_remedies(
        _in_uv_project(broken, "demo-ext", tool_uv={"no-build-isolation-package": ["vllm"]})
    )
    (kind, block, target), (shell, command, _) = remedies[:2]
    assert (kind, target, shell) == ("toml", "/project/pyproject.toml", "shell")
    # The user's own entries stay; the extension is added to both lists.
    assert tomllib.loads(block)["tool"]["uv"] == {
        "no-build-isolation-package": ["vllm", "demo-ext"],
        "no-binary-package": ["demo-ext"],
    }
    assert command == "uv sync --reinstall-package demo-ext --no-cache\n"
    assert not any("uv pip" in text for _, text, _ in remedies)


def test_in_a_uv_project_an_extension_the_lock_lacks_is_added_at_its_version() -> None:
    broken = with_extension(missing("_ZN3c104cuda9SetDeviceEi"), version="1.0+pt26")
    [command] = [t for k, t, _ in _abi_remedies(_in_uv_project(broken)) if k == "shell"]
    assert command == "uv add --reinstall-package demo-ext --no-cache demo-ext==1.0\n"


def test_go_back_to_the_torch_of_a_flash_attn_style_tag_is_exact() -> None:
    # Built for "torch2.6" with CUDA 12: torch 2.6's newest patch, in its PyPI variant
    # (cu124, CUDA 12), from the PyTorch index since the installed torch is a +cu130 build.
    broken = with_extension(
        missing("_ZN3c104cuda9SetDeviceEi"), built_for_torch="2.6", built_for_cuda="12"
    )
    [back] = [t for k, t, _ in _abi_remedies(broken) if "torch==" in t]
    assert back.endswith(" --index-url https://download.pytorch.org/whl/cu124 torch==2.6.0+cu124\n")


def test_go_back_in_a_uv_project_is_uv_add_of_the_exact_release() -> None:
    broken = with_extension(missing("_ZN3c104cuda9SetDeviceEi"), built_for_torch="2.13")
    remedies = _abi_remedies(_in_uv_project(broken, "demo-ext"))
    assert ("shell", "uv add torch==2.13.0\n", None) in remedies


def test_host_compiler_remedy_is_a_command_then_the_variables() -> None:
    toolkit = CudaToolkitFacts(
        cuda_home="/usr/local/cuda-13.0",
        cuda_home_source="CUDA_HOME",
        nvcc="/usr/local/cuda-13.0/bin/nvcc",
        release="13.0",
        host_compiler=HostCompilerFacts("/usr/bin/gcc", "PATH", "gcc", "16.1.0"),
    )
    finding = CheckUnderTest("nvcc-host-compiler-unsupported").judged(
        dataclasses.replace(healthy_facts(), cuda_toolkit=toolkit)
    )
    assert [(r.kind.value, r.text) for r in finding.remedies] == [
        ("shell", "sudo apt-get install gcc-15 g++-15\n"),
        ("env", "export CC=gcc-15 CXX=g++-15 NVCC_CCBIN=gcc-15\n"),
    ]
    assert "apt-get" not in " ".join(r.summary for r in finding.remedies)
