"""Devices no driver took: after boot, each model whose device the guest left without a driver is
named, with what the guest kernel's own source says about why — the file that matches its
compatible, the option that builds it and whether this kernel sets it — or the reason a deferred
probe gave.  A model that nothing binds is otherwise silent: the test only sees a device missing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFERRED_MARK = "--deferred--"
# Every platform and AMBA device without a driver, then the deferred probes and their reasons.
UNBOUND_COMMAND = ("for d in /sys/bus/platform/devices/* /sys/bus/amba/devices/*; do "
                   "[ -e $d/driver ] || echo ${d##*/}; done; "
                   f"echo {DEFERRED_MARK}; cat /sys/kernel/debug/devices_deferred 2>/dev/null; true")
DRIVER_FOLDERS = ("drivers", "sound")


class UnboundDeviceWarning(UserWarning):
    """A model's device that no guest driver bound: the guest cannot use that model."""


@dataclass(frozen=True)
class ModelDevice:
    name: str  # the model's (and its device-tree node's) name
    base: int
    compatible: tuple[str, ...]
    primecell_id: int | None = None  # AMBA drivers match this, not the compatible

    @property
    def linux_name(self) -> str:
        """The device's name in the guest's sysfs: ``<unit address>.<node name>``."""
        return f"{self.base:x}.{self.name}"


def parse_unbound(output: str) -> tuple[set[str], dict[str, str]]:
    """(names of devices without a driver, deferred device -> the reason its probe gave)."""
    unbound, _, deferred = output.partition(DEFERRED_MARK)
    reasons = {}
    for line in deferred.splitlines():
        name, _, reason = line.strip().partition("\t")
        if name:
            reasons[name] = reason.strip() or "no reason given"
    return {line.strip() for line in unbound.splitlines() if line.strip()}, reasons


def explain(device: ModelDevice, kernel_tree: Path, deferred: dict[str, str]) -> str:
    """Why ``device`` has no driver, as far as the guest kernel's source and configuration tell."""
    head = f"{device.name} ({device.compatible[0]}) at {device.base:#x}: no driver bound"
    if device.linux_name in deferred:
        return f"{head} — its probe was deferred: {deferred[device.linux_name]}"
    config = _config(kernel_tree)
    keys = [(f"'{c}'", f'"{c}"') for c in device.compatible]
    if device.primecell_id is not None:  # an AMBA driver's amba_id table
        keys.insert(0, (f"PrimeCell ID {device.primecell_id:#010x}", f"0x{device.primecell_id:08x}"))
    for what, text in keys:
        for source in _sources_declaring(kernel_tree, text):
            option = _option_building(source)
            if option is None:
                continue
            where = source.relative_to(kernel_tree)
            if _is_set(config, option):
                return (f"{head} — {where} matches {what} and {option}={config[option]} is set: the "
                        "driver did not take the device (see the kernel log)")
            needs = _dependencies(source.parent, option)
            unset = [term for term in needs
                     if not any(_is_set(config, f"CONFIG_{s}") for s in _symbols(term))]
            depends = (f"; it depends on {', '.join(needs)}"
                       + (f", of which this kernel lacks {', '.join(unset)}" if unset else "")
                       if needs else "")
            return (f"{head} — {where} drives {what}, built with {option}, which this guest kernel "
                    f"does not set: add {option}=y to guest.kernel.options{depends}")
    return f"{head} — no driver in this kernel's source matches {' or '.join(w for w, _ in keys)}"


def _is_set(config: dict[str, str], option: str) -> bool:
    return config.get(option) in ("y", "m")


@cache  # a built tree does not change; boards of one session share it
def _config(kernel_tree: Path) -> dict[str, str]:
    path = kernel_tree / ".config"
    text = path.read_text() if path.exists() else ""
    return dict(re.findall(r"^(CONFIG_\w+)=(\S+)$", text, re.M))


@cache  # one grep of the drivers takes seconds: once per tree and string
def _sources_declaring(kernel_tree: Path, text: str) -> tuple[Path, ...]:
    folders = [str(kernel_tree / f) for f in DRIVER_FOLDERS if (kernel_tree / f).is_dir()]
    if not folders:
        return ()
    proc = subprocess.run(["grep", "-rliF", "--include=*.c", text, *folders],
                          capture_output=True, text=True)
    return tuple(sorted(Path(line) for line in proc.stdout.splitlines()))


def _option_building(source: Path) -> str | None:
    """The CONFIG_ option that builds ``source``, from its folder's Makefile (directly, or through
    the composite object it is part of)."""
    makefile = source.parent / "Makefile"
    if not makefile.exists():
        return None
    text = makefile.read_text(errors="replace").replace("\\\n", " ")
    objects = [source.stem]
    for composite, members in re.findall(r"^([\w-]+?)-(?:objs|y)\s*[:+]?=(.*)$", text, re.M):
        if re.search(rf"(^|\s){re.escape(source.stem)}\.o(\s|$)", members):
            objects.append(composite)
    for obj in objects:
        m = re.search(rf"^obj-\$\((CONFIG_\w+)\)\s*[:+]?=.*(^|\s){re.escape(obj)}\.o(\s|$)", text, re.M)
        if m:
            return m[1]
    return None


def _dependencies(folder: Path, option: str) -> list[str]:
    """What ``option``'s Kconfig entry depends on: its ``depends on`` lines and the ``if``
    blocks around it (``if RTC_CLASS``), in the Kconfig of the driver's folder."""
    kconfig = folder / "Kconfig"
    if not kconfig.exists():
        return []
    name, blocks, needs, inside = option.removeprefix("CONFIG_"), [], [], False
    for line in kconfig.read_text(errors="replace").splitlines():
        entry = re.match(r"(menu)?config\s+(\w+)", line)
        if entry or re.match(r"(if|endif|menu|endmenu|choice|endchoice|comment|source)\b", line):
            if inside:
                break
            if entry and entry[2] == name:
                inside = True
                needs += [term for condition in blocks for term in _terms(condition)]
            elif line.startswith("if "):
                blocks.append(line[3:])
            elif line.startswith("endif") and blocks:
                blocks.pop()
        elif inside and line.strip() == "help":
            break  # the entry's help text: no more of its attributes
        elif inside and (m := re.match(r"\s+depends on\s+(.*)", line)):
            needs += _terms(m[1])
    return list(dict.fromkeys(needs)) if inside else []


def _symbols(expression: str) -> list[str]:
    return re.findall(r"\b[A-Z][A-Z0-9_]*\b", expression)


def _terms(expression: str) -> list[str]:
    """A ``depends on`` expression as the terms that must all hold ("A && (B || C)" is A and
    "B || C"); negated terms and COMPILE_TEST, which nothing needs, are left out."""
    terms = []
    for term in expression.split("#")[0].split("&&"):
        term = term.strip().strip("()").strip()
        alternatives = [a.strip() for a in term.split("||") if a.strip() != "COMPILE_TEST"]
        if alternatives and not any(a.startswith("!") for a in alternatives):
            terms.append(" || ".join(alternatives))
    return [t for t in terms if _symbols(t)]


def unbound_devices(devices: Iterable[ModelDevice], output: str, kernel_tree: Path) -> list[str]:
    """One line per model device the guest's sysfs lists without a driver."""
    unbound, deferred = parse_unbound(output)
    return [explain(d, kernel_tree, deferred) for d in devices
            if d.compatible and d.linux_name in unbound]
