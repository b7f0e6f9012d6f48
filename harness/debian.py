"""Debian bookworm arm64 packages for the guest: resolved with what they depend on, downloaded and
unpacked by apt's own tools, so that upstream user-space tools (alsa-utils, mtd-utils...) run in
the guest as Debian ships them.

Resolution reads apt's package indices for arm64 (the host's apt knows the architecture after
``scripts/setup-host.sh``) and follows ``Pre-Depends`` and ``Depends`` (the first alternative that
exists, virtual packages through ``Provides``) through library packages: Debian's section ``libs``
(shared libraries and their data: libc6, zlib1g, libasound2-data), or a ``lib*`` name.  Other packages a
dependency names are tools for a full Debian system or its maintainer scripts (adduser, udev,
perl, kmod), left out unless listed; ``Essential`` ones (coreutils, dash...) are what busybox
stands in for.  Maintainer scripts do not run; bookworm-backports is left out, as apt leaves it out
by default.  The initramfs build then checks that every program finds its libraries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ARCH = "arm64"
SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
# Names the rules resolve() follows: cached resolutions made under other rules are not reused
RESOLUTION_RULES = "libraries-by-section;highest-version;v3"


class PackageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    depends: str  # Pre-Depends and Depends, as the index writes them
    essential: bool
    section: str = ""

    @property
    def is_library(self) -> bool:
        return self.section.split("/")[-1] == "libs" or self.name.startswith("lib")

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.architecture}={self.version}"


def _order(c: str) -> int:
    """dpkg's weight of one character of a version's non-digit part: ~ sorts before the end of
    the part ("\0"), letters before other characters."""
    if c == "~":
        return -1
    if c == "\0":
        return 0
    return ord(c) if c.isalpha() else ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """Alternating non-digit and digit runs, compared run by run."""
    while a or b:
        da, db = re.match(r"\D*", a)[0], re.match(r"\D*", b)[0]  # type: ignore[index]
        width = max(len(da), len(db))
        for x, y in zip(da.ljust(width, "\0"), db.ljust(width, "\0"), strict=True):
            if _order(x) != _order(y):
                return -1 if _order(x) < _order(y) else 1
        a, b = a[len(da):], b[len(db):]
        na, nb = re.match(r"\d*", a)[0], re.match(r"\d*", b)[0]  # type: ignore[index]
        if int(na or 0) != int(nb or 0):
            return -1 if int(na or 0) < int(nb or 0) else 1
        a, b = a[len(na):], b[len(nb):]
    return 0


def compare_versions(a: str, b: str) -> int:
    """Debian's version order (epoch, upstream version, revision), as dpkg compares them."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision
    (ea, ua, ra), (eb, ub, rb) = split(a), split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def index_files() -> list[Path]:
    """apt's arm64 package indices of the suites above, in their order."""
    out = subprocess.run(["apt-get", "indextargets", "--format", "$(FILENAME) $(CODENAME)",
                          "Identifier: Packages", f"Architecture: {ARCH}"],
                         capture_output=True, text=True).stdout
    by_suite = dict(reversed(line.split()) for line in out.splitlines() if len(line.split()) == 2)
    files = [Path(by_suite[s]) for s in SUITES if s in by_suite]
    if not files:
        raise PackageError(f"apt has no {ARCH} package index: run scripts/setup-host.sh "
                           f"(it adds the {ARCH} architecture)")
    return files


APT_LISTS = Path("/var/lib/apt/lists")  # apt's Dir::State::lists on Debian


def index_key() -> str:
    """Changes when apt's indices change (apt-get update): the resolution is cached by it.  It
    reads the files' sizes and times only: asking apt (index_files) costs a second on every boot."""
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                    for f in sorted(APT_LISTS.glob(f"*_binary-{ARCH}_Packages*")))


FIELD = re.compile(r"^(Package|Version|Architecture|Depends|Pre-Depends|Provides|Essential|Section): (.*)$",
                   re.M)


class Index:
    """The arm64 packages apt knows, by name, and the virtual names they provide."""

    def __init__(self, files: list[Path]):
        self.packages: dict[str, Package] = {}
        self.providers: dict[str, list[str]] = {}
        for path in files:
            text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)],
                                  capture_output=True, check=True, text=True).stdout
            for stanza in text.split("\n\n"):
                fields = dict(FIELD.findall(stanza))
                if "Package" not in fields:
                    continue
                depends = ", ".join(filter(None, (fields.get("Pre-Depends"), fields.get("Depends"))))
                known = self.packages.get(fields["Package"])
                if known and compare_versions(known.version, fields["Version"]) >= 0:
                    continue  # apt's candidate is the highest version the suites have
                self.packages[fields["Package"]] = Package(
                    fields["Package"], fields["Version"], fields["Architecture"], depends,
                    fields.get("Essential") == "yes", fields.get("Section", ""))
                for provided in fields.get("Provides", "").split(","):
                    if name := provided.split("(")[0].strip():
                        self.providers.setdefault(name, []).append(fields["Package"])

    def candidate(self, name: str) -> Package | None:
        if name in self.packages:
            return self.packages[name]
        for provider in self.providers.get(name, []):
            return self.packages[provider]
        return None

    def resolve(self, names: list[str]) -> list[Package]:
        """``names`` and everything they need, in a stable order."""
        chosen: dict[str, Package] = {}
        todo = []
        for name in names:
            package = self.candidate(name)
            if package is None:
                raise PackageError(f"guest package '{name}': no such Debian bookworm package for "
                                   f"{ARCH} (`apt-cache search` on the host finds names)")
            todo.append(package)
        while todo:
            package = todo.pop()
            if package.name in chosen or package.essential:
                continue
            chosen[package.name] = package
            for clause in filter(None, (c.strip() for c in package.depends.split(","))):
                for alternative in clause.split("|"):
                    name = alternative.split("(")[0].strip().split(":")[0]
                    if (found := self.candidate(name)) is not None:
                        if found.is_library:
                            todo.append(found)
                        break
                else:
                    raise PackageError(f"guest package {package.name}: nothing satisfies its "
                                       f"dependency '{clause}' for {ARCH}")
        return sorted(chosen.values(), key=lambda p: p.name)


def resolve(names: list[str], cache: Path) -> list[Package]:
    """Cached by the requested names and the state of apt's indices."""
    rules, indices = RESOLUTION_RULES, index_key()
    key = json.dumps([rules, sorted(names), indices])
    memo = cache / "debian-resolved.json"
    known = json.loads(memo.read_text()) if memo.exists() else {}
    if key not in known:
        # resolutions under other rules or older indices will not be asked for again
        known = {k: v for k, v in known.items() if json.loads(k)[::2] == [rules, indices]}
        known[key] = [p.__dict__ for p in Index(index_files()).resolve(names)]
        memo.write_text(json.dumps(known))
    return [Package(**fields) for fields in known[key]]


def unpacked(packages: list[Package], downloads: Path, log: Path) -> list[Path]:
    """Each package unpacked (``dpkg-deb -x``) in the cache, downloading what is missing."""
    def deb_of(p: Package) -> Path:
        return downloads / f"{p.name}_{p.version.split(':')[-1]}_{p.architecture}.deb"

    missing = [p for p in packages if not deb_of(p).exists()]
    if missing:
        with tempfile.TemporaryDirectory(dir=downloads) as tmp:
            proc = subprocess.run(["apt-get", "download", *(p.spec for p in missing)], cwd=tmp,
                                  capture_output=True, text=True)
            with log.open("a") as f:
                f.write(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise PackageError("apt-get download failed for guest packages: "
                                   + proc.stderr.strip()[-2000:])
            for p in missing:
                (name,) = Path(tmp).glob(f"{p.name}_*_{p.architecture}.deb")
                name.rename(deb_of(p))
    folders = []
    for p in packages:
        folder = deb_of(p).with_suffix("")
        if not folder.exists():
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", str(deb_of(p)), str(tmp)], check=True)
            tmp.rename(folder)
        folders.append(folder)
    return folders
