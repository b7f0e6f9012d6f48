"""Declarative peripheral models: registers with fields, IRQ outputs, a bus-master port.

A model reads like its datasheet::

    class Timer(Peripheral):
        compatible = ("acme,timer",)
        irq_names = ("tick",)

        CTRL = Register(0x00, fields=[Field("EN", 0), Field("IE", 1)], on_write="ctrl_written")
        COUNT = Register(0x04, access="ro", on_read="current_count")
        ICR = Register(0x08, access="wo", on_write="clear_interrupt")

Registers hold their value per instance (``self.regs.CTRL.EN``).  ``on_read`` computes a value
instead of the stored one; ``on_write`` runs after the stored value has taken the write, given the
written value; a field's ``on_change`` runs when a write changed that field, given its old and new
value.  Every register access runs with the peripheral's lock held, so host-side methods that
share state take ``with self.lock:`` too.  A register declared ``posted=True`` is one whose write
changes no interrupt line (an IOTLB invalidation): the guest's CPU does not wait for the model to
take it, as an interconnect's write buffer lets it go on (the bridge still delivers it before any
later access the CPU waits for; a posted write that changes an interrupt fails the test).

Time is the guest's: ``self.now()`` is QEMU's virtual clock (ns) at the access being served, and
``self.at(when_ns, callback)`` / ``self.after(delay_ns, callback)`` schedule work on it (a frame's
end on the wire, a sample clock's next period), run like an access when the guest's clock gets
there.  A model never measures the host's clock: the guest would see how fast the host is.

What a model does not model is noted, never silently dropped: an access to an offset no register
declares, a write setting bits no field of its register declares (reserved), a write changing a
field declared ``modelled=False``.  The board writes the notes to ``plugin-trace.log`` and the
pytest plugin turns them into a warning at the end of the test (:class:`ModelNotes`).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from .bus import Bus, BusMaster, Hazard
from .clock import SOON, GuestClock, Timer, Timers
from .dmarequest import DmaRequestPort
from .trace import EventTrace

Access = Literal["rw", "ro", "wo", "w1c"]


@dataclass(frozen=True)
class Field:
    """Bits ``lsb .. lsb + width - 1`` of a register, as a datasheet's bit table names them."""

    name: str
    lsb: int
    width: int = 1
    access: Access = "rw"
    doc: str = ""
    on_change: str | None = None  # method(old, new) (method(index, old, new) in an array)
    modelled: bool = True  # False: the model keeps the bits but does nothing with them
    mask: int = dataclass_field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", ((1 << self.width) - 1) << self.lsb)


class ModelNotes:
    """What drivers did that the models do not model, counted per model, kind and offset; one
    set per board.  ``lines()`` go to plugin-trace.log, ``summary()`` totals them per model."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.first_values: dict[tuple[str, str, int], int] = {}

    def note(self, model: str, kind: str, offset: int, value: int = 0) -> None:
        key = (model, kind, offset)
        count = self.counts.get(key, 0)
        if count == 0:
            self.first_values[key] = value
        self.counts[key] = count + 1

    def lines(self) -> list[str]:
        return [f"{model}: {kind} at offset {offset:#x} (first value {self.first_values[key]:#x}), "
                f"{count} time(s)" for key, count in sorted(self.counts.items())
                for model, kind, offset in [key]]

    def summary(self) -> str:
        by_model: dict[str, int] = {}
        for (model, _, _), count in self.counts.items():
            by_model[model] = by_model.get(model, 0) + count
        return ", ".join(f"{model}: {count}" for model, count in sorted(by_model.items()))


class Register:
    """One register of a peripheral's map; a class attribute, named after itself."""

    name: str

    def __init__(self, offset: int, *, width: int = 32, reset: int = 0, access: Access = "rw",
                 fields: Sequence[Field] = (), on_read: str | None = None,
                 on_write: str | None = None, fifo_entry_bits: int | str | None = None,
                 posted: bool = False, doc: str = ""):
        if width not in (8, 16, 32, 64):
            raise ValueError(f"register width {width} is not 8, 16, 32 or 64")
        if posted and access not in ("rw", "wo"):
            raise ValueError(f"a posted register is written: access {access!r} is not rw or wo")
        self.offset, self.width, self.reset, self.access = offset, width, reset, access
        self.posted = posted
        self.fields = {f.name: f for f in fields}
        self.on_read, self.on_write, self.doc = on_read, on_write, doc
        self.change_hooks = [(f, f.on_change) for f in fields if f.on_change]
        self.unmodelled = sum(f.mask for f in fields if not f.modelled)
        # bits no field declares: a write setting them is noted (only when fields are declared)
        self.reserved = ((1 << width) - 1) & ~sum(f.mask for f in fields) if fields else 0
        # A FIFO data register: bits per entry (or the name of a method computing them, for a
        # frame size the driver programs).  DMA beats of another width are a driver bug.
        self.fifo_entry_bits = fifo_entry_bits
        full = (1 << width) - 1
        if access == "ro":  # read-only whatever its fields say (a status register)
            self.writable = self.w1c = 0
        elif fields:
            self.writable = sum(f.mask for f in fields if f.access in ("rw", "wo"))
            self.w1c = sum(f.mask for f in fields if f.access == "w1c")
        else:
            self.writable = full if access in ("rw", "wo") else 0
            self.w1c = full if access == "w1c" else 0

    index: int | None = None  # the element, when the register belongs to a RegisterArray

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def size(self) -> int:
        """The register's width in bytes."""
        return self.width // 8

    def mask(self, *names: str) -> int:
        """The bits of the named fields: ``RIS.mask("RX", "RT")``."""
        return sum(self.fields[name].mask for name in names)

    def compose(self, **values: int) -> int:
        """A value from field values, for status registers computed on read:
        ``FR.compose(RXFE=1, TXFF=0)``."""
        return sum((int(v) << self.fields[name].lsb) & self.fields[name].mask
                   for name, v in values.items())


class RegisterArray:
    """``count`` registers every ``stride`` bytes from ``offset`` (a bank per channel, say),
    named NAME0, NAME1, ...; callbacks get the element's index first."""

    name: str

    def __init__(self, offset: int, count: int, stride: int, **register: Any):
        self.offset, self.count, self.stride, self.register = offset, count, stride, register

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def expand(self) -> dict[str, Register]:
        """The array's registers by name (``NAME0``, ``NAME1``...), each at its offset."""
        regs = {}
        for i in range(self.count):
            reg = Register(self.offset + i * self.stride, **self.register)
            reg.__set_name__(type(self), f"{self.name}{i}")
            reg.index = i
            regs[reg.name] = reg
        return regs


class RegisterValue:
    """A register's value in one peripheral instance; fields read and write as attributes."""

    __slots__ = ("spec", "value")

    def __init__(self, spec: Register):
        self.spec = spec
        self.value = spec.reset

    def __getattr__(self, name: str) -> int:
        f = self.spec.fields.get(name)
        if f is None:
            raise AttributeError(f"register {self.spec.name} has no field {name}")
        return (self.value & f.mask) >> f.lsb

    def __setattr__(self, name: str, value: int) -> None:
        if name in RegisterValue.__slots__:
            object.__setattr__(self, name, value)
            return
        f = self.spec.fields.get(name)
        if f is None:
            raise AttributeError(f"register {self.spec.name} has no field {name}")
        self.value = (self.value & ~f.mask) | ((value << f.lsb) & f.mask)


class RegisterFile:
    def __init__(self, specs: Iterable[Register]):
        for spec in specs:
            object.__setattr__(self, spec.name, RegisterValue(spec))

    def __getattr__(self, name: str) -> RegisterValue:  # for type checkers: set in __init__
        raise AttributeError(f"no register {name}")


class IrqSink(Protocol):
    """Where IRQ level changes go: the bridge to QEMU's GIC, or a recorder in unit tests."""

    def set_irq(self, line: int, level: bool) -> None: ...


class RecordingIrqSink:
    """An IRQ sink for unit tests: the current level of each line and how often it rose."""

    def __init__(self) -> None:
        self.levels: dict[int, bool] = {}
        self.rises: dict[int, int] = {}

    def set_irq(self, line: int, level: bool) -> None:
        if level and not self.levels.get(line, False):
            self.rises[line] = self.rises.get(line, 0) + 1
        self.levels[line] = level


class IrqRelay:
    """The IRQ sink a model is built with before its engine exists (``cosim dts``, unit tests,
    the assembly step): it keeps each line's level and, once bound, passes changes on."""

    def __init__(self) -> None:
        self.levels: dict[int, bool] = {}
        self.target: IrqSink | None = None

    def set_irq(self, line: int, level: bool) -> None:
        self.levels[line] = level
        if self.target is not None:
            self.target.set_irq(line, level)

    def bind(self, target: IrqSink) -> None:
        """From now on changes go to ``target``, which first hears the lines already raised."""
        self.target = target
        for line, level in self.levels.items():
            if level:
                target.set_irq(line, level)


class IrqLine:
    """A named interrupt output; only level changes reach the sink."""

    def __init__(self, name: str, index: int, sink: IrqSink):
        self.name, self.index, self.sink = name, index, sink
        self.level = False

    def set(self, level: bool) -> None:
        level = bool(level)
        if level != self.level:
            self.level = level
            self.sink.set_irq(self.index, level)


PRIMECELL_CELL_ID = 0xB105F00D


def _primecell_id_registers(periph_id: int, cell_id: int) -> dict[str, Register]:
    regs = {}
    for i in range(4):
        for name, offset, value in (("PERIPHID", 0xFE0, periph_id), ("PCELLID", 0xFF0, cell_id)):
            reg = Register(offset + 4 * i, access="ro", reset=(value >> (8 * i)) & 0xFF)
            reg.__set_name__(Peripheral, f"{name}{i}")
            regs[reg.name] = reg
    return regs


class HostBuffer:
    """Bytes a model has sent towards the host (a UART's line, a FIFO's far side), for host-side
    code to wait for and take.  Shares the model's lock, so models append with it held."""

    def __init__(self, lock: threading.RLock):
        self.data = bytearray()
        self._arrived = threading.Condition(lock)

    def append(self, data: bytes | bytearray | list[int]) -> None:
        """Adds what the model sent (its lock held) and wakes whoever waits in ``take``."""
        self.data.extend(data)
        self._arrived.notify_all()

    def take(self, count: int, timeout: float) -> bytes:
        """Waits until ``count`` bytes are there (or ``timeout`` passes); takes up to that many."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.data) >= count, timeout)
            data = bytes(self.data[:count])
            del self.data[:count]
            return data


class PeripheralError(RuntimeError):
    """A model was configured or used in a way it does not support."""


@dataclass(frozen=True)
class PeripheralConfig:
    """What the platform says about one instance of a peripheral."""

    name: str
    base: int
    size: int
    irqs: tuple[int, ...] = ()
    properties: dict[str, Any] | None = None  # model parameters from the platform file
    dt: dict[str, Any] | None = None  # extra device-tree properties
    stream_id: int | None = None  # the model's identity as a bus master (an IOMMU keys on it)
    address_bits: int = 64  # address lines of its bus-master port


class Peripheral:
    """Base of every peripheral model.  Subclasses declare registers and IRQ names."""

    compatible: ClassVar[tuple[str, ...]] = ()
    irq_names: ClassVar[tuple[str, ...]] = ()
    dma_master: ClassVar[bool] = False  # has a bus-master port
    dma_request_names: ClassVar[tuple[str, ...]] = ()  # DRQ outputs, wired by the platform's dmas
    gpio_input_names: ClassVar[tuple[str, ...]] = ()  # inputs a platform wires to GPIO lines
    default_size: ClassVar[int] = 0x1000
    # An ARM PrimeCell's peripheral ID, as its TRM gives it: bits 11:0 the part number (0x031 for
    # the PL031), 19:12 the designer (0x41, ARM), 23:16 the revision, 31:24 the configuration;
    # 0x00041031 is a PL031 r0.  It adds PERIPHID0-3 and PCELLID0-3 (0xB105F00D) at 0xFE0..0xFFC,
    # which Linux's AMBA bus reads to match a driver, and the device tree then gets what that bus
    # needs: "arm,primecell" in compatible and the machine's APB clock as "apb_pclk".
    primecell_id: ClassVar[int | None] = None

    _registers: ClassVar[dict[int, Register]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        specs: dict[str, Register] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                if isinstance(value, Register):
                    specs[value.name] = value
                elif isinstance(value, RegisterArray):
                    specs.update(value.expand())
        if cls.primecell_id is not None:
            specs.update(_primecell_id_registers(cls.primecell_id, PRIMECELL_CELL_ID))
        by_offset: dict[int, Register] = {}
        for spec in specs.values():
            for other in by_offset.values():
                if spec.offset < other.offset + other.size and other.offset < spec.offset + spec.size:
                    raise PeripheralError(f"{cls.__name__}: registers {other.name} and {spec.name} overlap")
            by_offset[spec.offset] = spec
        cls._registers = dict(sorted(by_offset.items()))

    @classmethod
    def posted_offsets(cls) -> tuple[int, ...]:
        """Offsets of the registers declared ``posted``: writes the guest's CPU does not wait for."""
        return tuple(spec.offset for spec in cls._registers.values() if spec.posted)

    def __init__(self, config: PeripheralConfig, bus: Bus, irq_sink: IrqSink,
                 lock: threading.RLock | None = None, trace: EventTrace | None = None,
                 notes: ModelNotes | None = None, clock: GuestClock | None = None):
        self.config = config
        self.name = config.name
        self.bus = bus
        self.properties = dict(config.properties or {})
        # A board gives all its models one lock: DMA requests and slave DMA call from one model
        # into another, and a single lock cannot be taken in two orders.
        self.lock = lock or threading.RLock()
        self.dma_requests: dict[str, DmaRequestPort] = {}
        self.trace = trace or EventTrace()  # the board's timeline, shared by its models
        self.regs = RegisterFile(self._registers.values())
        self.irqs = {n: IrqLine(n, i, irq_sink) for i, n in enumerate(self.irq_names)}
        self.dma = (BusMaster(bus, config.name, config.stream_id, config.address_bits)
                    if self.dma_master else None)
        self.notes = notes or ModelNotes()  # the board's, shared by its models
        # The guest's time (shared by the board's models) and this model's work scheduled on it:
        # long names, clear of the names a model gives its own methods (a clock, a timer...).
        self.guest_clock = clock or GuestClock()
        self.scheduled_work = Timers(self.lock)
        self.guest_clock.attach(self.scheduled_work)
        self.in_reset = False  # held by a reset line (platform ``resets``): the bus is ignored
        self.host_failures: list[str] = []
        for spec in self._registers.values():
            hooks = [spec.on_read, spec.on_write, *(hook for _, hook in spec.change_hooks)]
            for hook in hooks:
                if hook and not callable(getattr(self, hook, None)):
                    raise PeripheralError(f"{type(self).__name__}.{spec.name}: no method {hook}")

    def close(self) -> None:
        """The board is stopping: models with host-side threads or files release them here."""

    def save(self, artifacts: Path) -> None:
        """After ``close()``: write what a person may want to look at into ``artifacts`` (the
        board's logs folder)."""

    def host_failure(self, message: str, details: str) -> None:
        """A host-side thread of the model failed; the board replaces this to fail its test."""
        self.host_failures.append(f"{message}\n{details}")

    def now(self) -> int:
        """The guest's time in ns (QEMU's virtual clock) at the access or tick being served."""
        return self.guest_clock.now_ns

    def at(self, when_ns: int, callback: Callable[[], None]) -> Timer:
        """Runs ``callback`` (the model lock held) when the guest's clock reaches ``when_ns``;
        a time already past runs at the next tick, as soon as QEMU can send one."""
        return self.scheduled_work.add(when_ns, callback)

    def reschedule(self, timer: Timer | None, when_ns: int | None,
                   callback: Callable[[], None]) -> Timer | None:
        """A model's one next event moved to ``when_ns`` (None: no event): ``timer`` is cancelled
        unless it is still pending at that time; returns the timer that stands."""
        if timer is not None and timer.pending:
            if timer.when == when_ns and timer.callback == callback:
                return timer
            timer.cancel()
        return None if when_ns is None else self.at(when_ns, callback)

    def after(self, delay_ns: int, callback: Callable[[], None]) -> Timer:
        """``at(now() + delay_ns, callback)``: a device's own latency (a frame on the wire)."""
        return self.at(self.now() + delay_ns, callback)

    def soon(self, callback: Callable[[], None]) -> Timer:
        """Runs ``callback`` at the next tick, at the guest's time then: how input from the host
        (bytes for a UART) enters the guest's time line — between accesses ``now()`` is the
        time of the last one, which the guest has moved past."""
        return self.scheduled_work.add(SOON, callback)

    def start_host_thread(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        """Runs ``target`` on a thread of its own (a line or sample clock).  An exception there
        fails the board as one in a register callback does, with its traceback."""
        def run() -> None:
            try:
                target(*args)
            except Exception as e:
                self.host_failure(f"{self.name}: host thread {target.__name__}: {type(e).__name__}: {e}",
                                  traceback.format_exc())
        thread = threading.Thread(target=run, name=f"{self.name}-{target.__name__}", daemon=True)
        thread.start()
        return thread

    def irq(self, name: str) -> IrqLine:
        """The interrupt output ``name`` (one of ``irq_names``): ``set(level)``, ``.level``."""
        return self.irqs[name]

    def report_hazard(self, message: str) -> None:
        """Tells the test that the hardware, as modelled, just did something wrong because of
        what a driver did (and carries on as silicon would): the test fails between guest
        commands unless it expects it (``board.expect(hazards=N)``)."""
        self.bus.hazards.append(Hazard(self.name, message))

    def gpio_input(self, name: str, index: int, level: bool) -> None:
        """A GPIO line wired to this model's input ``name`` (platform ``gpios``) changed level."""
        raise PeripheralError(f"{type(self).__name__} has no GPIO input '{name}'")

    @property
    def unmapped_accesses(self) -> int:
        """Accesses to offsets no register declares (they read 0 and ignore writes)."""
        return sum(count for (model, kind, _), count in self.notes.counts.items()
                   if model == self.name and kind.endswith("an unmodelled register"))

    def reset_input(self, asserted: bool) -> None:
        """A reset line wired to the model (platform ``resets``) was asserted or released.  Held
        in reset, the block ignores its bus (reads 0) and its registers return to their reset
        values; models with more state than their registers extend this."""
        with self.lock:
            self.in_reset = asserted
            if asserted:
                for spec in self._registers.values():
                    getattr(self.regs, spec.name).value = spec.reset

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        """Called by the ``dmas`` connector: the model's request line ``port.name`` is wired."""
        if port.name not in self.dma_request_names:
            raise PeripheralError(f"{type(self).__name__} has no DMA request '{port.name}'")
        self.dma_requests[port.name] = port

    # --- the bus side: called by the bridge (or a unit test) for each access ---

    def _find(self, offset: int, size: int) -> tuple[Register, int] | None:
        spec = self._registers.get(offset)
        if spec is not None:
            return spec, 0
        for spec in self._registers.values():
            if spec.offset < offset < spec.offset + spec.size:
                if offset + size > spec.offset + spec.size:
                    return None
                return spec, (offset - spec.offset) * 8
        return None

    def read(self, offset: int, size: int) -> int:
        """A bus read of ``size`` bytes; unmapped offsets read as zero (and are counted)."""
        with self.lock:
            if self.in_reset:
                self.notes.note(self.name, "read while held in reset", offset)
                return 0
            found = self._find(offset, size)
            if found is None:
                self.notes.note(self.name, "read of an unmodelled register", offset)
                return 0
            spec, shift = found
            reg = getattr(self.regs, spec.name)
            if spec.access == "wo":
                value = 0
            elif spec.on_read:
                hook = getattr(self, spec.on_read)
                value = hook() if spec.index is None else hook(spec.index)
            else:
                value = reg.value
            return (value >> shift) & ((1 << (size * 8)) - 1)

    def write(self, offset: int, size: int, data: int) -> None:
        """A bus write; writes to read-only bits and unmapped offsets are ignored."""
        self._write_values(offset, size, (data,))

    def write_many(self, offset: int, size: int, values: Iterable[int]) -> None:
        """Bus writes of ``values`` in turn to one offset (a batch of posted writes: a driver's
        invalidation loop), each as :meth:`write` does it, the register looked up once."""
        if type(self).write is not Peripheral.write:  # a model's own write sees every one
            for data in values:
                self.write(offset, size, data)
        else:
            self._write_values(offset, size, values)

    def _write_values(self, offset: int, size: int, values: Iterable[int]) -> None:
        with self.lock:
            if self.in_reset:
                for data in values:
                    self.notes.note(self.name, "write while held in reset", offset, data)
                return
            found = self._find(offset, size)
            if found is None:
                for data in values:
                    self.notes.note(self.name, "write to an unmodelled register", offset, data)
                return
            spec, shift = found
            reg = getattr(self.regs, spec.name)
            lane = ((1 << (size * 8)) - 1) << shift
            kept, writable, w1c = ~(spec.writable & lane), spec.writable, spec.w1c
            reserved, unmodelled, index = spec.reserved, spec.unmodelled, spec.index
            on_write = None if not spec.on_write else getattr(self, spec.on_write)
            store = object.__setattr__  # the value slot itself: RegisterValue's own is for fields
            for data in values:
                data = (data << shift) & lane
                old = reg.value
                value = ((old & kept) | (data & writable)) & ~(data & w1c)
                store(reg, "value", value)
                if data & reserved:
                    self.notes.note(self.name, f"{spec.name}: reserved bits set", spec.offset, data)
                if (old ^ value) & unmodelled:
                    self.notes.note(self.name, f"{spec.name}: unmodelled bits changed", spec.offset, value)
                for f, hook in spec.change_hooks:
                    if (old ^ value) & f.mask:
                        before, after = (old & f.mask) >> f.lsb, (value & f.mask) >> f.lsb
                        if index is None:
                            getattr(self, hook)(before, after)
                        else:
                            getattr(self, hook)(index, before, after)
                if on_write is not None:
                    if index is None:
                        on_write(data)
                    else:
                        on_write(index, data)

    def write_beats(self, offset: int, size: int, data: bytes) -> None:
        """A DMA burst into one register (a FIFO): ``data`` in beats of ``size`` bytes, each a
        bus write.  Models that take a whole burst faster override it (same effect)."""
        with self.lock:
            for i in range(0, len(data), size):
                self.write(offset, size, int.from_bytes(data[i:i + size], "little"))

    def read_beats(self, offset: int, size: int, length: int) -> bytes:
        """A DMA burst out of one register: ``length`` bytes in beats of ``size``."""
        with self.lock:
            return b"".join(self.read(offset, size).to_bytes(size, "little")
                            for _ in range(0, length, size))

    # --- helpers for models ---

    def fifo_entry_bits(self, offset: int) -> int | None:
        """Bits per entry if ``offset`` is a FIFO data register (for the bus's width check)."""
        spec = self._registers.get(offset)
        if spec is None or spec.fifo_entry_bits is None:
            return None
        bits = spec.fifo_entry_bits
        return getattr(self, bits)() if isinstance(bits, str) else bits

    @classmethod
    def register_map(cls) -> list[Register]:
        """The model's registers by offset (the ID registers a PrimeCell gets included)."""
        return list(cls._registers.values())

