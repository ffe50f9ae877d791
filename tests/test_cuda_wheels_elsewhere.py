"""cuda-wheels-elsewhere: torch's CUDA wheels installed in another site directory than torch.

Hand-built facts for the rule and each remedy; the remedies that are commands run
literally (a link between two directories with compiled stand-in libraries, the pinned
reinstall in a hard-linked copy of the real torch venv), and the next look is clean.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from doctor.checks import CheckStatus
from doctor.facts import DistributionFacts, Facts, InterpreterFacts
from doctor.findings import Finding, RemedyKind, Severity
from doctor.pipeline import judge
from tests.elf_fixtures import ElfBuilder, StandIn, compiler
from tests.factory import FakeEnv, paste_as_printed, real_torch_venv_path, run_doctor
from tests.handmade import SITE, healthy_facts

ID = "cuda-wheels-elsewhere"
OTHER = "/opt/stack/site-packages"
LIB64 = "/venv/lib64/python3.12/site-packages"
LIB = "/venv/lib/python3.12/site-packages"


def moved(dist: DistributionFacts, location: str, real: str | None = None) -> DistributionFacts:
    return dataclasses.replace(
        dist,
        location=location,
        metadata_dir=dist.metadata_dir.replace(dist.location, location),
        real_location=real or location,
    )


def with_cuda_wheels_at(
    facts: Facts, location: str, real: str | None = None, keep: tuple[str, ...] = ()
) -> Facts:
    dists = tuple(
        moved(d, location, real) if d.name.startswith("nvidia-") and d.name not in keep else d
        for d in facts.distributions
    )
    return dataclasses.replace(facts, distributions=dists)


def lib64_venv(facts: Facts) -> Facts:
    """A venv whose interpreter has two site directories (platlibdir=lib64): torch in
    lib64, where pip puts it, the rest in lib."""
    assert facts.interpreter is not None
    interpreter: InterpreterFacts = dataclasses.replace(
        facts.interpreter,
        purelib=LIB,
        platlib=LIB64,
        sys_path=(LIB64, LIB),
        real_site_dirs=(LIB64, LIB),
    )
    dists = tuple(moved(d, LIB64 if d.name == "torch" else LIB) for d in facts.distributions)
    return dataclasses.replace(facts, interpreter=interpreter, distributions=dists)


def finding(facts: Facts) -> Finding:  # type: ignore[type-arg]
    return next(f for f in judge(facts).findings if f.id == ID)


def status(facts: Facts) -> CheckStatus:
    return next(r.status for r in judge(facts).results if r.spec.id == ID)


def test_wheels_beside_torch_are_quiet() -> None:
    assert status(healthy_facts()) is CheckStatus.PASSED


def test_a_path_that_links_to_torchs_directory_is_torchs_directory() -> None:
    # A lib64 that links to lib (Debian's venvs): two spellings, one directory.
    facts = with_cuda_wheels_at(healthy_facts(), "/venv/lib64/python3.11/site-packages", SITE)
    assert status(facts) is CheckStatus.PASSED


def test_a_copy_beside_torch_is_enough() -> None:
    facts = healthy_facts()
    elsewhere = tuple(moved(d, OTHER) for d in facts.distributions if d.name.startswith("nvidia-"))
    both = dataclasses.replace(facts, distributions=(*elsewhere, *facts.distributions))
    assert status(both) is CheckStatus.PASSED


def test_a_missing_wheel_is_missing_cuda_wheels_not_this() -> None:
    facts = healthy_facts()
    without = tuple(d for d in facts.distributions if not d.name.startswith("nvidia-cudnn"))
    assert status(dataclasses.replace(facts, distributions=without)) is CheckStatus.PASSED


def test_wheels_on_another_path_entry_are_named_with_both_directories() -> None:
    found = finding(with_cuda_wheels_at(healthy_facts(), OTHER))
    assert found.severity is Severity.WARNING
    assert "of torch's CUDA wheels are installed in another directory than torch" in found.title
    assert found.evidence[0] == f"torch 2.14.1+cu130 is installed in {SITE}"
    assert found.evidence[1].startswith(f"installed in {OTHER}: nvidia-")
    assert "nvidia-cudnn-cu13 9.24.0.43" in found.evidence[1]
    # cuda-toolkit (no library of its own) is not one of them.
    assert "cuda-toolkit" not in found.evidence[1]
    text, shell = found.remedies
    assert text.kind is RemedyKind.TEXT and OTHER in text.text
    assert shell.kind is RemedyKind.SHELL
    assert "nvidia-cudnn-cu13==9.24.0.43" in shell.text and "--reinstall" in shell.text


def test_torch_outside_the_interpreters_site_directories_gets_words_not_a_command() -> None:
    facts = healthy_facts()
    dists = tuple(moved(d, OTHER) if d.name == "torch" else d for d in facts.distributions)
    found = finding(dataclasses.replace(facts, distributions=dists))
    assert [r.kind for r in found.remedies] == [RemedyKind.TEXT]
    assert f"torch itself comes from {OTHER}" in found.remedies[0].text


def test_a_lib_and_lib64_venv_gets_one_link_for_the_whole_nvidia_directory() -> None:
    found = finding(lib64_venv(healthy_facts()))
    [link] = found.remedies
    assert link.kind is RemedyKind.SHELL
    assert link.text == f"ln -sT {LIB}/nvidia {LIB64}/nvidia\n"


def test_a_lib_and_lib64_venv_with_some_wheels_beside_torch_links_each_package() -> None:
    facts = lib64_venv(healthy_facts())
    dists = tuple(
        moved(d, LIB64) if d.name == "nvidia-nccl-cu13" else d for d in facts.distributions
    )
    found = finding(dataclasses.replace(facts, distributions=dists))
    assert found.data.beside_torch == ("nvidia-nccl-cu13",)
    [link] = found.remedies
    assert link.text.startswith(f"mkdir -p {LIB64}/nvidia\nfor d in {LIB}/nvidia/*/; do ")


def test_what_the_loader_does_because_of_it_hangs_under_it() -> None:
    from tests.test_libraries_checks import _cudnn_row, _facts

    system = "/usr/lib/x86_64-linux-gnu/libcudnn.so.9"
    facts = _facts((_cudnn_row(system, "9.1.0", None, "ld.so.cache"),))
    facts = with_cuda_wheels_at(facts, OTHER)
    report = judge(facts)
    by_id = {f.id: f for f in report.findings}
    assert by_id["library-shadowed"].root == ID
    assert by_id["library-version-mismatch"].root == ID
    assert by_id[ID].root is None and by_id["library-shadowed"].remedies == ()
    # Without the split, the same shadowing is its own root.
    alone = {
        f.id: f for f in judge(_facts((_cudnn_row(system, "9.1.0", None, "ld.so.cache"),))).findings
    }
    assert alone["library-shadowed"].root is None


# --- the link, run literally -------------------------------------------------------------


def _layout(root: Path, builder: ElfBuilder, beside: bool) -> tuple[Path, Path, Path]:
    """torch's library in lib64 with torch's RPATH, a wheel's library in lib (and, with
    ``beside``, another package already in lib64's nvidia/)."""
    lib, lib64 = root / "lib" / "site-packages", root / "lib64" / "site-packages"
    wheel_lib = lib / "nvidia" / "cudnn" / "lib"
    wheel_lib.mkdir(parents=True)
    # A soname no system has, so only the link can make it resolve.
    built = builder.build(StandIn("libstandin_cudnn.so.9"))
    (wheel_lib / "libstandin_cudnn.so.9").write_bytes(built.read_bytes())
    torch_lib = lib64 / "torch" / "lib"
    torch_lib.mkdir(parents=True)
    torch_cuda = builder.build(
        StandIn(
            "libtorch_cuda.so",
            needed=(wheel_lib / "libstandin_cudnn.so.9",),
            search=("$ORIGIN/../../nvidia/cudnn/lib",),
        )
    )
    (torch_lib / "libtorch_cuda.so").write_bytes(torch_cuda.read_bytes())
    if beside:
        (lib64 / "nvidia" / "nccl" / "lib").mkdir(parents=True)
    return lib, lib64, torch_lib / "libtorch_cuda.so"


def _loads(path: Path) -> bool:
    # In a child: a library loaded here would stay mapped for the rest of the session.
    code = f"import ctypes; ctypes.CDLL({str(path)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.mark.skipif(compiler() is None, reason="needs a C compiler")
@pytest.mark.parametrize("beside", [False, True], ids=["no nvidia/ beside torch", "some beside"])
def test_the_printed_link_lets_the_loader_reach_the_wheel(tmp_path: Path, beside: bool) -> None:
    lib, lib64, torch_cuda = _layout(tmp_path / "venv", ElfBuilder(tmp_path / "elf"), beside)
    assert not _loads(torch_cuda)  # the RPATH looks in lib64/nvidia, which lacks cuDNN
    facts = lib64_venv(healthy_facts())
    interpreter = dataclasses.replace(
        facts.interpreter,  # type: ignore[arg-type]
        real_site_dirs=(str(lib64), str(lib)),
    )
    keep = ("nvidia-nccl-cu13",) if beside else ()
    dists = tuple(
        moved(d, str(lib64) if d.name == "torch" or d.name in keep else str(lib))
        for d in facts.distributions
    )
    found = finding(dataclasses.replace(facts, interpreter=interpreter, distributions=dists))
    [link] = found.remedies
    subprocess.run(["bash", "-c", link.text], check=True)
    assert _loads(torch_cuda)
    if beside:
        assert (lib64 / "nvidia" / "nccl" / "lib").is_dir()  # left as it was
    # Pasted twice, it changes nothing and breaks nothing.
    subprocess.run(["bash", "-c", link.text], capture_output=True)
    assert _loads(torch_cuda)
    assert not (lib / "nvidia" / "nvidia").exists()


# --- the real torch venv ---------------------------------------------------------------------


@pytest.mark.slow
def test_real_cuda_wheels_behind_a_pth_file_fire_and_the_printed_reinstall_clears_it(
    tmp_path: Path, workdir: Path
) -> None:
    # A hard-linked copy (the cache is never written): torch stays, its nvidia wheels move
    # to a directory a .pth file adds to sys.path, as stacked environments do.
    venv = FakeEnv(tmp_path / "venv")
    subprocess.run(["cp", "-al", str(real_torch_venv_path()), str(venv.root)], check=True)
    other = tmp_path / "other"
    other.mkdir()
    site = venv.site_packages
    for path in [site / "nvidia", *site.glob("nvidia_*.dist-info")]:
        path.rename(other / path.name)
    (site / "zz_stacked.pth").write_text(f"{other}\n")

    run = run_doctor("--python", str(venv.root), "--format", "json", "--no-redact", cwd=workdir)
    found = run.finding(ID)
    names = {w["name"] for w in found["data"]["wheels"]}
    assert {"nvidia-cudnn-cu13", "nvidia-cuda-runtime", "nvidia-nccl-cu13"} <= names
    assert {w["location"] for w in found["data"]["wheels"]} == {str(other.resolve())}
    assert "missing-cuda-wheel" not in run.finding_ids()  # installed, only out of reach
    # What the loader does because of it (a system copy found first, say) hangs under it.
    roots = run.root_ids()
    assert not {"library-not-found", "library-shadowed", "library-load-failed"} & set(roots)
    # The error users meet in this state is explained by it.
    explained = run_doctor(
        "explain",
        "--python",
        str(venv.root),
        "--format",
        "json",
        "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory",
        cwd=workdir,
    )
    assert explained.json["explain"]["confirmed"] == [ID]
    [command] = [r["text"] for r in found["remedies"] if r["kind"] == "shell"]

    paste_as_printed(command, None, workdir)
    after = run_doctor("--python", str(venv.root), "--format", "json", "--no-redact", cwd=workdir)
    assert ID not in after.finding_ids()
    assert not {"library-not-found", "library-shadowed", "library-load-failed"} & set(
        after.finding_ids()
    )


def test_windows_is_not_judged_by_linux_rpath_rules() -> None:
    from tests.handmade import marker_env

    facts = with_cuda_wheels_at(healthy_facts(environment=marker_env(system="Windows")), OTHER)
    result = next(r for r in judge(facts).results if r.spec.id == ID)
    assert result.status is CheckStatus.SKIPPED and result.reason == "judged on Linux only"
