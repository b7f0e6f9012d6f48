"""A user's own content in the guest: out-of-tree modules, programs, Debian packages, files and an
overlay (a platform's ``guest:`` section, or a test's additions), built against cosim's kernel and
packed as an initramfs archive of its own.

Linux unpacks several concatenated initramfs archives in order, later files replacing earlier
ones, so a board boots cosim's initramfs with these layers appended: adding a module or a file
never rebuilds cosim's image or the kernel, and each layer is cached by a hash of its content —
edit one module's source and only that module and its layer are built again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from . import debian
from .build import (
    BASE_PACKAGES,
    CROSS,
    KMAKE,
    Artifacts,
    BuildError,
    KernelArtifacts,
    KernelChanges,
    base_packages,
    build_all,
    build_lock,
    cache_root,
    digest,
    install_packages,
    run,
    write_cpio,
)
from .platform import GuestContent, LoadedPlatform, PlatformError, existing_path

USER_MODULES = "user"  # lib/modules/<release>/user: not loaded by cosim's init unless asked
BOOT_LOADS = "etc/cosim/modules-load"  # one "name params..." a line, modprobe'd at boot
LIBRARY_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib")
ELF_MAGIC = b"\x7fELF"
EM_AARCH64 = 183  # e_machine of an arm64 ELF file


class Origin(Protocol):
    """Where a guest section was written: resolves its paths and names its lines in errors."""

    def guest_where(self, *loc: str | int) -> str: ...

    def guest_path(self, value: str, *loc: str | int, folder: bool | None = None) -> Path: ...


class GuestAdditions:
    """A test's own additions (``cosim_board_factory(guest={...})``): paths are relative to the
    test's folder."""

    def __init__(self, folder: Path, label: str):
        self.folder, self.label = folder, label

    def guest_where(self, *loc: str | int) -> str:
        return f"{self.label}: guest[{']['.join(repr(x) for x in loc)}]"

    def guest_path(self, value: str, *loc: str | int, folder: bool | None = None) -> Path:
        return existing_path(self.folder / value, folder, self.guest_where(*loc))

    def content(self, data: dict[str, Any]) -> GuestContent:
        try:
            return GuestContent.model_validate(data)
        except ValidationError as e:
            raise PlatformError("\n".join(
                f"{self.label}: guest.{'.'.join(map(str, err['loc']))}: {err['msg']}"
                for err in e.errors())) from None


def source_key(folder: Path) -> list[str | bytes]:
    """A folder's content with each file's relative path: renaming a file changes it too."""
    parts: list[str | bytes] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        parts += [str(path.relative_to(folder)), path.read_bytes()]
    return parts


def _blame_source(error: BuildError, copy: Path, source: Path) -> BuildError:
    """Compiler messages name the user's own files, not the cache's copy of them."""
    return BuildError(str(error).replace(str(copy), str(source)))


# --- modules ------------------------------------------------------------------------------------

def build_module_folder(source: Path, kernel: KernelArtifacts, logs: Path) -> list[Path]:
    """A folder of out-of-tree modules built against ``kernel``; returns the .ko files."""
    out = cache_root() / f"user-modules-{digest([str(kernel.image), *source_key(source)])}"
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(source, out, symlinks=True)
        try:
            run(f"build modules {source.name}", [*KMAKE, "-C", kernel.tree, f"M={out}", "modules"],
                logs / "user.log")
        except BuildError as e:
            shutil.rmtree(out, ignore_errors=True)
            raise _blame_source(e, out, source) from None
        (out / ".done").touch()
    modules = sorted(out.rglob("*.ko"))
    if not modules:
        raise BuildError(f"guest module folder {source} built no .ko file: its Kbuild or Makefile "
                         "needs obj-m")
    return modules


# --- programs -----------------------------------------------------------------------------------

def build_program(source: Path, logs: Path) -> list[Path]:
    """A C file (static, one program) or a folder with a Makefile (``make CC=<cross gcc>``: the
    executables it leaves are the programs)."""
    parts = source_key(source) if source.is_dir() else [source.name, source.read_bytes()]
    out = cache_root() / f"user-program-{digest([CROSS, *parts])}"
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        try:
            if source.is_dir():
                shutil.copytree(source, out, symlinks=True)
                run(f"build programs {source.name}", ["make", f"CC={CROSS}gcc", f"CROSS_COMPILE={CROSS}",
                                                      "ARCH=arm64"], logs / "user.log", cwd=out)
            else:
                out.mkdir(parents=True)
                shutil.copy(source, out / source.name)
                run(f"build program {source.stem}", [f"{CROSS}gcc", "-static", "-O2", "-Wall", "-o",
                                                     out / source.stem, out / source.name, "-lm"],
                    logs / "user.log", cwd=out)
        except BuildError as e:
            shutil.rmtree(out, ignore_errors=True)
            raise _blame_source(e, out if source.is_dir() else out / source.name, source) from None
        (out / ".done").touch()
    executables = [p for p in sorted(out.rglob("*")) if p.is_file() and os.access(p, os.X_OK)
                   and not p.name.endswith((".o", ".so")) and _starts_elf(p)]
    foreign = [p.name for p in executables if _elf_machine(p) != EM_AARCH64]
    if foreign:
        raise BuildError(f"guest program {source}: {', '.join(foreign)} not built for arm64 (does its "
                         "Makefile compile with $(CC)?)")
    if not executables:
        raise BuildError(f"guest program {source}: the build left no executable")
    return executables


def _elf_machine(path: Path) -> int:
    with path.open("rb") as f:
        return int.from_bytes(f.read(20)[18:20], "little")


# --- what binaries need -------------------------------------------------------------------------

@dataclass(frozen=True)
class ElfNeeds:
    interpreter: str | None
    libraries: list[str]  # DT_NEEDED
    runpath: list[str]  # DT_RUNPATH or DT_RPATH, as written ($ORIGIN...)


def elf_needs(files: list[Path]) -> dict[Path, ElfNeeds]:
    """Each ELF file's program interpreter, the shared libraries it names and where it looks."""
    needs: dict[Path, ElfNeeds] = {}
    for start in range(0, len(files), 200):
        batch = files[start:start + 200]
        out = subprocess.run([f"{CROSS}readelf", "-d", "-l", "-W", *map(str, batch)],
                             capture_output=True, text=True).stdout
        chunks = re.split(r"^File: (.*)$", out, flags=re.M)
        texts = dict(zip(chunks[1::2], chunks[2::2], strict=True)) if len(batch) > 1 else {str(batch[0]): out}
        for path, text in texts.items():
            interp = re.search(r"Requesting program interpreter: (\S+)\]", text)
            runpath = re.search(r"\((?:RUNPATH|RPATH)\).*\[(.+)\]", text)
            needs[Path(path)] = ElfNeeds(interp[1] if interp else None,
                                         re.findall(r"\(NEEDED\).*\[(.+)\]", text),
                                         runpath[1].split(":") if runpath else [])
    return needs


def check_libraries(root: Path, base: Sequence[Path]) -> None:
    """Every program and library in ``root`` finds its interpreter and libraries there or in
    ``base`` (the base image's packages: the loader and the C library)."""
    elves = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
             and not p.name.endswith(".ko") and _starts_elf(p)]
    if not elves:
        return
    missing = []
    for path, needs in elf_needs(elves).items():
        name = path.relative_to(root)
        if needs.interpreter and not any((r / needs.interpreter.lstrip("/")).exists()
                                         for r in (root, *base)):
            missing.append(f"{name} needs its loader {needs.interpreter}")
        folders = [r / d for r in (root, *base) for d in LIBRARY_DIRS] + [
            root / entry.replace("$ORIGIN", str(name.parent)).lstrip("/") for entry in needs.runpath]
        missing += [f"{name} needs {lib}" for lib in needs.libraries
                    if not any((folder / lib).exists() for folder in folders)]
    if missing:
        raise BuildError("guest programs lack libraries (add the packages that ship them to "
                         "guest.packages):\n  " + "\n  ".join(missing[:20]))


def _starts_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC


# --- the layer ----------------------------------------------------------------------------------

@dataclass
class _Parts:
    modules: list[Path]
    loads: list[str]
    programs: list[Path]
    packages: list[Path]
    files: list[tuple[Path, str]]
    overlay: Path | None


def _gather(content: GuestContent, origin: Origin, artifacts: Artifacts, logs: Path) -> _Parts:
    parts = _Parts([], [], [], [], [], None)
    for i, entry in enumerate(content.modules):
        folder = origin.guest_path(entry.path, "modules", i, "path", folder=True)
        if not any((folder / name).exists() for name in ("Kbuild", "Makefile")):
            raise PlatformError(f"{origin.guest_where('modules', i, 'path')}: {folder} has no Kbuild "
                                "or Makefile")
        parts.modules += build_module_folder(folder, artifacts.build, logs)
        parts.loads += entry.load
    for i, value in enumerate(content.programs):
        source = origin.guest_path(value, "programs", i)
        if source.is_file() and source.suffix != ".c":
            raise PlatformError(f"{origin.guest_where('programs', i)}: a program is a .c file or a "
                                f"folder with a Makefile, not {source.name}")
        if source.is_dir() and not (source / "Makefile").exists():
            raise PlatformError(f"{origin.guest_where('programs', i)}: {source} has no Makefile")
        parts.programs += build_program(source, logs)
    if content.packages:
        try:
            base = {p.name for p in debian.resolve(list(BASE_PACKAGES), cache_root())}
            # what the base image has already, unless asked for by name (libc6 with its gconv)
            wanted = [p for p in debian.resolve(content.packages, cache_root())
                      if p.name not in base or p.name in content.packages]
            parts.packages = debian.unpacked(wanted, cache_root() / "downloads", logs / "user.log")
        except debian.PackageError as e:
            raise PlatformError(f"{origin.guest_where('packages')}: {e}") from None
    for host, guest in content.files.items():
        if not guest.startswith("/"):
            raise PlatformError(f"{origin.guest_where('files', host)}: guest path {guest!r} is not absolute")
        parts.files.append((origin.guest_path(host, "files", host), guest))
    if content.overlay is not None:
        parts.overlay = origin.guest_path(content.overlay, "overlay", folder=True)
    return parts


def _layer_key(parts: _Parts, artifacts: Artifacts) -> str:
    key: list[str | bytes | Path] = [str(artifacts.kernel), str(artifacts.guest_modules)]
    key += [str(p) for p in (*parts.modules, *parts.programs, *parts.packages)]
    key += parts.loads
    for host, guest in parts.files:
        key += [guest, *(source_key(host) if host.is_dir() else [host.read_bytes()])]
    if parts.overlay is not None:
        key += source_key(parts.overlay)
    return digest(key)


def _index_modules(staging: Path, artifacts: Artifacts, logs: Path) -> None:
    """modules.dep and friends for the kernel's, cosim's and the user's modules together: the
    layer's index replaces the base image's."""
    release = artifacts.build.release
    tree = staging.with_name(staging.name + ".depmod")
    shutil.rmtree(tree, ignore_errors=True)
    kmods = tree / "lib" / "modules" / release
    kmods.parent.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(artifacts.build.modules / "lib" / "modules" / release), str(kmods)],
                   check=True)
    for link in ("build", "source"):
        (kmods / link).unlink(missing_ok=True)
    (kmods / "extra").mkdir(exist_ok=True)
    for ko in artifacts.guest_modules.glob("*.ko"):
        shutil.copy(ko, kmods / "extra" / ko.name)
    shutil.copytree(staging / "lib" / "modules" / release / USER_MODULES, kmods / USER_MODULES)
    run("index guest modules", ["/sbin/depmod", "-b", tree, release], logs / "user.log")
    for index in kmods.glob("modules.*"):
        shutil.copy(index, staging / "lib" / "modules" / release / index.name)
    shutil.rmtree(tree)


def build_layer(content: GuestContent, origin: Origin, artifacts: Artifacts, logs: Path) -> Path:
    """``content`` as an initramfs archive to append to ``artifacts``' image (cached)."""
    parts = _gather(content, origin, artifacts, logs)
    out = cache_root() / f"layer-{_layer_key(parts, artifacts)}.cpio"
    if out.exists():
        return out
    staging = out.with_name(out.name + ".d")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    install_packages(parts.packages, staging)
    if parts.programs:
        (staging / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        for program in parts.programs:
            shutil.copy(program, staging / "usr" / "bin" / program.name)
    if parts.modules:
        user = staging / "lib" / "modules" / artifacts.build.release / USER_MODULES
        user.mkdir(parents=True)
        for ko in parts.modules:
            shutil.copy(ko, user / ko.name)
        _index_modules(staging, artifacts, logs)
    if parts.loads:
        (staging / BOOT_LOADS).parent.mkdir(parents=True, exist_ok=True)
        (staging / BOOT_LOADS).write_text("".join(f"{line}\n" for line in parts.loads))
    for host, guest in parts.files:
        target = staging / guest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if host.is_dir():
            shutil.copytree(host, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(host, target)
    if parts.overlay is not None:
        shutil.copytree(parts.overlay, staging, symlinks=True, dirs_exist_ok=True)
    check_libraries(staging, base_packages(logs))
    write_cpio(staging, out)
    shutil.rmtree(staging)
    return out


def kernel_changes(platform: LoadedPlatform) -> KernelChanges:
    kernel = platform.spec.guest.kernel
    return KernelChanges(
        options=tuple(kernel.options),
        fragments=tuple(platform.guest_path(f, "kernel", "fragments", i, folder=False)
                        for i, f in enumerate(kernel.fragments)),
        patches=tuple(platform.guest_path(p, "kernel", "patches", i, folder=False)
                      for i, p in enumerate(kernel.patches)),
        source=None if kernel.source is None else platform.guest_path(kernel.source, "kernel", "source",
                                                                      folder=True))


def build_for(platform: LoadedPlatform, additions: Iterable[tuple[GuestContent, Origin]] = (),
              logs: Path | None = None, artifacts: Artifacts | None = None) -> Artifacts:
    """What ``platform`` boots: cosim's build with the platform's kernel changes (unless
    ``artifacts`` are given), its guest content and ``additions`` as layers."""
    logs = logs or cache_root() / "logs"
    if artifacts is None:
        artifacts = build_all(logs, kernel_changes=kernel_changes(platform))
    layers = []
    with build_lock():
        for content, origin in [(platform.spec.guest, platform), *additions]:
            if not content.is_empty():
                layers.append(build_layer(content, origin, artifacts, logs))
    return artifacts.with_layers(*layers)

