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
    # Nodes of the machine's own device tree to leave out ("/pl031@9010000": QEMU virt's RTC, so
    # that a model of one is the guest's only RTC); the machine still has the device itself.
    drop_nodes: list[str] = []

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_size(v)

    @field_validator("cache", mode="before")
    @classmethod
    def _cache(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare off as false


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
    extends: str | None = None  # a platform this one adds to: merged at load, None after it
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
    apb_clock: str  # the device-tree path of the clock PrimeCells take as apb_pclk


class LoadedPlatform:
    """A validated platform and where each part of it came from, for later error messages: every
    YAML node keeps the file and line it was read from (a platform that ``extends`` another, or
    names a guest file, mixes nodes of several files)."""

    def __init__(self, spec: Platform, path: Path, root: yaml.Node):
        self.spec, self.path, self._root = spec, path, root

    def where(self, *loc: str | int) -> str:
        return _mark(_node_at(self._root, loc))

    def guest_where(self, *loc: str | int) -> str:
        """File and line of ``loc`` within the guest section, wherever that section is written."""
        return self.where("guest", *loc)

    def guest_path(self, value: str, *loc: str | int, folder: bool | None = None) -> Path:
        """A host path the guest section names (relative to the file that names it), which must
        exist (as a folder if ``folder``, a file if ``folder`` is False)."""
        written_in = Path(_node_at(self._root, ("guest", *loc)).start_mark.name).parent
        return existing_path(written_in / value, folder,
                             f"{self.guest_where(*loc)}: guest.{'.'.join(map(str, loc))}")

    def where_key(self, *loc: str | int) -> str:
        """The line of the key at ``loc`` itself (for a key that should not be there)."""
        return _key_mark(self._root, loc)

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


def _mark(node: yaml.Node) -> str:
    return f"{node.start_mark.name}:{node.start_mark.line + 1}"


def _node_at(node: yaml.Node, loc: Iterable[str | int]) -> yaml.Node:
    """The YAML node at ``loc`` (or the deepest node on the way that exists)."""
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    node = v
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    return node


def existing_path(path: Path, folder: bool | None, where: str) -> Path:
    """``path`` resolved, which must exist (as a folder if ``folder``, a file if ``folder`` is
    False); else a PlatformError starting with ``where``."""
    path = path.resolve()
    if not path.exists() or (folder is not None and path.is_dir() != folder):
        kind = {True: "folder", False: "file", None: "path"}[folder]
        raise PlatformError(f"{where}: no {kind} {path}")
    return path


def _key_mark(root: yaml.Node, loc: tuple[str | int, ...]) -> str:
    """For an unknown key: where the key itself is."""
    parent = _node_at(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if k.value == loc[-1]:
                return _mark(k)
    return _mark(parent)


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


def _describe(error: dict[str, Any], root: yaml.Node, model: type[BaseModel] = Platform) -> str:
    loc = tuple(error["loc"])
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_of(loc, model))
        return f"{_key_mark(root, loc)}: unknown key '{loc[-1]}' — allowed here: {allowed}"
    if kind == "missing":
        return f"{_mark(_node_at(root, loc[:-1]))}: missing field '{dotted}' — add it"
    return f"{_mark(_node_at(root, loc))}: {dotted}: {error['msg']}"


def resolve_platform_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A platform file: a YAML path (relative to ``relative_to``'s folder, when given) or the name
    of one of cosim's platforms."""
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute():
        nearby = relative_to.parent / path
        if nearby.suffix in (".yaml", ".yml") or nearby.exists():
            path = nearby
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = PLATFORM_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in PLATFORM_DIR.glob("*.yaml")))
    raise PlatformError(f"no platform '{name_or_path}': give a YAML file or one of: {known}")


def _read_yaml(path: Path, shape: str) -> yaml.MappingNode:
    """The file's YAML as nodes that remember the file and line they come from."""
    try:
        with path.open() as f:
            root = yaml.compose(f, Loader=yaml.SafeLoader)
    except OSError as e:
        raise PlatformError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else "?"
        raise PlatformError(f"{path}:{line}: invalid YAML: {e.problem or e}") from None
    if not isinstance(root, yaml.MappingNode):
        raise PlatformError(f"{path}:1: {shape}")
    return root


def _value(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    return next((v for k, v in node.value if k.value == key), None)


def _without(node: yaml.MappingNode, key: str) -> yaml.MappingNode:
    return yaml.MappingNode(node.tag, [(k, v) for k, v in node.value if k.value != key],
                            node.start_mark, node.end_mark)


def _guest_file(platform: Path, root: yaml.MappingNode) -> yaml.MappingNode:
    """The platform's nodes with a guest section it names by file (``guest: acme-guest.yaml``)
    put in place, checked in its own file first."""
    guest = _value(root, "guest")
    if not isinstance(guest, yaml.ScalarNode):
        return root
    path = (platform.parent / guest.value).resolve()
    if not path.is_file():
        raise PlatformError(f"{_mark(guest)}: guest: no file {path}")
    guest_root = _read_yaml(path, "a guest file is a mapping (modules:, programs:, ...)")
    try:
        Guest.model_validate(_construct(guest_root))
    except ValidationError as e:
        raise PlatformError("\n".join(_describe(err, guest_root, Guest) for err in e.errors())) from None
    return yaml.MappingNode(root.tag, [(k, guest_root if k.value == "guest" else v) for k, v in root.value],
                            root.start_mark, root.end_mark)


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_document(node)


NAMED_LISTS = ("peripherals", "buses", "qemu_devices")  # merged by name under ``extends``


def _merge(base: yaml.Node, child: yaml.Node, key: str = "") -> yaml.Node:
    """``child`` over ``base``: mappings merge key by key, the named lists by name (an entry of
    the child replaces the base's of that name), other lists add the child's after the base's,
    and anything else is the child's."""
    if isinstance(base, yaml.MappingNode) and isinstance(child, yaml.MappingNode):
        merged = dict((k.value, (k, v)) for k, v in base.value)
        for k, v in child.value:
            merged[k.value] = (k, _merge(merged[k.value][1], v, k.value) if k.value in merged else v)
        return yaml.MappingNode(child.tag, list(merged.values()), child.start_mark, child.end_mark)
    if isinstance(base, yaml.SequenceNode) and isinstance(child, yaml.SequenceNode):
        if key not in NAMED_LISTS:
            return yaml.SequenceNode(child.tag, base.value + child.value, child.start_mark, child.end_mark)
        entries = {_entry_name(e): e for e in base.value}
        for entry in child.value:
            entries[_entry_name(entry)] = entry
        return yaml.SequenceNode(child.tag, list(entries.values()), child.start_mark, child.end_mark)
    return child


def _entry_name(entry: yaml.Node) -> Any:
    name = _value(entry, "name") if isinstance(entry, yaml.MappingNode) else None
    return name.value if isinstance(name, yaml.ScalarNode) else object()


def _platform_nodes(path: Path, seen: tuple[Path, ...] = ()) -> yaml.MappingNode:
    """The platform file's nodes, over those of the platform it ``extends`` (recursively)."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise PlatformError(f"{path}: platforms extend each other in a circle: {chain}")
    root = _guest_file(path, _read_yaml(path, "a platform file is a mapping with at least 'name:'"))
    extends = _value(root, "extends")
    if extends is None:
        return root
    if not isinstance(extends, yaml.ScalarNode) or not extends.value:
        raise PlatformError(f"{_mark(extends)}: extends: the name or file of one platform")
    try:
        base_path = resolve_platform_path(extends.value, relative_to=path)
    except PlatformError as e:
        raise PlatformError(f"{_mark(extends)}: extends: {e}") from None
    if not base_path.exists():
        raise PlatformError(f"{_mark(extends)}: extends: no file {base_path.resolve()}")
    base = _platform_nodes(base_path, (*seen, path.resolve()))
    return _without(_merge(_without(base, "name"), root), "extends")  # type: ignore[arg-type]


def load_platform(name_or_path: str | Path) -> LoadedPlatform:
    path = resolve_platform_path(name_or_path)
    root = _platform_nodes(path)
    try:
        spec = Platform.model_validate(_construct(root))
    except ValidationError as e:
        raise PlatformError("\n".join(_describe(err, root) for err in e.errors())) from None
    return LoadedPlatform(spec, path, root)
