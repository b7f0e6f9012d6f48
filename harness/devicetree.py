"""Device-tree nodes contributed by peripherals, and the final tree the guest boots with.

The engine's machine produces its own tree (QEMU's ``dumpdtb``); cosim appends the peripherals'
nodes as DTS and lets ``dtc`` — the reference compiler — build the blob.  References to existing
nodes use dtc's path syntax (``&{/apb-pclk}``), so no phandle is guessed.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIC_SPI = 0
IRQ_TYPE_LEVEL_HIGH = 4


@dataclass(frozen=True)
class Ref:
    """A phandle reference to a node by its path (``Ref("/apb-pclk")``)."""

    path: str

    def dts(self) -> str:
        """The reference as DTS (``&{/path}``)."""
        return f"&{{{self.path}}}"


Cell = int | Ref
Value = bool | str | int | Ref | bytes | list[str] | list[Cell] | tuple[Cell, ...]


class DeviceTreeError(ValueError):
    pass


def _format(name: str, value: Value) -> str:
    if value is True:
        return f"{name};"
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return f"{name} = {value};"  # cells written as DTS, e.g. "<&{/apb-pclk}>" from YAML
    if isinstance(value, str):
        return f'{name} = "{_escape(value)}";'
    if isinstance(value, bytes):
        return f"{name} = [{value.hex(' ')}];"
    if isinstance(value, (int, Ref)):
        value = [value]
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return f"{name} = " + ", ".join(f'"{_escape(v)}"' for v in value) + ";"
        cells = []
        for v in value:
            if isinstance(v, Ref):
                cells.append(v.dts())
            elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32:
                cells.append(f"{v:#x}")
            else:
                raise DeviceTreeError(f"property {name}: {v!r} is not a 32-bit cell or reference")
        return f"{name} = <{' '.join(cells)}>;"
    raise DeviceTreeError(f"property {name}: cannot express {value!r} in a device tree")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass
class DtNode:
    """A device-tree node a model (or the platform) adds: ``properties`` by name, ``children``."""

    name: str
    unit_address: int | None = None
    properties: dict[str, Value] = field(default_factory=dict)
    children: list[DtNode] = field(default_factory=list)
    parent_path: str = ""  # "" for a child of the root, else the parent's path ("/lowbus")

    @property
    def full_name(self) -> str:
        """``name@unit-address`` (or the name alone)."""
        return self.name if self.unit_address is None else f"{self.name}@{self.unit_address:x}"

    @property
    def path(self) -> str:
        """The node's path in the tree (``/lowbus/dma32r@c020000``)."""
        return f"{self.parent_path}/{self.full_name}"

    def set(self, name: str, value: Value) -> None:
        """Sets property ``name``: True (empty), a string, string list, cells or references."""
        self.properties[name] = value

    def child(self, node: DtNode) -> DtNode:
        """Adds ``node`` under this one and returns it."""
        node.parent_path = self.path
        self.children.append(node)
        return node

    def fixed_clock(self, name: str, hz: int) -> Ref:
        """A ``fixed-clock`` child node named ``name`` (a clock of the device's own, as SoCs give
        their UART and audio blocks); returns the reference a ``clocks`` property takes."""
        clock = self.child(DtNode(name))
        clock.set("compatible", "fixed-clock")
        clock.set("#clock-cells", 0)
        clock.set("clock-frequency", hz)
        return Ref(clock.path)

    @classmethod
    def from_mapping(cls, name: str, mapping: dict[str, Any]) -> DtNode:
        """A node written as a mapping (platform YAML): nested mappings are child nodes."""
        node = cls(name)
        for key, value in mapping.items():
            if isinstance(value, dict):
                node.child(cls.from_mapping(key, value))
            else:
                node.set(key, value)
        return node

    def dts(self, indent: int = 1) -> str:
        """The node and its children as DTS."""
        pad = "\t" * indent
        lines = [f"{pad}{self.full_name} {{"]
        lines += [f"{pad}\t{_format(k, v)}" for k, v in self.properties.items()]
        lines += [child.dts(indent + 1) for child in self.children]
        lines.append(f"{pad}}};")
        return "\n".join(lines)


class DtAliases:
    """The ``/aliases`` node: models ask for a name by stem (``serial``) and get the next free
    number after those the machine itself uses (QEMU virt's own UART is serial0)."""

    def __init__(self, taken: dict[str, int] | None = None):
        self.next = dict(taken or {})
        self.aliases: dict[str, str] = {}

    def add(self, stem: str, node: DtNode) -> str:
        """Gives ``node`` the next free alias of ``stem`` (``serial2``) and returns it."""
        index = self.next.get(stem, 0)
        self.next[stem] = index + 1
        name = f"{stem}{index}"
        self.aliases[name] = node.path
        return name


def reg_cells(base: int, size: int) -> list[Cell]:
    """``reg`` for a root with #address-cells = #size-cells = 2 (QEMU virt)."""
    return [base >> 32, base & 0xFFFFFFFF, size >> 32, size & 0xFFFFFFFF]


def dma_ranges_cells(ranges: list[tuple[int, int, int]]) -> list[Cell]:
    """``dma-ranges`` (device address, CPU address, size) for 2 address and 2 size cells."""
    cells: list[Cell] = []
    for device, cpu, size in ranges:
        cells += [device >> 32, device & 0xFFFFFFFF, cpu >> 32, cpu & 0xFFFFFFFF,
                  size >> 32, size & 0xFFFFFFFF]
    return cells


def spi_cells(spis: tuple[int, ...] | list[int]) -> list[Cell]:
    cells: list[Cell] = []
    for spi in spis:
        cells += [GIC_SPI, spi, IRQ_TYPE_LEVEL_HIGH]
    return cells


def overlay_dts(nodes: list[DtNode], aliases: dict[str, str]) -> str:
    """The DTS text appended to the machine's own tree."""
    parts = ["", "/* cosim peripherals */", "/ {"]
    parts += [node.dts() for node in nodes]
    parts.append("};")
    if aliases:
        parts.append("/ {\n\taliases {")
        parts += [f'\t\t{name} = "{path}";' for name, path in aliases.items()]
        parts.append("\t};\n};")
    return "\n".join(parts) + "\n"


def node_paths(dts: str) -> list[str]:
    """The paths of the nodes in DTS text as ``dtc -O dts`` writes it (one node per line, a tab
    per level)."""
    paths, stack = [], []
    for line in dts.splitlines():
        m = re.fullmatch(r"(\t*)([^\s{}]+) \{", line)
        if m and m[2] != "/":
            del stack[len(m[1]) - 1:]
            stack.append(m[2])
            paths.append("/" + "/".join(stack))
    return paths


def delete_nodes_dts(paths: list[str]) -> str:
    return "".join(f"/delete-node/ &{{{path}}};\n" for path in paths)


def dtc(args: list[str], stdin: bytes) -> bytes:
    proc = subprocess.run(["dtc", "-q", *args], input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise DeviceTreeError("dtc failed: " + proc.stderr.decode(errors="replace").strip())
    return proc.stdout


def dtb_to_dts(dtb: Path) -> str:
    return dtc(["-I", "dtb", "-O", "dts"], dtb.read_bytes()).decode()


def compile_dts(dts: str, out: Path) -> None:
    out.write_bytes(dtc(["-I", "dts", "-O", "dtb"], dts.encode()))
