"""The part of the probe that runs inside the inspected interpreter.

Standard library only, and no imports of anything installed in the target: this
script must work in an environment where torch, or torch-doctor's own
dependencies, are absent or broken. It is run as ``python -B -c <source>`` and
prints one JSON object on stdout. It reads files and never writes any.

Keep it compatible with old interpreters (no walrus, no match, no PEP 604).
"""

import ast
import csv
import io
import json
import os
import platform
import stat
import sys
import sysconfig

PROBE_VERSION = 1

# Distributions whose files are checked against their RECORD (besides everything torch
# and cuda-toolkit require): the torch family and the CUDA wheels. Stdlib only, so not
# read from doctor/knowledge/torch_family.toml: tests/test_registry.py checks that these
# prefixes cover every member listed there.
FAMILY_PREFIXES = ("nvidia-", "cuda-", "torch", "triton", "pytorch-triton")

# Environment variables that decide how torch, the loader and uv behave (facts.md §11).
ENVIRONMENT_VARIABLES = (
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDA_MODULE_LOADING",
    "CUDA_FORCE_PTX_JIT",
    "CUDA_CACHE_PATH",
    "TORCH_CUDA_ARCH_LIST",
    "TORCH_USE_RTLD_GLOBAL",
    "TRITON_PTXAS_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "UV_TORCH_BACKEND",
    "UV_CUDA_DRIVER_VERSION",
    "UV_INDEX_STRATEGY",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_PROJECT_ENVIRONMENT",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
)

# Every variable of these families is collected too: what maintainers' bug templates ask
# for (secret-looking values are redacted before a report is shared).
ENVIRONMENT_PREFIXES = ("TORCH", "PYTORCH", "CUDA", "NCCL", "UV_", "LD_")

MAX_MISSING_LISTED = 20


def normalise(name):
    out = []
    previous_sep = False
    for ch in name.lower():
        if ch in "-_.":
            if not previous_sep:
                out.append("-")
            previous_sep = True
        else:
            out.append(ch)
            previous_sep = False
    return "".join(out)


def requirement_name(requirement):
    # Only the leading PEP 508 name; markers and specifiers are left to `packaging`
    # in the doctor's own process.
    name = []
    for ch in requirement.strip():
        if ch.isalnum() or ch in "-_.":
            name.append(ch)
        else:
            break
    return normalise("".join(name))


def marker_environment():
    # The same keys as packaging.markers.default_environment().
    implementation = sys.implementation
    info = implementation.version
    impl_version = "{0.major}.{0.minor}.{0.micro}".format(info)
    if info.releaselevel != "final":
        impl_version += info.releaselevel[0] + str(info.serial)
    return {
        "implementation_name": implementation.name,
        "implementation_version": impl_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def interpreter_facts():
    paths = sysconfig.get_paths()
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "is_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
        "purelib": paths.get("purelib", ""),
        "platlib": paths.get("platlib", ""),
        "sys_path": [p for p in sys.path if p],
        "marker_environment": marker_environment(),
        "conda": os.path.isdir(os.path.join(sys.prefix, "conda-meta")),
        "venv_creator": venv_creator(),
    }


def venv_creator():
    """Who made the venv, from the keys pyvenv.cfg carries (uv = ..., virtualenv = ...)."""
    try:
        text = read_text(os.path.join(sys.prefix, "pyvenv.cfg"), "pyvenv.cfg")
        keys = [line.split("=", 1)[0].strip() for line in text.splitlines()]
    except (OSError, ValueError):
        return None
    for key in ("uv", "virtualenv"):
        if key in keys:
            return key
    return "venv"


def platform_facts():
    libc = None
    libc_version = None
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
        if value:
            libc, libc_version = value.split(" ", 1)
    except (AttributeError, ValueError, OSError):
        try:
            libc, libc_version = platform.libc_ver()
        except Exception:  # noqa: BLE001 - a fact we can live without
            pass
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "release": platform.release(),
        "libc": libc or None,
        "libc_version": libc_version or None,
    }


# Bytes read at most per kind of file (a hostile or damaged venv may hold /dev/zero or a
# FIFO where METADATA should be): far above any real one. The doctor reports a cap's hit.
FILE_CAPS = {
    "METADATA": 8 * 1024 * 1024,  # its headers; the long description after them is not read
    "RECORD": 64 * 1024 * 1024,
    "WHEEL": 1024 * 1024,
    "INSTALLER": 4096,
    "version.py": 1024 * 1024,
    "pyvenv.cfg": 65536,
}
# Requires-Dist entries read per distribution (torch lists ~30).
MAX_REQUIREMENTS = 2000


def open_regular(path):
    """A descriptor of ``path`` if it is a regular file (a symlink to one is fine); opened
    with O_NONBLOCK so a FIFO swapped in after the check cannot block the probe."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError("{} is not a regular file".format(os.path.basename(path)))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError("{} is not a regular file".format(os.path.basename(path)))
    return fd


def read_bytes(path, kind, until=None):
    """At most FILE_CAPS[kind] bytes of a regular file; with ``until``, stop reading once
    that marker has been read. OSError if it is larger than the cap (and has no marker)."""
    cap = FILE_CAPS[kind]
    fd = open_regular(path)
    try:
        chunks = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if until is not None and until in chunk:
                return b"".join(chunks)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if until is not None and until in data:
        return data
    raise OSError("{} is larger than the {} MiB read of it".format(kind, cap // (1024 * 1024)))


def read_text(path, kind):
    return read_bytes(path, kind).decode("utf-8", "replace")


def metadata_dirs():
    """(sys.path entry, .dist-info directory) in sys.path order."""
    seen_entries = set()
    for entry in sys.path:
        if not entry:
            entry = os.getcwd()
        real = os.path.realpath(entry)
        if real in seen_entries or not os.path.isdir(entry):
            continue
        seen_entries.add(real)
        try:
            names = sorted(os.listdir(entry))
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                yield entry, os.path.join(entry, name)


def read_headers(path):
    """The RFC 822 style header block of METADATA or WHEEL: {lowercase name: [values]}.

    A small reader instead of the email package: it is the probe's hottest path (one call
    per installed distribution) and email costs ~20 ms to import and ~1 ms per file.
    """
    headers = {}
    last = None
    text = read_bytes(path, os.path.basename(path), until=b"\n\n").decode("utf-8", "replace")
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            break  # the body (the long description) follows
        if line[0] in " \t":
            if last is not None:  # a folded value continues
                values = headers[last]
                values[-1] = (values[-1] + " " + line.strip()).strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            last = None
            continue
        last = name.strip().lower()
        headers.setdefault(last, []).append(value.strip())
    return headers


def first(headers, name):
    values = headers.get(name)
    return values[0] if values else None


def read_distribution(location, metadata_dir):
    dist = {
        "location": location,
        "metadata_dir": metadata_dir,
        "installer": None,
        "requires_dist": [],
        "provides_extra": [],
        "requires_python": None,
        "wheel_tags": [],
        "error": None,
    }
    stem = os.path.basename(metadata_dir)[: -len(".dist-info")]
    dir_name, _, dir_version = stem.partition("-")
    dist["display_name"] = dir_name
    dist["version"] = dir_version
    metadata_path = os.path.join(metadata_dir, "METADATA")
    try:
        headers = read_headers(metadata_path)
        dist["display_name"] = first(headers, "name") or dir_name
        dist["version"] = first(headers, "version") or dir_version
        requirements = headers.get("requires-dist", [])
        dist["requires_dist"] = requirements[:MAX_REQUIREMENTS]
        if len(requirements) > MAX_REQUIREMENTS:
            dist["error"] = "METADATA lists {} Requires-Dist entries; {} were read".format(
                len(requirements), MAX_REQUIREMENTS
            )
        dist["provides_extra"] = headers.get("provides-extra", [])
        dist["requires_python"] = first(headers, "requires-python") or None
        if not first(headers, "name"):
            dist["error"] = "METADATA has no Name field"
    except OSError as exc:
        dist["error"] = "cannot read METADATA: {}".format(exc.strerror or exc)
    except Exception as exc:  # noqa: BLE001 - corrupt metadata is a fact, not a crash
        dist["error"] = "cannot parse METADATA: {}".format(exc)
    dist["name"] = normalise(dist["display_name"])
    return dist


def read_install_details(dist):
    """INSTALLER and WHEEL's tags: read only for the distributions a report names (two
    more files per distribution are most of the cost of a venv of thousands)."""
    metadata_dir = dist["metadata_dir"]
    try:
        dist["installer"] = (
            read_text(os.path.join(metadata_dir, "INSTALLER"), "INSTALLER").strip() or None
        )
    except OSError:
        pass
    try:
        dist["wheel_tags"] = read_headers(os.path.join(metadata_dir, "WHEEL")).get("tag", [])
    except Exception:  # noqa: BLE001 - optional
        pass


def record_names(text):
    """The first field (the file) of every RECORD row."""
    if '"' in text or "\r" in text:
        return [row[0] for row in csv.reader(io.StringIO(text, newline="")) if row]
    # No quoting: a row's file runs to its first comma (csv would say the same, 10x slower).
    return [line.split(",", 1)[0] for line in text.split("\n")]


def check_record(dist, shared_libraries=False):
    """Whether the files listed in RECORD exist (one listdir per directory).

    With ``shared_libraries``, also the real paths of the shared libraries it lists (the
    doctor's library probe names each library's owner from them).
    """
    record_path = os.path.join(dist["metadata_dir"], "RECORD")
    location = dist["location"]
    try:
        # RECORD is UTF-8 CSV (the wheel spec); anything else is damage, not a file list.
        text = read_bytes(record_path, "RECORD").decode("utf-8")
        if "\x00" in text:
            raise ValueError("it contains NUL bytes")
        names = record_names(text)
    except UnicodeDecodeError:
        return {
            "present": True,
            "files": 0,
            "missing_count": 0,
            "missing": [],
            "error": "cannot parse RECORD: not UTF-8 text",
        }
    except OSError as exc:
        if not os.path.exists(record_path):
            return {"present": False, "files": 0, "missing_count": 0, "missing": [], "error": None}
        return {
            "present": False,
            "files": 0,
            "missing_count": 0,
            "missing": [],
            "error": "cannot read RECORD: {}".format(exc.strerror or exc),
        }
    except Exception as exc:  # noqa: BLE001 - corrupt RECORD
        return {
            "present": True,
            "files": 0,
            "missing_count": 0,
            "missing": [],
            "error": "cannot parse RECORD: {}".format(exc),
        }
    # One listdir per directory, and no path arithmetic for the usual row (torch lists
    # ~15,000 files): group rows by their directory as written; only rows that climb out
    # ("../../bin/x") or are absolute are normalised.
    listings = {}
    missing = []
    libraries = []
    files = 0
    for relative in names:
        if not relative:
            continue
        if relative.endswith(".pyc") or "__pycache__" in relative:
            continue  # written on first import, absent in fresh installs
        files += 1
        if ".." in relative or relative.startswith("/") or "\\" in relative:
            path = os.path.normpath(os.path.join(location, relative))
            directory, base = os.path.split(path)
        else:
            directory, _, base = relative.rpartition("/")
            directory = location + "/" + directory if directory else location
        present = listings.get(directory)
        if present is None:
            try:
                present = set(os.listdir(directory))
            except OSError:
                present = set()
            listings[directory] = present
        if base not in present:
            missing.append(relative)
        elif shared_libraries and ".so" in base:
            libraries.append(os.path.realpath(os.path.join(directory, base)))
    record = {
        "present": True,
        "files": files,
        "missing_count": len(missing),
        "missing": missing[:MAX_MISSING_LISTED],
        "error": None,
    }
    if shared_libraries:
        record["shared_libraries"] = libraries
    return record


def find_torch_dir():
    # The torch package that `import torch` would pick: the first sys.path entry with it.
    for entry in sys.path:
        candidate = os.path.join(entry or os.getcwd(), "torch")
        if os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None


def torch_build():
    package_dir = find_torch_dir()
    if package_dir is None:
        return None
    build = {"package_dir": package_dir, "error": None, "lib_files": []}
    try:
        build["lib_files"] = sorted(os.listdir(os.path.join(package_dir, "lib")))
    except OSError:
        pass
    version_path = os.path.join(package_dir, "version.py")
    try:
        tree = ast.parse(read_text(version_path, "version.py"), version_path)
    except OSError as exc:
        build["error"] = "cannot read torch/version.py: {}".format(exc.strerror or exc)
        return build
    except SyntaxError as exc:
        build["error"] = "cannot parse torch/version.py: {}".format(exc)
        return build
    values = {}
    for node in tree.body:
        targets = []
        value = None
        if isinstance(node, ast.Assign):
            targets = node.targets
            value = node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
            value = node.value
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
    for key, out in (
        ("__version__", "version"),
        ("cuda", "cuda"),
        ("hip", "hip"),
        ("git_version", "git_version"),
        ("debug", "debug"),
    ):
        value = values.get(key)
        if value is None or isinstance(value, (str, bool)):
            build[out] = value
    if not build.get("version"):
        build["error"] = "torch/version.py defines no __version__"
    return build


def main():
    # Run as `python -c`, sys.path[0] is '' (the working directory): an artifact of how
    # the doctor starts this probe, not part of the environment being inspected.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    errors = []
    distributions = []
    for location, metadata_dir in metadata_dirs():
        try:
            distributions.append(read_distribution(location, metadata_dir))
        except Exception as exc:  # noqa: BLE001 - one bad dist never stops the probe
            errors.append({"probe": "distributions", "reason": "{}: {}".format(metadata_dir, exc)})

    seen = set()
    for dist in distributions:
        dist["shadowed"] = dist["name"] in seen
        seen.add(dist["name"])

    wanted = set()
    for dist in distributions:
        if dist["name"] in ("torch", "cuda-toolkit") and not dist["shadowed"]:
            wanted.update(requirement_name(r) for r in dist["requires_dist"])
    real_locations = {}
    for dist in distributions:
        if dist["name"].startswith(FAMILY_PREFIXES) or dist["name"] in wanted:
            read_install_details(dist)
            location = dist["location"]
            if location not in real_locations:
                real_locations[location] = os.path.realpath(location)
            dist["real_location"] = real_locations[location]
            try:
                family = dist["name"].startswith(FAMILY_PREFIXES) and not dist["shadowed"]
                dist["record"] = check_record(dist, shared_libraries=family)
            except Exception as exc:  # noqa: BLE001
                dist["record"] = {
                    "present": False,
                    "files": 0,
                    "missing_count": 0,
                    "missing": [],
                    "error": str(exc),
                }
        else:
            dist["record"] = None

    try:
        torch = torch_build()
    except Exception as exc:  # noqa: BLE001
        torch = None
        errors.append({"probe": "torch-build", "reason": str(exc)})

    result = {
        "probe_version": PROBE_VERSION,
        "interpreter": interpreter_facts(),
        "platform": platform_facts(),
        "environment": {
            k: v
            for k, v in sorted(os.environ.items())
            if k in ENVIRONMENT_VARIABLES
            or (k.startswith(ENVIRONMENT_PREFIXES) and not k.startswith("TORCH_DOCTOR_"))
        },
        "distributions": distributions,
        "torch": torch,
        "errors": errors,
    }
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
