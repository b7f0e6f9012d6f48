"""Builds what cosim runs: QEMU with the bridge device, the guest kernel, modules and initramfs.

Every artifact lives under the cache (``~/.cache/cosim`` or ``$COSIM_CACHE``) in a folder named by
a hash of its inputs, so a changed input rebuilds exactly what depends on it and a warm cache costs
nothing.  QEMU's build tree is keyed by upstream source and configuration only: cosim's own files
and patches go in at each build (patched files are restored from pristine copies first), so
editing them recompiles only what they touch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from . import debian

REPO = Path(__file__).resolve().parent.parent
QEMU_DIR = Path(__file__).resolve().parent / "engines" / "qemu"
GUEST_DIR = REPO / "guest"
CACHE_MODEL_DIR = Path(__file__).resolve().parent / "cachemodel"
# cosim's files in QEMU's tree, and the meson lines that build them
QEMU_FILES = {
    "hw/misc/cosim-bridge.c": QEMU_DIR / "cosim-bridge.c",
    "hw/misc/cosim-cache.c": QEMU_DIR / "cosim-cache.c",
    "hw/misc/cosim-cachemodel/model.c": CACHE_MODEL_DIR / "model.c",
    "hw/misc/cosim-cachemodel/model.h": CACHE_MODEL_DIR / "model.h",
}
QEMU_MESON = ("hw/misc/meson.build",
              "\n# cosim\nsystem_ss.add(files('cosim-bridge.c'))\n"
              "specific_ss.add(files('cosim-cache.c', 'cosim-cachemodel/model.c'))\n")
QEMU_PATCHES = tuple(sorted((QEMU_DIR / "patches").glob("*.patch")))
PRISTINE = ".cosim-pristine"

QEMU_UPSTREAM_VERSION = "10.0.2"
QEMU_CONFIGURE = (
    "--target-list=aarch64-softmmu",
    "--without-default-features",
    "--enable-fdt=system",
    "--enable-plugins",
    "--enable-tcg",
    "--disable-docs",
    "--disable-werror",
    "--disable-install-blobs",
    "--enable-attr",  # glibc's xattr calls: virtio-9p needs them, not libattr
    "--enable-virtfs",  # virtio-9p: a host folder shared into the guest read-write
    "--python=/usr/bin/python3",  # a pyenv shim on PATH breaks configure's own detection
)
# Names what prepare_qemu_tree changes in QEMU's source; change it when that code changes.
QEMU_TREE_PATCHES = "edk2-blobs-off;v2"
KERNEL_PACKAGE = "linux-source-6.12"
CROSS = "aarch64-linux-gnu-"
KMAKE = ("make", "ARCH=arm64", f"CROSS_COMPILE={CROSS}")

console = Console(stderr=True)


class BuildError(RuntimeError):
    pass


def cache_root() -> Path:
    root = Path(os.environ.get("COSIM_CACHE", Path.home() / ".cache" / "cosim"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest(parts: Iterable[str | bytes | Path]) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(str(part.relative_to(REPO)).encode() if part.is_relative_to(REPO) else b"")
            h.update(part.read_bytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def run(step: str, cmd: Sequence[str | Path], log: Path, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> None:
    """Runs one build step, its output into ``log``, showing its last line as progress."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, Status(f"[bold]{step}[/]", console=console) as status:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n".encode())
        out.flush()
        proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            text = line.decode(errors="replace").strip()
            if text:
                status.update(f"[bold]{step}[/] [dim]{escape(text[:100])}[/]")
        if proc.wait() != 0:
            out.flush()  # the tail below is this step's output, not what was there before
            tail = log.read_text(errors="replace").splitlines()[-25:]
            raise BuildError(f"{step} failed (exit {proc.returncode}); log: {log}\n" + "\n".join(tail))
    console.print(f"[green]✓[/] {step}")


def apt_source_version(package: str, upstream: str) -> str:
    out = subprocess.run(["apt-cache", "showsrc", package], capture_output=True, text=True).stdout
    versions = re.findall(r"^Version: (\S+)$", out, re.M)
    for version in versions:
        if version.split(":")[-1].startswith(upstream + "+"):
            return version
    raise BuildError(f"apt has no source of {package} {upstream} (saw {versions or 'none'}): "
                     "run scripts/setup-host.sh, which adds bookworm-backports' deb-src entry")


# --- QEMU ---------------------------------------------------------------------------------------

def qemu_tree_key() -> str:
    return digest([QEMU_UPSTREAM_VERSION, *QEMU_CONFIGURE, QEMU_TREE_PATCHES])


def qemu_key() -> str:
    return digest([qemu_tree_key(), *QEMU_FILES, *QEMU_FILES.values(), *QEMU_MESON,
                   *QEMU_PATCHES])


def qemu_binary_path() -> Path:
    return cache_root() / f"qemu-{qemu_key()}" / "qemu-system-aarch64"


def fetch_qemu_tarball(logs: Path) -> Path:
    downloads = cache_root() / "downloads"
    downloads.mkdir(exist_ok=True)
    found = sorted(downloads.glob(f"qemu_{QEMU_UPSTREAM_VERSION}+*.orig.tar.*"))
    if found:
        return found[-1]
    version = apt_source_version("qemu", QEMU_UPSTREAM_VERSION)
    # Only the upstream tarball is needed; Debian's packaging files may be missing on the mirror,
    # so apt-get's exit status is judged by whether the tarball arrived.
    subprocess.run(["apt-get", "source", "--download-only", f"qemu={version}"], cwd=downloads,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found = sorted(downloads.glob(f"qemu_{QEMU_UPSTREAM_VERSION}+*.orig.tar.*"))
    if not found:
        raise BuildError(f"`apt-get source --download-only qemu={version}` fetched no tarball")
    return found[-1]


def prepare_qemu_tree(tree: Path, logs: Path) -> Path:
    src = tree / "src"
    if (tree / ".configured").exists():
        return src
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    tarball = fetch_qemu_tarball(logs)
    run("unpack QEMU source", ["tar", "xf", tarball, "-C", tree], logs / "qemu.log")
    (tree / f"qemu-{QEMU_UPSTREAM_VERSION}").rename(src)
    # Debian's +ds tarball drops the edk2 firmware blobs: never try to unpack them.
    meson = src / "meson.build"
    meson.write_text(meson.read_text().replace("unpack_edk2_blobs = bzip2.found()",
                                               "unpack_edk2_blobs = false"))
    run("configure QEMU", ["./configure", *QEMU_CONFIGURE], logs / "qemu.log", cwd=src)
    (tree / ".configured").touch()
    return src


def patched_files(patch: Path) -> dict[str, bool]:
    """The files a patch touches (``-p1`` paths), each with whether the patch creates it."""
    files: dict[str, bool] = {}
    lines = patch.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("+++ "):
            name = line.split()[1].split("/", 1)[1]
            files[name] = i + 1 < len(lines) and lines[i + 1].startswith("@@ -0,0 ")
    return files


def put_cosim_into_qemu(src: Path, logs: Path) -> None:
    """cosim's files, meson lines and patches go over upstream's files (kept as pristine copies
    at the first build); only files whose content changes are written, so ninja rebuilds only
    what changed."""
    touched = {QEMU_MESON[0]: False}
    for patch in QEMU_PATCHES:
        touched |= patched_files(patch)
    wanted = dict(QEMU_FILES)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        for name, created in touched.items():
            if created:
                continue  # upstream has no such file: the patch makes it in the scratch tree
            target, pristine = src / name, src / (name + PRISTINE)
            if not pristine.exists():
                shutil.copy2(target, pristine)
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(pristine, scratch / name)
        with (scratch / QEMU_MESON[0]).open("a") as f:
            f.write(QEMU_MESON[1])
        for patch in QEMU_PATCHES:
            run(f"apply {patch.name}", ["patch", "-p1", "--no-backup-if-mismatch", "-i", patch],
                logs / "qemu.log", cwd=scratch)
        wanted |= {name: scratch / name for name in touched}
        for name, source in wanted.items():
            target = src / name
            if not target.exists() or target.read_bytes() != source.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)


def build_qemu(logs: Path) -> Path:
    binary = qemu_binary_path()
    if binary.exists():
        return binary
    src = prepare_qemu_tree(cache_root() / f"qemu-tree-{qemu_tree_key()}", logs)
    put_cosim_into_qemu(src, logs)
    run("build QEMU (first build ~15 min)", ["ninja", "-C", src / "build", "qemu-system-aarch64"],
        logs / "qemu.log")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".{os.getpid()}.tmp")  # a concurrent build's copy is its own
    shutil.copy(src / "build" / "qemu-system-aarch64", tmp)
    tmp.rename(binary)
    return binary


# --- kernel ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelArtifacts:
    image: Path
    tree: Path  # configured and built source tree, for building out-of-tree modules
    modules: Path  # INSTALL_MOD_PATH: holds lib/modules/<release>
    release: str


def package_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                         text=True)
    if out.returncode != 0 or not out.stdout:
        raise BuildError(f"{package} is not installed: run scripts/setup-host.sh")
    return out.stdout


def config_fragment_options(fragment: Path) -> dict[str, str]:
    return config_fragment_options_text(fragment.read_text())


def config_fragment_options_text(text: str) -> dict[str, str]:
    options = {}
    for line in text.splitlines():
        if m := re.match(r"^(CONFIG_\w+)=(.*)$", line.strip()):
            options[m[1]] = m[2]
        elif m := re.match(r"^# (CONFIG_\w+) is not set$", line.strip()):
            options[m[1]] = "n"
    return options


def option_purposes(fragment: Path) -> dict[str, str]:
    """What each option of cosim's fragment is for: the first comment line of its paragraph."""
    purposes: dict[str, str] = {}
    heading: str | None = None  # a paragraph's first comment line
    for line in fragment.read_text().splitlines():
        if not line.strip():
            heading = None
        elif m := re.match(r"^(CONFIG_\w+)=", line):
            purposes[m[1]] = heading or ""
        elif line.startswith("# ") and heading is None:
            heading = line[2:]
    return purposes


def kconfig_symbols(tree: Path) -> set[str]:
    """Every option a source tree's Kconfig files define."""
    symbols = set()
    for path in tree.rglob("Kconfig*"):
        for m in re.finditer(r"^\s*(?:menu)?config\s+(\w+)\s*$", path.read_text(errors="replace"), re.M):
            symbols.add("CONFIG_" + m[1])
    return symbols


def check_config(tree: Path, wanted: list[tuple[Path | str, dict[str, str]]],
                 purposes: dict[str, str]) -> None:
    """Every option asked for landed in ``.config``; the error names each one that did not, who
    asked for it, and why: unknown to this tree, or lost to unmet dependencies."""
    have = config_fragment_options(tree / ".config")
    lost = [(origin, k, v) for origin, options in wanted for k, v in options.items()
            if have.get(k, "n") != v]
    if not lost:
        return
    known = kconfig_symbols(tree)
    lines = []
    for origin, option, value in lost:
        why = ("this tree has no such option" if option not in known
               else f"got {have.get(option, 'n')}: a dependency is not met")
        purpose = f"; cosim needs it for: {purposes[option]}" if origin == "cosim" else ""
        lines.append(f"  {option}={value} ({origin}): {why}{purpose}")
    raise BuildError("kernel options did not take after configuring:\n" + "\n".join(lines))


@dataclass(frozen=True)
class KernelChanges:
    """A user's changes to the guest kernel (a platform's ``guest.kernel``)."""

    options: tuple[str, ...] = ()  # CONFIG_NAME=value
    fragments: tuple[Path, ...] = ()
    patches: tuple[Path, ...] = ()
    source: Path | None = None  # a kernel source tree in place of Debian's linux-source

    def key_parts(self) -> list[str | bytes | Path]:
        parts: list[str | bytes | Path] = [*self.options, *self.fragments, *self.patches]
        if self.source is not None:
            parts += [str(self.source), tree_state(self.source)]
        return parts


def tree_state(tree: Path) -> str:
    """A cheap stand-in for a whole tree's content: every file's path, size and mtime (an edit
    changes it; hashing a kernel tree's 1.5 GB would cost seconds on every boot)."""
    h = hashlib.sha256()
    for folder, dirs, names in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(names):
            st = os.lstat(os.path.join(folder, name))
            h.update(f"{os.path.join(folder, name)}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


KERNEL_PATCHES_DIR = GUEST_DIR / "kernel" / "patches"


def kernel_patches() -> tuple[Path, ...]:
    """cosim's own kernel patches (fixes of upstream bugs cosim found), applied in name order."""
    return tuple(sorted(KERNEL_PATCHES_DIR.glob("*.patch")))


def apply_patches(tree: Path, patches: Sequence[Path], log: Path) -> None:
    for patch in patches:
        proc = subprocess.run(["patch", "-p1", "--batch", "--forward", "-i", str(patch)], cwd=tree,
                              capture_output=True, text=True)
        with log.open("a") as f:
            f.write(f"\n$ patch -p1 < {patch}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise BuildError(f"kernel patch {patch} does not apply to {KERNEL_PACKAGE}:\n"
                             + (proc.stdout + proc.stderr).strip())
        console.print(f"[green]✓[/] kernel patch {patch.name}")


COSIM_FRAGMENT = GUEST_DIR / "kernel" / "cosim.config"


def build_kernel(logs: Path, patches: Sequence[Path] | None = None,
                 changes: KernelChanges = KernelChanges()) -> KernelArtifacts:
    """The guest kernel from Debian's source (or ``changes.source``) with cosim's config fragment
    and ``patches`` (default: cosim's own, ``guest/kernel/patches``), then a user's ``changes``;
    cached by a hash of all of them."""
    patches = kernel_patches() if patches is None else tuple(patches)
    origin = package_version(KERNEL_PACKAGE) if changes.source is None else "own tree"
    out = cache_root() / f"linux-{digest([origin, COSIM_FRAGMENT, *KMAKE, *patches, *changes.key_parts()])}"
    tree = out / "src"
    image = tree / "arch" / "arm64" / "boot" / "Image"
    if (out / ".done").exists():
        release = (out / "release").read_text().strip()
        return KernelArtifacts(image, tree, out / "modules", release)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if changes.source is None:
        tarball = Path(f"/usr/src/{KERNEL_PACKAGE}.tar.xz")
        run("unpack kernel source", ["tar", "xf", tarball, "-C", out], logs / "kernel.log")
        (out / KERNEL_PACKAGE).rename(tree)
    else:  # a copy: the build and the patches must not touch the user's tree
        run(f"copy kernel tree {changes.source}", ["rsync", "-a", "--exclude=.git",
                                                   f"{changes.source}/", tree], logs / "kernel.log")
    try:
        apply_patches(tree, (*patches, *changes.patches), logs / "kernel.log")
    except BuildError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    # cosim's fragment, then the user's: a later setting of an option wins (the user's choice)
    wanted: list[tuple[Path | str, dict[str, str]]] = [("cosim", config_fragment_options(COSIM_FRAGMENT))]
    text = COSIM_FRAGMENT.read_text()
    for fragment in changes.fragments:
        wanted.append((fragment, config_fragment_options(fragment)))
        text += f"\n# {fragment}\n" + fragment.read_text()
    if changes.options:
        options = "".join(f"{o}\n" for o in changes.options)
        wanted.append(("guest.kernel.options", config_fragment_options_text(options)))
        text += "\n# guest.kernel.options\n" + options
    for i, (_, options) in enumerate(wanted):
        for _, later in wanted[i + 1:]:
            for option in later.keys() & options.keys():
                del options[option]
    allconfig = out / "allconfig"
    allconfig.write_text(text)
    try:
        run("configure kernel", [*KMAKE, f"KCONFIG_ALLCONFIG={allconfig}", "allnoconfig"],
            logs / "kernel.log", cwd=tree)
        check_config(tree, wanted, option_purposes(COSIM_FRAGMENT))
    except BuildError:
        shutil.rmtree(out, ignore_errors=True)  # a configuration that failed is not worth 1.5 GB
        raise
    jobs = f"-j{os.cpu_count() or 2}"
    run("build kernel (first build ~5 min)", [*KMAKE, jobs, "Image", "modules"], logs / "kernel.log",
        cwd=tree)
    run("install kernel modules", [*KMAKE, "INSTALL_MOD_PATH=" + str(out / "modules"),
                                   "modules_install"], logs / "kernel.log", cwd=tree)
    release = (tree / "include" / "config" / "kernel.release").read_text().strip()
    (out / "release").write_text(release)
    (out / ".done").touch()
    return KernelArtifacts(image, tree, out / "modules", release)


# --- guest modules, programs and initramfs --------------------------------------------------------

def build_guest_modules(kernel: KernelArtifacts, logs: Path) -> Path:
    sources = GUEST_DIR / "drivers"
    out = cache_root() / f"guest-modules-{digest([str(kernel.image), *files_under(sources)])}"
    if (out / ".done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(sources, out)
    run("build guest drivers", [*KMAKE, "-C", kernel.tree, f"M={out}", "modules"],
        logs / "guest.log")
    (out / ".done").touch()
    return out


def build_guest_programs(logs: Path) -> Path:
    sources = GUEST_DIR / "programs"
    out = cache_root() / f"guest-programs-{digest(files_under(sources))}"
    if (out / ".done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for source in sorted(sources.glob("*.c")):
        run(f"build guest program {source.stem}",
            [f"{CROSS}gcc", "-static", "-O2", "-Wall", "-o", out / source.stem, source, "-lm"],
            logs / "guest.log")
    (out / ".done").touch()
    return out


# Upstream test programs from the kernel source, built as they are (never copied into cosim).
KERNEL_TOOLS = ("tools/spi/spidev_test.c",)


def build_kernel_tools(kernel: KernelArtifacts, logs: Path) -> Path:
    out = cache_root() / f"kernel-tools-{digest([str(kernel.image), *KERNEL_TOOLS])}"
    if (out / ".done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    headers = out / "headers"  # this kernel's UAPI: the cross toolchain's are older
    run("install the kernel's UAPI headers", [*KMAKE, f"INSTALL_HDR_PATH={headers}", "headers_install"],
        logs / "guest.log", cwd=kernel.tree)
    for tool in KERNEL_TOOLS:
        name = Path(tool).stem
        run(f"build {name} from the kernel source",
            [f"{CROSS}gcc", "-static", "-O2", "-I", headers / "include", "-o", out / name,
             kernel.tree / tool], logs / "guest.log")
    (out / ".done").touch()
    return out


# The guest's shell and tools: Debian's busybox build, with its libraries.  It runs what is on
# PATH before its own applets; busybox-static prefers its applets, so a Debian flashcp or
# i2cdetect a user installs would never run in its place (init alone runs under it: see init).
# kmod: busybox's modprobe and insmod try init_module() when finit_module() fails, so a module
# whose init returns an error ran its init (a whole test suite) twice.
BASE_PACKAGES = ("busybox", "kmod")
STATIC_BUSYBOX = "busybox-static"  # its binary only, as /bin/busybox-static: the init's shell
# libc6's character-set modules for iconv (20 of its 23 MB; busybox needs none): left out of the
# base image, whose boot they would slow by ~0.4 s. A guest section listing libc6 gets all of it.
BASE_LEAVES_OUT = ("usr/lib/aarch64-linux-gnu/gconv",)
DOCS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian")


def base_packages(logs: Path) -> list[Path]:
    """The base image's Debian packages, unpacked in the cache."""
    packages = debian.resolve(list(BASE_PACKAGES), cache_root())
    return debian.unpacked(packages, cache_root() / "downloads", logs / "guest.log")


def install_packages(folders: Sequence[Path], staging: Path) -> None:
    for folder in folders:
        shutil.copytree(folder, staging, symlinks=True, dirs_exist_ok=True)
    for doc in DOCS:
        shutil.rmtree(staging / doc, ignore_errors=True)


def build_initramfs(kernel: KernelArtifacts, modules: Path, logs: Path) -> Path:
    """cosim's image: the base packages, ``modules`` (cosim's guest drivers), programs, init."""
    packages = base_packages(logs)
    (static,) = debian.unpacked(debian.resolve([STATIC_BUSYBOX], cache_root()), cache_root() / "downloads",
                                logs / "guest.log")
    programs = build_guest_programs(logs)
    tools = build_kernel_tools(kernel, logs)
    rootfs_src = GUEST_DIR / "rootfs"
    key = digest([*map(str, packages), str(static), *BASE_LEAVES_OUT, str(kernel.image), str(modules),
                  str(programs), str(tools), *files_under(rootfs_src)])
    out = cache_root() / f"initramfs-{key}.cpio"
    if out.exists():
        return out
    staging = cache_root() / f"initramfs-{key}.d"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(rootfs_src, staging, symlinks=True)
    for folder in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "mnt"):
        (staging / folder).mkdir(parents=True, exist_ok=True)
    install_packages(packages, staging)
    for part in BASE_LEAVES_OUT:
        shutil.rmtree(staging / part)
    shutil.copy(static / "bin" / "busybox", staging / "bin" / "busybox-static")
    (staging / "bin" / "sh").symlink_to("busybox")
    kmods = staging / "lib" / "modules" / kernel.release
    shutil.copytree(kernel.modules / "lib" / "modules" / kernel.release, kmods, symlinks=True,
                    ignore=shutil.ignore_patterns("build", "source"))
    extra = kmods / "extra"
    extra.mkdir(exist_ok=True)
    for ko in modules.glob("*.ko"):
        shutil.copy(ko, extra / ko.name)
    run("index guest modules", ["/sbin/depmod", "-b", staging, kernel.release], logs / "guest.log")
    for program in [*programs.iterdir(), *tools.iterdir()]:
        if program.is_file() and os.access(program, os.X_OK):
            shutil.copy(program, staging / "usr" / "bin" / program.name)
    write_cpio(staging, out)
    shutil.rmtree(staging)
    return out


def write_cpio(staging: Path, out: Path) -> None:
    """A newc archive, uncompressed: Linux unpacks it with a copy, where inflating 7 MB of gzip
    took a fifth of the guest's boot."""
    files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=staging, capture_output=True,
                           check=True).stdout
    tmp = out.with_suffix(".tmp")
    with tmp.open("wb") as f:
        cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=staging,
                              input=files, stdout=f)
    if cpio.returncode != 0:
        raise BuildError("packing the initramfs failed")
    tmp.rename(out)


@dataclass(frozen=True)
class Artifacts:
    qemu: Path
    initramfs: Path
    build: KernelArtifacts  # the kernel's image, tree and modules (to build modules against)
    guest_modules: Path  # cosim's own guest drivers, built for that kernel
    layers: tuple[Path, ...] = ()  # archives appended to the initramfs at boot (a user's content)

    @property
    def kernel(self) -> Path:
        return self.build.image

    def with_layers(self, *layers: Path) -> Artifacts:
        return replace(self, layers=(*self.layers, *layers))


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per cache: a second process (another session, an xdist worker) waits
    here, then finds the artifacts done, instead of unpacking over a tree being compiled."""
    path = cache_root() / ".build.lock"
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            console.print(f"waiting for the build of {holder} to finish (it holds {path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
            console.print("[green]✓[/] the other build finished; going on")
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} ({' '.join(sys.argv[:3])})")
        lock.flush()
        yield


def build_all(logs: Path | None = None, kernel_patches: Sequence[Path] | None = None,
              kernel_changes: KernelChanges = KernelChanges()) -> Artifacts:
    """QEMU, kernel and initramfs, built where the cache lacks them.  ``kernel_patches`` replaces
    cosim's own kernel patches (a kernel without a fix, to show the bug it fixes);
    ``kernel_changes`` are a user's (a platform's ``guest.kernel``)."""
    logs = logs or cache_root() / "logs"
    with build_lock():
        qemu = build_qemu(logs)
        kernel = build_kernel(logs, kernel_patches, kernel_changes)
        modules = build_guest_modules(kernel, logs)
        return Artifacts(qemu, build_initramfs(kernel, modules, logs), kernel, modules)
