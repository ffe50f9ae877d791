"""`torch-doctor explain`: pasted error text -> the failure's name and the checks that decide it."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from doctor.checks import REGISTRY
from doctor.knowledge.signatures import Signature, load_signatures, match_signatures
from tests.factory import (
    PLAIN_DEPENDENCIES,
    REPO,
    FakeEnv,
    doctor_env,
    real_torch_venv_path,
    run_doctor,
)

SIGNATURES = load_signatures()


@pytest.mark.parametrize("signature", SIGNATURES, ids=lambda s: s.id)
def test_each_signature_recognises_its_real_error_and_maps_to_real_findings(
    signature: Signature,
) -> None:
    assert signature.id in [m.signature.id for m in match_signatures(signature.example)]
    if signature.findings:
        assert set(signature.findings) <= set(REGISTRY), "a finding id this version lacks"
    else:
        assert signature.advice, "a signature with no check must say what to do"


@pytest.mark.parametrize("signature", SIGNATURES, ids=lambda s: s.id)
def test_each_signature_names_its_source_and_review_date(signature: Signature) -> None:
    assert signature.source.startswith("https://")
    datetime.date.fromisoformat(signature.reviewed)
    assert "\n" not in signature.name and signature.catalogue


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("libcudnn.so.9: cannot open shared object file", "cudnn-not-found"),
        (
            "undefined symbol: __nvJitLinkComplete_12_4, version libnvJitLink.so.12",
            "nvjitlink-undefined-symbol",
        ),
        ("The NVIDIA driver on your system is too old (found version 12020)", "driver-too-old"),
        ("CUDA error: no kernel image is available for execution on the device", "no-kernel-image"),
        ("Failed to initialize NVML: Driver/library version mismatch", "nvml-driver-mismatch"),
        ("sm_120 is not compatible with the current PyTorch installation", "arch-not-compatible"),
        ("AssertionError: Torch not compiled with CUDA enabled", "torch-not-compiled-with-cuda"),
        ("Found no NVIDIA driver on your system", "no-nvidia-driver"),
        (
            "Error 803: system has unsupported display driver / cuda driver combination",
            "cuda-error-803",
        ),
        ("libtorch_cuda.so: undefined symbol: ncclCommRegister", "nccl-undefined-symbol"),
        ("RuntimeError: operator torchvision::nms does not exist", "torchvision-operator-missing"),
        (
            "ImportError: /venv/lib/python3.12/site-packages/vllm/_C.abi3.so: undefined symbol: "
            "_ZN5torch3jit17parseSchemaOrNameERKSsb",
            "extension-undefined-torch-symbol",
        ),
        (
            "OSError: /venv/lib/python3.11/site-packages/torchaudio/lib/libtorchaudio.so: "
            "undefined symbol: aoti_torch_abi_version",
            "extension-undefined-torch-symbol",
        ),
        (
            "RuntimeError: The detected CUDA version (12.1) mismatches the version that was used "
            "to compile PyTorch (13.0). Please make sure to use the same CUDA versions.",
            "cpp-extension-cuda-mismatch",
        ),
        # The undefined-symbol family, for every CUDA library torch loads, as import
        # torch prints it (a shadowing copy lacks a symbol of the version torch was built for).
        (
            "ImportError: /venv/lib/python3.11/site-packages/torch/lib/libtorch_cuda.so: "
            "undefined symbol: cudnnSetConvolutionGroupCount, version libcudnn.so.9",
            "cudnn-undefined-symbol",
        ),
        (
            "OSError: torch/lib/libtorch_cuda.so: undefined symbol: cublasLtMatmulAlgoGetIds, "
            "version libcublasLt.so.13",
            "cublas-undefined-symbol",
        ),
        (
            "libtorch_cuda.so: undefined symbol: cusparseSpSV_updateMatrix, "
            "version libcusparse.so.12",
            "cusparse-undefined-symbol",
        ),
        ("libtorch_cuda.so: undefined symbol: ncclCommWindowRegister", "nccl-undefined-symbol"),
    ],
)
def test_errors_named_in_the_issue_are_recognised(text: str, expected: str) -> None:
    assert [m.signature.id for m in match_signatures(text)] == [expected]


def test_unrelated_text_matches_no_signature() -> None:
    assert match_signatures("SyntaxError: invalid syntax") == []
    # A module *named like* torch is not torch.
    assert match_signatures("ModuleNotFoundError: No module named 'torchvision'") == []


# --- Through the CLI ------------------------------------------------------------------------


def test_cudnn_error_is_confirmed_by_the_missing_wheel_with_its_install_command(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    error = "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory"
    run = run_doctor("explain", error, "--python", str(env.root), cwd=workdir)
    assert run.returncode == 1, run.stderr
    assert "Recognised: cuDNN 9 cannot be loaded" in run.stdout
    assert "Confirmed here: missing-cuda-wheel" in run.stdout
    assert "nvidia-cudnn-cu13==9.24.0.43" in run.stdout  # the remedy, with the pin
    assert "cpu-only-torch" not in run.stdout  # only the checks that bear on this error


@pytest.mark.parametrize(
    "error",
    [
        "OSError: libcudart.so.12: cannot open shared object file: No such file or directory",
        "ImportError: /venv/lib/python3.11/site-packages/nvidia/cusparse/lib/libcusparse.so.12: "
        "undefined symbol: __nvJitLinkComplete_12_4, version libnvJitLink.so.12",
    ],
    ids=["libcudart-not-found", "nvjitlink-undefined-symbol"],
)
def test_a_finding_about_another_library_does_not_confirm_the_error(
    make_env: Callable[..., FakeEnv], workdir: Path, error: str
) -> None:
    # cuDNN is missing here; the pasted error is about another library.
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    run = run_doctor("explain", error, "--python", str(env.root), "--no-color", cwd=workdir)
    said = " ".join(run.stdout.split())
    assert "Confirmed here" not in said
    assert "Not confirmed here" in said or "Ruled out here" in said
    # The cuDNN problem is named as unrelated, and its remedy is not offered as the answer.
    assert "not related to this error: missing-cuda-wheel" in said
    assert "nvidia-cudnn-cu13==9.24.0.43" not in said
    data = run_doctor(
        "explain", error, "--python", str(env.root), "--format", "json", cwd=workdir
    ).json
    assert data["explain"]["confirmed"] == []


@pytest.mark.slow
def test_real_torch_without_cudnn_does_not_confirm_an_nvjitlink_error(
    tmp_path: Path, workdir: Path
) -> None:
    # The real wheels, cuDNN removed: library-load-failed fails, about libcudnn.so.9.
    venv = tmp_path / "venv"
    subprocess.run(["cp", "-al", str(real_torch_venv_path()), str(venv)], check=True)
    site = FakeEnv(venv).site_packages
    for path in [site / "nvidia" / "cudnn", *site.glob("nvidia_cudnn_cu13-*.dist-info")]:
        shutil.rmtree(path)
    error = (
        "ImportError: /venv/lib/python3.11/site-packages/nvidia/cusparse/lib/libcusparse.so.12: "
        "undefined symbol: __nvJitLinkComplete_12_4, version libnvJitLink.so.12"
    )
    data = run_doctor("explain", error, "--python", str(venv), "--format", "json", cwd=workdir).json
    assert data["explain"]["confirmed"] == []
    assert "library-load-failed" in data["explain"]["ruled_out"]
    assert data["explain"]["conclusion"].startswith("Not confirmed here")
    cudnn = run_doctor(
        "explain",
        "libcudnn.so.9: cannot open shared object file",
        "--python",
        str(venv),
        "--format",
        "json",
        cwd=workdir,
    ).json
    assert "library-load-failed" in cudnn["explain"]["confirmed"]


def test_explain_json_lists_what_is_confirmed_and_what_is_ruled_out(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    run = run_doctor(
        "explain",
        "libcudnn.so.9: cannot open shared object file",
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
    )
    data = json.loads(run.stdout)
    explained = data["explain"]
    assert [r["id"] for r in explained["recognised"]] == ["cudnn-not-found"]
    assert "missing-cuda-wheel" in explained["confirmed"]
    assert "cuda-wheel-files-missing" in explained["ruled_out"]
    # No uv project manages this venv: no lock can have left the wheel out. That is ruled
    # out, not "could not judge".
    assert "lock-missing-dependencies" in explained["ruled_out"]
    assert "lock-missing-dependencies" not in [u["id"] for u in explained["undetermined"]]
    # What would judge the rest, said for explain as much as for check.
    assert {
        "id": "torch-import-failed",
        "reason": "torch was not imported (run again with --deep to import it)",
    } in explained["undetermined"]
    # The focused report is a report like any other: valid against the schema.
    schema = json.loads((REPO / "docs" / "report.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(data["report"], schema, cls=jsonschema.Draft202012Validator)
    checked = {c["id"] for c in data["report"]["checks"]}
    [cudnn] = [s for s in SIGNATURES if s.id == "cudnn-not-found"]
    assert checked <= set(cudnn.findings)
    roots = [f["id"] for f in data["report"]["findings"] if f["root"] is None]
    assert roots == ["missing-cuda-wheel"]


def test_cpu_build_confirms_torch_not_compiled_with_cuda(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_torch("2.14.1+cpu", cuda=None, requires_dist=tuple(PLAIN_DEPENDENCIES))
    for name, version in PLAIN_DEPENDENCIES.items():
        env.install(name, version)
    run = run_doctor(
        "explain",
        "AssertionError: Torch not compiled with CUDA enabled",
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
    )
    assert json.loads(run.stdout)["explain"]["confirmed"] == ["cpu-only-torch"]


def test_cuda_build_rules_out_torch_not_compiled_with_cuda(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    run = run_doctor(
        "explain", "Torch not compiled with CUDA enabled", "--python", str(env.root), cwd=workdir
    )
    assert run.returncode == 0, run.stderr
    assert "Ruled out here" in run.stdout
    assert "Run torch-doctor where it failed, with --python" in " ".join(run.stdout.split())


def test_a_torchvision_error_is_not_from_an_environment_without_torchvision(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    error = "RuntimeError: operator torchvision::nms does not exist"
    data = run_doctor(
        "explain", error, "--python", str(env.root), "--format", "json", cwd=workdir
    ).json
    assert data["explain"]["conclusion"].startswith(
        f"Not from this interpreter: torchvision is not installed in {env.python}"
    )


def test_an_error_any_program_prints_is_not_blamed_on_a_missing_torch(workdir: Path) -> None:
    # nvidia-smi prints this one: an interpreter without torch may well be where it ran.
    error = "Failed to initialize NVML: Driver/library version mismatch"
    data = run_doctor("explain", error, "--format", "json", cwd=workdir).json
    assert not data["explain"]["conclusion"].startswith("Not from this interpreter")


def test_an_error_torch_printed_is_not_from_an_interpreter_without_torch(workdir: Path) -> None:
    # The doctor's own interpreter has no torch: the libcudnn error came from another one.
    run = run_doctor("explain", COLOURED_TRACEBACK, "--no-color", cwd=workdir)
    said = " ".join(run.stdout.split())
    assert "Not from this interpreter: torch is not installed in " + sys.executable in said
    assert "Run torch-doctor where it failed, with --python" in said
    assert "Not confirmed here" not in said
    # torch-not-installed is why: shown, not dismissed as "not related to this error".
    assert "not related to this error: torch-not-installed" not in said
    assert "torch-not-installed" in said
    data = run_doctor("explain", COLOURED_TRACEBACK, "--format", "json", cwd=workdir).json
    assert data["explain"]["conclusion"].startswith("Not from this interpreter")
    assert data["explain"]["confirmed"] == []


def test_unknown_text_says_so_and_suggests_the_full_check(workdir: Path) -> None:
    run = run_doctor("explain", "SyntaxError: invalid syntax", cwd=workdir)
    assert run.returncode == 0
    assert "does not recognise" in run.stdout
    assert "Run `torch-doctor`" in run.stdout
    data = run_doctor("explain", "SyntaxError", "--format", "json", cwd=workdir).json
    assert data["explain"]["recognised"] == []
    assert "Run `torch-doctor`" in data["explain"]["message"]
    # A program reads the same keys whether the text was recognised or not.
    assert data["explain"]["conclusion"] == "torch-doctor does not recognise this error text."


def test_error_text_is_read_from_stdin_with_a_dash(workdir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "doctor", "explain", "-", "--format", "json"],
        input="Traceback (most recent call last):\n  ...\n"
        "ptxas fatal   : Value 'sm_121a' is not defined for option 'gpu-name'\n",
        capture_output=True,
        text=True,
        cwd=workdir,
        env=doctor_env(),
        timeout=60,
    )
    # This interpreter has no torch: like `check`, explain exits 1 (torch-not-installed).
    assert proc.returncode == 1, proc.stderr
    explained = json.loads(proc.stdout)["explain"]
    [recognised] = explained["recognised"]
    assert (
        recognised["matched"]
        == "ptxas fatal   : Value 'sm_121a' is not defined for option 'gpu-name'"
    )
    assert recognised["id"] == "ptxas-unknown-arch"
    # This interpreter has no torch: the check that would judge the cause has nothing to see.
    assert explained["confirmed"] == [] and explained["ruled_out"] == []


# A traceback copied from a coloured terminal on Windows: colour codes around (and inside)
# the error line, CRLF line ends.
COLOURED_TRACEBACK = (
    "Traceback (most recent call last):\r\n"
    '  File "train.py", line 1, in <module>\r\n'
    "    import torch\r\n"
    "\x1b[31mImportError\x1b[0m: \x1b[1mlibcudnn.so.9: \x1b[0mcannot open shared object file: "
    "No such file or directory\x1b[0m\r\n"
)


def test_a_traceback_pasted_with_colours_and_crlf_is_recognised_and_quoted_clean(
    workdir: Path,
) -> None:
    terminal = run_doctor("explain", COLOURED_TRACEBACK, "--no-color", cwd=workdir)
    assert "does not recognise" not in terminal.stdout
    assert "cuDNN 9 cannot be loaded" in terminal.stdout
    assert "[31m" not in terminal.stdout and "[0m" not in terminal.stdout
    assert "\x1b" not in terminal.stdout and "\r" not in terminal.stdout
    explained = run_doctor("explain", COLOURED_TRACEBACK, "--format", "json", cwd=workdir)
    [recognised] = explained.json["explain"]["recognised"]
    assert recognised["matched"] == (
        "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory"
    )


def test_the_explain_ticket_carries_the_pasted_traceback_redacted(
    tmp_path: Path, workdir: Path
) -> None:
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    pasted = (
        "Traceback (most recent call last):\r\n"
        f'  File "{home}/train.py", line 1, in <module>\r\n'
        "    import torch\r\n"
        "\x1b[31mImportError\x1b[0m: libcudnn.so.9: cannot open shared object file\r\n"
        "while installing from https://alice:s3cret@pypi.corp.example/simple\r\n"
    )
    run = run_doctor(
        "explain",
        pasted,
        "--format",
        "markdown",
        cwd=workdir,
        env={"HOME": str(home), "USER": "alice"},
    )
    section = run.stdout.split("### What I ran and what I saw", 1)[1].split("\n### ", 1)[0]
    traceback = section.split("Traceback:", 1)[1]
    assert traceback.strip().splitlines() == [
        "```text",
        "Traceback (most recent call last):",
        '  File "~/train.py", line 1, in <module>',
        "    import torch",
        "ImportError: libcudnn.so.9: cannot open shared object file",
        "while installing from https://<redacted>@pypi.corp.example/simple",
        "```",
    ]
    assert "s3cret" not in run.stdout and str(home) not in run.stdout


def test_empty_error_text_is_a_usage_error(workdir: Path) -> None:
    run = run_doctor("explain", "  ", cwd=workdir)
    assert run.returncode == 2
    assert "give the error text" in run.stderr


def test_pasted_text_is_redacted_in_json_like_the_report(tmp_path: Path, workdir: Path) -> None:
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    error = (
        f"ImportError: {home}/proj/.venv/lib/python3.12/site-packages/torch/lib/"
        "libtorch_cuda.so: undefined symbol: ncclCommRegister"
    )
    run = run_doctor(
        "explain", error, "--format", "json", cwd=workdir, env={"HOME": str(home), "USER": "alice"}
    )
    [recognised] = run.json["explain"]["recognised"]
    assert recognised["matched"].startswith("ImportError: ~/proj/.venv/")
    assert str(home) not in run.stdout


def test_explain_markdown_names_the_failure_then_the_focused_report(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    run = run_doctor(
        "explain",
        "libcudnn.so.9: cannot open shared object file",
        "--python",
        str(env.root),
        "--format",
        "markdown",
        cwd=workdir,
    )
    text = run.stdout
    assert text.startswith("## torch-doctor explain\n")
    assert "**Recognised:** cuDNN 9 cannot be loaded" in text
    assert text.index("**Confirmed here: missing-cuda-wheel") < text.index(
        "## What this environment says"
    )
    assert "#### ❌ error: `missing-cuda-wheel`" in text


def test_explain_agrees_with_check_on_the_verdict_and_the_exit_code(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    # No driver here: check says "1 warning". Explaining an unrelated error must not say
    # "no problems found" while check does not.
    env = make_env()
    env.install_healthy_cu130()
    check = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    explained = run_doctor(
        "explain",
        "AssertionError: Torch not compiled with CUDA enabled",
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
    )
    assert explained.returncode == check.returncode
    report = explained.json["report"]
    assert (report["verdict"], report["summary"]) == (check.json["verdict"], check.json["summary"])
    terminal = run_doctor(
        "explain", "Torch not compiled with CUDA enabled", "--python", str(env.root), cwd=workdir
    )
    assert check.json["summary"] in terminal.stdout
    assert "Not shown, not related to this error: no-nvidia-driver" in terminal.stdout


def test_explain_prints_no_internal_references(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    error = "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory"
    for fmt in ("terminal", "markdown", "json"):
        run = run_doctor("explain", error, "--python", str(env.root), "--format", fmt, cwd=workdir)
        assert "catalogue" not in run.stdout and "reviewed" not in run.stdout, fmt


# --- issue 15: the extension and toolkit findings that explain these errors ----------------


def test_libcudart_12_not_found_is_confirmed_by_an_extension_of_another_cuda_major(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path
) -> None:
    from tests.extension_objects import TORCH_DEFINES, USES_EXPORTED, compile_shared

    # torch's libraries and a CUDA 12 runtime, stand-ins compiled here; the extension
    # links both, as one built with CUDA 12 does.
    lib = tmp_path / "torch-lib"
    compile_shared(TORCH_DEFINES, lib / "libc10.so", soname="libc10.so")
    compile_shared("", lib / "libtorch_cpu.so", soname="libtorch_cpu.so")
    cudart = compile_shared(
        'extern "C" int cudaRuntimeGetVersion(int* v) { *v = 12080; return 0; }\n',
        tmp_path / "cuda12" / "libcudart.so.12",
        soname="libcudart.so.12",
    )
    (lib / "libcudart.so").symlink_to(cudart)
    extension = compile_shared(
        USES_EXPORTED,
        tmp_path / "objects" / "_C.so",
        link_dir=lib,
        libraries=("c10", "torch_cpu", "cudart"),
    )
    env = make_env()
    env.install_healthy_cu130()
    env.install_torch(lib_files={n: lib / n for n in ("libc10.so", "libtorch_cpu.so")})
    env.install("demo-ext", "1.0", files={"demo_ext/_C.so": extension})
    error = (
        "ImportError: libcudart.so.12: cannot open shared object file: No such file or directory"
    )
    run = run_doctor(
        "explain", error, "--python", str(env.root), "--no-load", "--format", "json", cwd=workdir
    )
    explained = run.json["explain"]
    assert [r["id"] for r in explained["recognised"]] == ["cuda-library-not-found"]
    assert explained["confirmed"] == ["extension-cuda-major-mismatch"]
    assert "missing-cuda-wheel" in explained["ruled_out"]


def test_cpp_extension_cuda_mismatch_is_confirmed_by_an_nvcc_of_another_major_on_path(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path
) -> None:
    from tests.test_extensions import NVCC_12_1, NVCC_13_0, build_path, toolkit

    env = make_env()
    env.install_healthy_cu130()
    old = toolkit(tmp_path / "cuda-12.1", NVCC_12_1)
    new = toolkit(tmp_path / "cuda-13.0", NVCC_13_0)
    error = (
        "RuntimeError: The detected CUDA version (12.1) mismatches the version that was used "
        "to compile PyTorch (13.0). Please make sure to use the same CUDA versions."
    )
    args = ("explain", error, "--python", str(env.root), "--no-load", "--format", "json")
    # CUDA_HOME is torch's major; a build that runs `nvcc` from PATH gets CUDA 12.1.
    run = run_doctor(*args, cwd=workdir, env={"PATH": build_path(old, new), "CUDA_HOME": str(new)})
    explained = run.json["explain"]
    assert explained["confirmed"] == ["several-cuda-toolkits"]
    assert explained["ruled_out"] == ["nvcc-cuda-mismatch"]
    # CUDA_HOME itself of another major: the one finding that names it.
    run = run_doctor(*args, cwd=workdir, env={"PATH": build_path(old, new)})
    assert run.json["explain"]["confirmed"] == ["nvcc-cuda-mismatch"]
