"""The ELF reader and the loader model, against libraries compiled here."""

from __future__ import annotations

from pathlib import Path

import pytest

from doctor.probe.elf import LoaderModel, ld_so_cache, read_dynamic
from doctor.probe.libraries import torch_preload_flow
from tests.elf_fixtures import OLD_TORCH_INIT, ElfBuilder, StandIn, compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs a C compiler")


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> ElfBuilder:
    return ElfBuilder(tmp_path_factory.mktemp("elf"))


def _copy(library: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / library.name
    target.write_bytes(library.read_bytes())
    return target


def test_dynamic_section_gives_soname_needed_rpath_and_runpath(builder: ElfBuilder) -> None:
    dep = builder.build(StandIn("libdep.so.3"))
    with_rpath = builder.build(StandIn("libr.so.1", needed=(dep,), search=("$ORIGIN/a", "/x")))
    with_runpath = builder.build(
        StandIn("libu.so.2", needed=(dep,), search=("$ORIGIN",), runpath=True)
    )
    r = read_dynamic(str(with_rpath))
    assert (r.soname, r.needed[0], r.rpath, r.runpath) == (
        "libr.so.1",
        "libdep.so.3",
        ("$ORIGIN/a", "/x"),
        (),
    )
    u = read_dynamic(str(with_runpath))
    assert (u.soname, u.rpath, u.runpath) == ("libu.so.2", (), ("$ORIGIN",))
    assert "libc.so.6" in u.needed


def test_a_file_that_is_not_elf_is_an_error_not_an_exception(tmp_path: Path) -> None:
    bogus = tmp_path / "libtorch_cuda.so"
    bogus.write_bytes(b"\x7fELF stand-in")
    assert read_dynamic(str(bogus)).error is not None
    assert read_dynamic(str(tmp_path / "absent.so")).error is not None


def test_rpath_beats_ld_library_path_but_runpath_does_not(
    builder: ElfBuilder, tmp_path: Path
) -> None:
    dep = builder.build(StandIn("libdep.so.7"))
    wheel = _copy(dep, tmp_path / "wheel")
    system = _copy(dep, tmp_path / "system")
    rpath = _copy(
        builder.build(StandIn("librp.so", needed=(dep,), search=("$ORIGIN/wheel",))), tmp_path
    )
    runpath = _copy(
        builder.build(StandIn("librun.so", needed=(dep,), search=("$ORIGIN/wheel",), runpath=True)),
        tmp_path,
    )
    loader = LoaderModel(ld_library_path=[str(tmp_path / "system")], cache={})
    first = loader.search("libdep.so.7", [read_dynamic(str(rpath))])
    assert (first.how, first.path, first.entry) == ("RPATH", str(wheel), "$ORIGIN/wheel")
    second = loader.search("libdep.so.7", [read_dynamic(str(runpath))])
    assert (second.how, second.path) == ("LD_LIBRARY_PATH", str(system))
    assert second.expected_path == str(wheel)  # where the RUNPATH would have found it


def test_rpath_is_inherited_down_the_chain_unless_the_object_has_runpath(
    builder: ElfBuilder, tmp_path: Path
) -> None:
    dep = builder.build(StandIn("libleaf.so.1"))
    _copy(dep, tmp_path / "deps")
    root = read_dynamic(
        str(_copy(builder.build(StandIn("libroot.so", search=("$ORIGIN/deps",))), tmp_path))
    )
    plain = read_dynamic(str(_copy(builder.build(StandIn("libplain.so")), tmp_path / "mid")))
    own_runpath = read_dynamic(
        str(
            _copy(
                builder.build(StandIn("libown.so", search=("/nowhere",), runpath=True)),
                tmp_path / "mid",
            )
        )
    )
    loader = LoaderModel(cache={}, defaults=("/nonexistent",))
    inherited = loader.search("libleaf.so.1", [root, plain])
    assert inherited.how == "RPATH" and inherited.entry_from == root.path
    assert loader.search("libleaf.so.1", [root, own_runpath]).how == "not found"


def test_ld_preload_wins_over_everything(builder: ElfBuilder, tmp_path: Path) -> None:
    dep = builder.build(StandIn("libdep.so.9"))
    preloaded = _copy(dep, tmp_path / "preload")
    obj = read_dynamic(str(_copy(builder.build(StandIn("libo.so", search=("$ORIGIN",))), tmp_path)))
    _copy(dep, tmp_path)
    loader = LoaderModel(ld_preload={"libdep.so.9": str(preloaded)}, cache={})
    found = loader.search("libdep.so.9", [obj])
    assert (found.how, found.path) == ("LD_PRELOAD", str(preloaded))


def test_ld_so_cache_is_read_from_the_system_file() -> None:
    cache = ld_so_cache()
    if not Path("/etc/ld.so.cache").exists():
        pytest.skip("no /etc/ld.so.cache here")
    assert Path(cache["libc.so.6"]).exists()


def test_preload_flow_is_read_from_the_installed_torch_init(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text(OLD_TORCH_INIT)
    old = torch_preload_flow(str(tmp_path))
    assert old.after_success is False
    assert old.libraries[2] == ("cusparse", "libcusparse.so.*[0-9]")
    (tmp_path / "__init__.py").write_text("raise ImportError\n")
    default = torch_preload_flow(str(tmp_path))
    assert default.after_success is True
    assert ("nvjitlink", "libnvJitLink.so.*[0-9]") in default.libraries


def test_a_soname_only_the_system_cache_knows_resolves_through_it(
    builder: ElfBuilder, tmp_path: Path
) -> None:
    system = _copy(builder.build(StandIn("libcudart.so.12")), tmp_path / "usr-local-cuda")
    obj = read_dynamic(
        str(_copy(builder.build(StandIn("libneeds.so", search=("$ORIGIN/x",))), tmp_path))
    )
    loader = LoaderModel(cache={"libcudart.so.12": str(system)}, defaults=("/nonexistent",))
    found = loader.search("libcudart.so.12", [obj])
    assert (found.how, found.path, found.expected_path) == ("ld.so.cache", str(system), None)
