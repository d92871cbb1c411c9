"""An emulated ARM64 edge device: Debian 12 (bookworm) aarch64 Python 3.11 with only numpy and
onnxruntime, run on an x86-64 host through QEMU user-mode emulation (`qemu-aarch64-static`).

Why: the SSH runner is meant for small ARM boards (a Raspberry Pi 5 and the like), whose Python
has none of the host's packages and another CPU. Running the device side on such a Python,
reached through a real sshd, checks that what the device runs really runs there: imports that
need only numpy and onnxruntime, aarch64 kernels, fork-only worker processes. It says nothing
about how fast a board is: every instruction is emulated.

The host needs `qemu-aarch64-static` (`apt-get install qemu-user-static`), `dpkg-deb`, pip (for
`pip download` of the aarch64 wheels), and the Debian mirror and PyPI. There is no binfmt_misc
and no chroot: `ROOT/bin/python3` is a shell script that runs
`qemu-aarch64-static -cpu cortex-a76 -L ROOT/rootfs ROOT/rootfs/usr/bin/python3.11 ...`, so it
works wherever the host can exec that script, for example as an SSH profile's `target.python`.

Layout of ROOT:
    cache/      the Debian index, .deb files and wheels (kept; checked by SHA256 on reuse)
    rootfs/     the aarch64 file tree
    bin/python3 the device's Python
    device.json written last: its presence with the same versions means the build is complete

Usage:
    python tests/devices/arm64_device.py /tmp/arm64-device --numpy 2.4.6 --onnxruntime 1.32.0
    /tmp/arm64-device/bin/python3 -c 'import platform, onnxruntime; print(platform.machine())'
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import lzma
import os
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"  # the host's configured mirror (debian.sources)
SUITE = "bookworm"
COMPONENT = "main"
DEB_ARCH = "arm64"

# The Debian packages asked for; everything else in the rootfs is their dependency closure.
# python3.11 brings the interpreter and its stdlib's shared libraries (libc6, libssl3, libffi8,
# ...); libstdc++6 (and libgcc-s1, its dependency) is what the onnxruntime wheel links against.
# numpy's wheel carries its own OpenBLAS and libgfortran, so no BLAS package is needed.
ROOT_PACKAGES = ("python3.11", "libstdc++6")

# Dependencies that only installing packages needs (maintainer scripts, dpkg triggers): with no
# dpkg database and no maintainer scripts run, they are dead weight. A dependency clause that
# names one of these (`debconf | debconf-2.0`) is dropped whole.
SKIPPED_PACKAGES = frozenset({"dpkg", "debconf", "debconf-2.0", "perl-base", "install-info"})

# Pure-Python wheels the device needs besides numpy and onnxruntime (with `--no-deps`):
# see README.md. onnxruntime imports and runs a session without its declared dependencies
# (coloredlogs, flatbuffers, packaging, protobuf, sympy); they serve its tools, not inference.
EXTRA_WHEELS: tuple[str, ...] = ()

WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")

# The emulated CPU: a Raspberry Pi 5's core. Not `max`, which adds SVE/SME: ONNX Runtime then
# picks SVE kernels whose emulation is far slower (INT8 models crawl).
QEMU_CPU = "cortex-a76"
# /proc/cpuinfo for that core, per processor (MIDR 0x414fd0b1; the Features line is what a Pi 5's
# kernel prints). ONNX Runtime's cpuinfo library parses it to learn the core type; given the
# host's x86 /proc/cpuinfo it finds no ARM processor and onnxruntime crashes on import.
CPUINFO_PROCESSOR = """\
processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""

STAMP_FORMAT = 1
PYTHON_IN_ROOTFS = "/usr/bin/python3.11"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"  # where Debian's python3.11 looks

# Run in the guest after a build: the build is only stamped complete when this passes.
SMOKE_TEST = """\
import importlib.util, json, platform, subprocess, sys
import numpy, onnxruntime
leaks = [m for m in ("pydantic", "bfnas", "torch", "onnx") if importlib.util.find_spec(m)]
child = subprocess.run([sys.executable, "-c", "import platform; print(platform.machine())"],
                       capture_output=True, text=True).stdout.strip()
if child != platform.machine():
    leaks.append(f"sys.executable runs a {child or 'broken'} Python")
print(json.dumps({"machine": platform.machine(), "numpy": numpy.__version__,
                  "onnxruntime": onnxruntime.__version__, "leaks": leaks,
                  "prefix": sys.prefix, "path": sys.path}))
"""


class BuildError(Exception):
    """The device could not be built; the message is one line meant for the user."""


def build_arm64_device(
    root: Path,
    numpy_version: str,
    onnxruntime_version: str,
    on_line: Callable[[str], object] = print,
) -> Path:
    """Build (or find already built) the emulated device in `root`; returns its Python wrapper.

    Idempotent: a complete build for the same versions returns at once; an interrupted or
    different one is rebuilt from scratch (reusing verified downloads). Concurrent callers on
    one `root` wait for each other. Raises `BuildError` with a one-line message on failure.
    """
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    wanted = {
        "format": STAMP_FORMAT,
        "numpy": numpy_version,
        "onnxruntime": onnxruntime_version,
        "cpu": QEMU_CPU,
        "roots": list(ROOT_PACKAGES),
        "extra_wheels": list(EXTRA_WHEELS),
    }
    stamp = root / "device.json"
    wrapper = root / "bin" / "python3"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stamp_matches(stamp, wanted) and wrapper.exists():
            return wrapper
        stamp.unlink(missing_ok=True)
        qemu = shutil.which("qemu-aarch64-static")
        if qemu is None:
            raise BuildError(
                "qemu-aarch64-static not found: install it with `apt-get install qemu-user-static`"
            )
        if shutil.which("dpkg-deb") is None:
            raise BuildError("dpkg-deb not found: it extracts the Debian packages")
        rootfs = root / "rootfs"
        cache = root / "cache"
        if rootfs.exists():
            on_line(f"removing the incomplete or outdated {rootfs}")
            shutil.rmtree(rootfs)
        rootfs.mkdir()
        index = _debian_index(cache, on_line)
        names = dependency_closure(index, ROOT_PACKAGES, SKIPPED_PACKAGES)
        on_line(f"{len(names)} Debian packages: {' '.join(sorted(names))}")
        debs = _download_debs(index, names, cache / "debs", on_line)
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(rootfs)], f"extracting {deb.name}")
        wheels = _download_wheels(
            [f"numpy=={numpy_version}", f"onnxruntime=={onnxruntime_version}", *EXTRA_WHEELS],
            cache / "wheels",
            on_line,
        )
        _finish_rootfs(rootfs, wheels)
        _compile_python(rootfs, on_line)
        _write_wrapper(wrapper, qemu, rootfs)
        report = _smoke_test(wrapper)
        if (report["numpy"], report["onnxruntime"]) != (numpy_version, onnxruntime_version):
            raise BuildError(f"the device imports other versions than asked: {report}")
        # A search path missing from the rootfs but present on the host is the host's.
        leaks = report["leaks"] + [
            entry
            for entry in report["path"]
            if entry.startswith("/") and not (rootfs / entry[1:]).exists() and Path(entry).exists()
        ]
        if leaks:
            raise BuildError(f"the device is not sealed from the host: {leaks}")
        wanted["debian_packages"] = {n: index[n]["Version"] for n in names}
        stamp.write_text(json.dumps(wanted, indent=1) + "\n")
        on_line(
            f"device ready: {wrapper} ({report['machine']}, numpy {report['numpy']}, "
            f"onnxruntime {report['onnxruntime']})"
        )
        return wrapper


def dependency_closure(
    index: dict[str, dict[str, str]], roots: Iterable[str], skipped: Iterable[str] = ()
) -> list[str]:
    """The real packages `roots` need, through Pre-Depends and Depends, in discovery order.

    Version constraints are not checked: one suite of one release is consistent. Of `a | b`
    the first real package is taken; a clause naming a skipped package, or only virtual ones
    with no package of that name, is dropped (nothing in this closure needs a virtual one).
    """
    skipped = set(skipped)
    order: list[str] = []
    seen: set[str] = set()
    todo = list(roots)
    for name in todo:
        if name not in index:
            raise BuildError(f"no Debian package {name} in {SUITE}/{COMPONENT} {DEB_ARCH}")
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        order.append(name)
        for field in ("Pre-Depends", "Depends"):
            for clause in index[name].get(field, "").split(","):
                alternatives = [a.split()[0].split(":")[0] for a in clause.split("|") if a.strip()]
                if not alternatives or any(a in skipped for a in alternatives):
                    continue
                real = next((a for a in alternatives if a in index), None)
                if real is not None and real not in seen:
                    todo.append(real)
    return order


def parse_packages(text: str) -> dict[str, dict[str, str]]:
    """A Debian `Packages` index as {package: {field: value}} (continuation lines dropped)."""
    packages: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and line[0] not in " \t":
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            packages[fields["Package"]] = fields
    return packages


def _debian_index(cache: Path, on_line: Callable[[str], object]) -> dict[str, dict[str, str]]:
    """The arm64 index of bookworm main, checked against the suite's InRelease file.

    Fetched on every (re)build so the packages are the mirror's current point release.
    """
    cache.mkdir(parents=True, exist_ok=True)
    dists = f"{MIRROR}/dists/{SUITE}"
    release = _fetch(f"{dists}/InRelease").decode()
    _check_signature(release.encode(), cache)
    relative = f"{COMPONENT}/binary-{DEB_ARCH}/Packages.xz"
    digest = _release_sha256(release, relative)
    on_line(f"downloading {dists}/{relative}")
    data = _fetch(f"{dists}/{relative}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise BuildError(f"{dists}/{relative}: SHA256 differs from the one in InRelease")
    (cache / "Packages.xz").write_bytes(data)
    return parse_packages(lzma.decompress(data).decode())


def _release_sha256(release: str, relative: str) -> str:
    """The SHA256 that a Release file gives for `relative` (a path under the suite)."""
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.startswith("SHA256:")
            continue
        parts = line.split()
        if in_sha256 and len(parts) == 3 and parts[2] == relative:
            return parts[0]
    raise BuildError(f"InRelease of {SUITE} lists no {relative}")


def _check_signature(release: bytes, cache: Path) -> None:
    """Verify InRelease with the host's Debian archive keyring when gpgv and it are there."""
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    gpgv = shutil.which("gpgv")
    if gpgv is None or not keyring.exists():
        return
    path = cache / "InRelease"
    path.write_bytes(release)
    done = subprocess.run(
        [gpgv, "--keyring", str(keyring), str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise BuildError(f"InRelease of {SUITE}: bad signature: {_last_line(done.stderr)}")


def _download_debs(
    index: dict[str, dict[str, str]],
    names: list[str],
    folder: Path,
    on_line: Callable[[str], object],
) -> list[Path]:
    """The .deb files of `names` in `folder`, downloaded unless a copy with the SHA256 is there."""
    folder.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> Path:
        fields = index[name]
        path = folder / Path(fields["Filename"]).name
        if path.exists() and _sha256(path) == fields["SHA256"]:
            return path
        data = _fetch(f"{MIRROR}/{fields['Filename']}")
        if hashlib.sha256(data).hexdigest() != fields["SHA256"]:
            raise BuildError(f"{fields['Filename']}: SHA256 differs from the index")
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)
        return path

    on_line(f"downloading {len(names)} .deb files from {MIRROR}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(one, names))


def _download_wheels(
    requirements: list[str], folder: Path, on_line: Callable[[str], object]
) -> list[Path]:
    """The cp311 aarch64 wheels of `requirements` (no dependencies), through `pip download`."""
    folder.mkdir(parents=True, exist_ok=True)
    on_line(f"pip download (aarch64, cp311): {' '.join(requirements)}")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--no-deps", "--dest", str(folder)]
    command += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    command += ["--abi", "abi3", "--abi", "none"]
    for platform in WHEEL_PLATFORMS:
        command += ["--platform", platform]
    done = subprocess.run(command + requirements, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(
            f"pip download of {' '.join(requirements)} failed: "
            f"{_last_line(done.stderr or done.stdout)}"
        )
    wheels = []
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        prefix = f"{name.replace('-', '_')}-{version}-"
        found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
        if not found:
            raise BuildError(f"pip download left no wheel for {requirement} in {folder}")
        wheels.append(found[-1])
    return wheels


def _finish_rootfs(rootfs: Path, wheels: list[Path]) -> None:
    """Make the extracted tree self-contained under `qemu -L` and install the wheels.

    qemu looks an absolute path up under the rootfs first and falls back to the host's path
    when it is missing there, and the host kernel resolves symlinks: so absolute symlinks are
    made relative (else they would point into the host), every folder Python searches is
    created (else the host's /usr/lib/python3/dist-packages would be imported), and
    /proc/cpuinfo gets an ARM one.
    """
    for link in [p for p in rootfs.rglob("*") if p.is_symlink()]:
        target = os.readlink(link)
        if target.startswith("/"):
            link.unlink()
            link.symlink_to(os.path.relpath(rootfs / target.lstrip("/"), link.parent))
    for folder in (SITE_PACKAGES, "usr/lib/python3/dist-packages", "proc"):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    text = "".join(CPUINFO_PROCESSOR.format(n=n) for n in range(cpus))
    (rootfs / "proc" / "cpuinfo").write_text(text)
    # An empty cache is ignored by the loader, which then searches the default aarch64 library
    # folders; without it the loader would read the host's x86 /etc/ld.so.cache.
    (rootfs / "etc" / "ld.so.cache").write_bytes(b"")
    site = rootfs / SITE_PACKAGES
    for wheel in wheels:
        _install_wheel(wheel, site)


def _compile_python(rootfs: Path, on_line: Callable[[str], object]) -> None:
    """Byte-compile the rootfs' Python files with a host Python 3.11 (same bytecode).

    The guest cannot do it: under `qemu -L` a file that does not exist in the rootfs is
    created at the same path on the host, so its .pyc files would land in the host's
    /usr/lib/python3.11/__pycache__, and where those exist the guest reads the host's. Compiled
    here, every lookup stays in the rootfs; the wrapper sets PYTHONDONTWRITEBYTECODE so the
    guest never writes any. The code objects name the device's paths (/usr/lib/...).
    """
    python = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
    if python is None:
        on_line("no host Python 3.11 to byte-compile the rootfs: imports on the device are slow")
        return
    on_line("byte-compiling the rootfs' Python files")
    code = (
        "import compileall, sys\n"
        "for folder in sys.argv[2:]:\n"
        "    compileall.compile_dir(sys.argv[1] + folder, quiet=2, stripdir=sys.argv[1],"
        " prependdir='/')\n"
    )
    folders = ["/usr/lib/python3.11", "/" + SITE_PACKAGES]
    _run([python, "-I", "-c", code, str(rootfs), *folders], "byte-compiling the rootfs")


def _install_wheel(wheel: Path, site: Path) -> None:
    """Unpack a wheel into `site`: its purelib/platlib data go there too, scripts are dropped."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BuildError(f"cannot unpack {wheel.name}: {exc}") from None
    for data in site.glob("*.data"):
        for scheme in ("purelib", "platlib"):
            if (data / scheme).is_dir():
                shutil.copytree(data / scheme, site, dirs_exist_ok=True)
        shutil.rmtree(data)


def _write_wrapper(wrapper: Path, qemu: str, rootfs: Path) -> None:
    """The device's `python3`: a shell script running the guest Python under qemu.

    `-0 WRAPPER` makes the wrapper the guest's argv[0] and so its `sys.executable`: qemu 7.2
    does not look an exec'ed path up under the rootfs, so with `/usr/bin/python3.11` there a
    child started with `sys.executable` (subprocess, multiprocessing's spawn) would be the
    host's x86 Python with the host's packages; with the wrapper it is another device Python.
    No landmark is found next to the wrapper, so Python falls back to its built-in prefix,
    /usr, which qemu resolves under the rootfs: no PYTHONHOME is needed, and Debian's site
    module adds only the rootfs' dist-packages. The host's Python variables are cleared so
    none of its packages leak in; the dynamic loader variables, so no x86 library is tried.
    """
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "#!/bin/sh",
        f"# Emulated aarch64 Debian {SUITE} Python 3.11 ({QEMU_CPU}); built by "
        "tests/devices/arm64_device.py.",
        "unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE PYTHONEXECUTABLE "
        "VIRTUAL_ENV LD_LIBRARY_PATH LD_PRELOAD",
        "export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1",
        f"exec {shlex.quote(qemu)} -cpu {QEMU_CPU} -L {shlex.quote(str(rootfs))} "
        f'-0 {shlex.quote(str(wrapper))} {shlex.quote(str(rootfs) + PYTHON_IN_ROOTFS)} "$@"',
    ]
    partial = wrapper.with_suffix(".part")
    partial.write_text("\n".join(lines) + "\n")
    partial.chmod(0o755)
    partial.replace(wrapper)


def _smoke_test(wrapper: Path) -> dict:
    """Import numpy and onnxruntime on the device (compiling their .pyc files once)."""
    try:
        done = subprocess.run(
            [str(wrapper), "-c", SMOKE_TEST], capture_output=True, text=True, cwd="/", timeout=600
        )
    except subprocess.TimeoutExpired:
        raise BuildError(
            "the device's Python took over 600 s to import numpy and onnxruntime"
        ) from None
    if done.returncode != 0 or not done.stdout.strip():
        raise BuildError(
            f"the device's Python failed its smoke test (exit {done.returncode}): "
            f"{_last_line(done.stderr)}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BuildError(f"download failed: {url}: {reason}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{what} failed: {_last_line(done.stderr)}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _stamp_matches(stamp: Path, wanted: dict) -> bool:
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(stamp.read_text())
        return all(found.get(key) == value for key, value in wanted.items())
    return False


def _host_versions() -> tuple[str | None, str | None]:
    """numpy and onnxruntime versions of the Python running this script, if it has them."""
    from importlib import metadata

    versions = []
    for name in ("numpy", "onnxruntime"):
        try:
            versions.append(metadata.version(name))
        except metadata.PackageNotFoundError:
            versions.append(None)
    return versions[0], versions[1]


def main(argv: list[str] | None = None) -> int:
    """CLI: build the device in ROOT and print its Python's path."""
    host_numpy, host_ort = _host_versions()
    parser = argparse.ArgumentParser(
        description="Build an emulated ARM64 edge device (Debian 12 aarch64 Python 3.11 with "
        "only numpy and onnxruntime, run through qemu-aarch64-static) and print its python.",
        epilog="example:\n"
        "  python tests/devices/arm64_device.py /tmp/arm64-device --numpy 2.4.6 "
        "--onnxruntime 1.32.0\n"
        "  /tmp/arm64-device/bin/python3 -c "
        "'import onnxruntime, platform; print(platform.machine())'\n\n"
        "The build takes about half a minute and 270 MB (rootfs and download cache); a\n"
        "complete build with the same versions is reused at once. Prints the device's python.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="folder to build in (reused when complete)")
    parser.add_argument(
        "--numpy", default=host_numpy, help=f"numpy version (default: this Python's, {host_numpy})"
    )
    parser.add_argument(
        "--onnxruntime",
        default=host_ort,
        help=f"onnxruntime version (default: this Python's, {host_ort})",
    )
    args = parser.parse_args(argv)
    if not args.numpy or not args.onnxruntime:
        parser.error("this Python has no numpy or onnxruntime: give --numpy and --onnxruntime")
    try:
        wrapper = build_arm64_device(
            args.root, args.numpy, args.onnxruntime, on_line=lambda s: print(s, file=sys.stderr)
        )
    except BuildError as exc:
        print(f"arm64 device: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("arm64 device: interrupted (the next run rebuilds)", file=sys.stderr)
        return 130
    print(wrapper)
    return 0


if __name__ == "__main__":
    sys.exit(main())
