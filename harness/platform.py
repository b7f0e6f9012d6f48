"""Boards described in YAML, checked against a schema with errors that name file, line and fix."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

PLATFORM_DIR = Path(__file__).resolve().parent.parent / "platforms"


class PlatformError(ValueError):
    """A platform file is wrong; the message names the file, the line and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_size(value: Any) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?)?\s*", str(value), re.I)
    if not m:
        raise ValueError(f"{value!r} is not a size (e.g. 4096, 64K, 1G)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[(m[2] or "")[:1].upper()]
    return int(m[1]) * scale


class Machine(_Strict):
    type: Literal["virt"] = "virt"
    gic: Literal[2, 3] = 3
    cpu: str = "cortex-a57"
    cpus: int = Field(1, ge=1, le=8)
    memory: int = 1 << 30
    # The CPU data-cache model (cosim.cachemodel): "report" moves data as a coherent system does
    # and reports every hazard; "emulate" gives the data silicon gives; "off" is a coherent board.
    cache: Literal["off", "report", "emulate"] = "report"
    # The guest's clock: "virtual" counts instructions (QEMU -icount), so a model's work takes
    # the guest time the model says however slow the host, and idle time is skipped; "wall"
    # follows the host's clock (``cosim boot`` uses it: a person at the console expects it).
    time: Literal["wall", "virtual"] = "virtual"

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_size(v)


class GuestModules(_Strict):
    """A folder of out-of-tree kernel modules (a Kbuild or a Makefile with ``obj-m``)."""

    path: str
    load: list[str] = []  # "name param=value ...": modprobe'd at boot, in order


class GuestKernel(_Strict):
    """Changes to the guest kernel: each set of them is a kernel of its own, cached."""

    options: list[str] = []  # "CONFIG_FOO=y", "CONFIG_BAR=m", "CONFIG_BAZ=n"
    fragments: list[str] = []  # config fragment files, applied after cosim's own
    patches: list[str] = []  # applied in order, after cosim's own
    source: str | None = None  # a kernel source tree in place of Debian's linux-source

    @field_validator("options")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        for option in v:
            if not re.fullmatch(r"CONFIG_[A-Za-z0-9_]+=(y|m|n|\d+|0x[0-9a-fA-F]+|\"[^\"]*\")", option):
                raise ValueError(f"{option!r} is not an option setting: write CONFIG_NAME=y, =m, "
                                 "=n, a number or a quoted string")
        return v


class GuestContent(_Strict):
    """What a user puts into the guest beside cosim's own: built, cached and appended to the
    initramfs as an archive of its own.  Paths are relative to the file that names them."""

    modules: list[GuestModules] = []
    programs: list[str] = []  # C files, or folders with a Makefile: cross-built, put on PATH
    packages: list[str] = []  # Debian bookworm arm64 packages, with what they depend on
    files: dict[str, str] = {}  # host path -> guest path
    overlay: str | None = None  # a folder copied over the guest's root

    def is_empty(self) -> bool:
        return not (self.modules or self.programs or self.packages or self.files or self.overlay)


class Guest(GuestContent):
    bootargs: str = ""
    kernel: GuestKernel = GuestKernel()


class BusDeviceSpec(_Strict):
    """A device on a peripheral's bus (an SPI flash behind an SPI controller)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    model: str
    reg: int = 0  # the address on that bus: an SPI chip select
    properties: dict[str, Any] = {}
    dt: dict[str, Any] = {}


class PeripheralSpec(BaseModel):
    """One model on the board.  Keys beyond these are wiring (``dmas``, ``gpios``, ``devices``,
    ``resets``, ``iommus``...): each belongs to a connector, which checks it (cosim.connectors)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    plugin: str
    base: int
    size: int | None = None
    irqs: list[int] = []
    properties: dict[str, Any] = {}
    dt: dict[str, Any] = {}
    stream_id: int | None = None  # the model's identity as a bus master (an IOMMU keys on it)
    # Address lines of the model's bus-master port: a 32-bit master on a board with RAM above
    # 4 GiB loses the upper bits of a wider address, as the hardware does.
    address_bits: int = Field(64, ge=12, le=64)
    bus: str | None = None  # the platform's ``buses`` entry the model sits on (its dma-ranges)

    @property
    def wiring(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        return None if v is None else parse_size(v)


class BusSpec(_Strict):
    """An interconnect in the device tree (a ``simple-bus`` node) that models sit on
    (``bus:``): its ``dma_ranges`` tell Linux which addresses the masters on it reach, as a
    board's device tree describes a 32-bit interconnect."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    # (device address, CPU address, size) of each window the masters reach: [[0, 0, 4G]]
    dma_ranges: list[tuple[int, int, int]] = []

    @field_validator("dma_ranges", mode="before")
    @classmethod
    def _ranges(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [[parse_size(x) for x in r] if isinstance(r, list) else r for r in v]


class QemuDeviceSpec(_Strict):
    """One of QEMU's own sysbus models on the board (e.g. its C PL330, for comparisons)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    model: str  # QEMU's type name
    base: int
    size: int
    irqs: list[int] = []  # GIC SPIs for the model's sysbus IRQs, in the model's order
    props: dict[str, str | int | bool] = {}
    link_memory: bool = False
    compatible: list[str]
    dt: dict[str, Any] = {}

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class Platform(_Strict):
    name: str
    description: str = ""
    machine: Machine = Machine()
    guest: Guest = Guest()
    buses: list[BusSpec] = []
    peripherals: list[PeripheralSpec] = []
    qemu_devices: list[QemuDeviceSpec] = []
    # Board-level device-tree nodes no model owns (a sound card, a codec without a control bus):
    # name -> properties, a nested mapping being a child node; cells as "<...>" DTS text.
    dt_nodes: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _unique_names(self) -> Platform:
        seen: set[str] = set()
        for p in self.peripherals:
            if p.name in seen:
                raise ValueError(f"two peripherals are named {p.name!r}")
            seen.add(p.name)
        return self

    def bus(self, name: str) -> BusSpec | None:
        return next((b for b in self.buses if b.name == name), None)


@dataclass(frozen=True)
class MachineLayout:
    """What an engine's machine leaves to cosim's models: where their windows and interrupts may
    go, where RAM starts, and which device-tree aliases the machine itself uses."""

    name: str
    peripheral_window: tuple[int, int]
    peripheral_spis: range
    ram_base: int
    aliases_taken: dict[str, int]  # stem -> how many the machine numbers itself (serial0)


class LoadedPlatform:
    """A validated platform and where each part of it came from, for later error messages."""

    def __init__(self, spec: Platform, path: Path, root: yaml.Node,
                 guest_origin: tuple[Path, yaml.Node] | None = None):
        self.spec, self.path, self._root = spec, path, root
        # The guest section's own file, when the platform names one (``guest: guest.yaml``)
        self._guest_path, self._guest_root = guest_origin or (path, _child(root, "guest"))

    def where(self, *loc: str | int) -> str:
        return f"{self.path}:{_line_of(self._root, loc)}"

    def guest_where(self, *loc: str | int) -> str:
        """File and line of ``loc`` within the guest section, wherever that section is written."""
        return f"{self._guest_path}:{_line_of(self._guest_root, loc)}"

    def guest_path(self, value: str, *loc: str | int, folder: bool | None = None) -> Path:
        """A host path the guest section names (relative to its file), which must exist
        (as a folder if ``folder``, a file if ``folder`` is False)."""
        return existing_path(self._guest_path.parent / value, folder,
                             f"{self.guest_where(*loc)}: guest.{'.'.join(map(str, loc))}")

    def where_key(self, *loc: str | int) -> str:
        """The line of the key at ``loc`` itself (for a key that should not be there)."""
        return f"{self.path}:{_key_line(self._root, loc)}"

    def unknown_key(self, loc: tuple[str | int, ...], allowed: list[str]) -> PlatformError:
        return PlatformError(f"{self.where_key(*loc)}: unknown key '{loc[-1]}' — allowed here: "
                             + ", ".join(sorted(allowed)))

    def check_value(self, loc: tuple[str | int, ...], value: Any, kind: Any) -> Any:
        """``value`` (found at ``loc``) as the type ``kind``, or a PlatformError naming its line."""
        try:
            return TypeAdapter(kind).validate_python(value)
        except ValidationError as e:
            raise PlatformError("\n".join(
                f"{self.where(*loc, *err['loc'])}: {'.'.join(str(x) for x in (*loc, *err['loc']))}: "
                f"{err['msg']}" for err in e.errors())) from None


def _line_of(node: yaml.Node, loc: Iterable[str | int]) -> int:
    """The 1-based line of the YAML node at ``loc`` (or of the deepest node that exists)."""
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    node = v
                    break
            else:
                return node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    return node.start_mark.line + 1


def existing_path(path: Path, folder: bool | None, where: str) -> Path:
    """``path`` resolved, which must exist (as a folder if ``folder``, a file if ``folder`` is
    False); else a PlatformError starting with ``where``."""
    path = path.resolve()
    if not path.exists() or (folder is not None and path.is_dir() != folder):
        kind = {True: "folder", False: "file", None: "path"}[folder]
        raise PlatformError(f"{where}: no {kind} {path}")
    return path


def _child(node: yaml.Node, key: str) -> yaml.Node:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == key), node)
    return node


def _key_line(root: yaml.Node, loc: tuple[str | int, ...]) -> int:
    """For an unknown key: the line of the key itself."""
    parent = root
    for key in loc[:-1]:
        if isinstance(parent, yaml.MappingNode):
            parent = next((v for k, v in parent.value if k.value == key), parent)
        elif isinstance(parent, yaml.SequenceNode) and isinstance(key, int):
            parent = parent.value[key]
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if k.value == loc[-1]:
                return k.start_mark.line + 1
    return parent.start_mark.line + 1


def _fields_of(loc: tuple[str | int, ...], model: type[BaseModel]) -> list[str]:
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        annotation = model.model_fields[key].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return sorted(model.model_fields)


def _describe(error: dict[str, Any], path: Path, root: yaml.Node,
              model: type[BaseModel] | None = None) -> str:
    loc = tuple(error["loc"])
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_of(loc, model or Platform))
        return f"{path}:{_key_line(root, loc)}: unknown key '{loc[-1]}' — allowed here: {allowed}"
    if kind == "missing":
        return f"{path}:{_line_of(root, loc[:-1])}: missing field '{dotted}' — add it"
    return f"{path}:{_line_of(root, loc)}: {dotted}: {error['msg']}"


def resolve_platform_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = PLATFORM_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in PLATFORM_DIR.glob("*.yaml")))
    raise PlatformError(f"no platform '{name_or_path}': give a YAML file or one of: {known}")


def _read_yaml(path: Path, shape: str) -> tuple[Any, yaml.Node]:
    try:
        text = path.read_text()
    except OSError as e:
        raise PlatformError(f"{path}: cannot read: {e.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else "?"
        raise PlatformError(f"{path}:{line}: invalid YAML: {e.problem or e}") from None
    if not isinstance(data, dict) or root is None:
        raise PlatformError(f"{path}:1: {shape}")
    return data, root


def _guest_file(platform: Path, root: yaml.Node, name: str) -> tuple[dict[str, Any], Path, yaml.Node]:
    """The guest section a platform names (``guest: acme-guest.yaml``), checked in its own file."""
    path = (platform.parent / name).resolve()
    if not path.is_file():
        raise PlatformError(f"{platform}:{_line_of(root, ('guest',))}: guest: no file {path}")
    data, guest_root = _read_yaml(path, "a guest file is a mapping (modules:, programs:, ...)")
    try:
        Guest.model_validate(data)
    except ValidationError as e:
        raise PlatformError("\n".join(_describe(err, path, guest_root, Guest)
                                      for err in e.errors())) from None
    return data, path, guest_root


def load_platform(name_or_path: str | Path) -> LoadedPlatform:
    path = resolve_platform_path(name_or_path)
    data, root = _read_yaml(path, "a platform file is a mapping with at least 'name:'")
    guest_origin = None
    if isinstance(data.get("guest"), str):
        data["guest"], guest_path, guest_root = _guest_file(path, root, data["guest"])
        guest_origin = (guest_path, guest_root)
    try:
        spec = Platform.model_validate(data)
    except ValidationError as e:
        raise PlatformError("\n".join(_describe(err, path, root) for err in e.errors())) from None
    return LoadedPlatform(spec, path, root, guest_origin)
