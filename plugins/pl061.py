"""ARM PrimeCell GPIO (PL061): eight lines, as Linux's gpio-pl061 drives them.

GPIODATA is address-masked: an access at offset ``mask << 2`` reads or writes only the lines in
``mask``.  Lines set as outputs (GPIODIR) drive what is wired to them (platform ``gpios``: an SPI chip
select); the level of a line nobody drives is high (a pull-up), so an active-low select is
inactive until the guest drives it.  Inputs are set from the host with :meth:`Pl061.set_input`
and raise the interrupt the guest configured (edge or level, GPIOIS/IBE/IEV/IE).
"""

from __future__ import annotations

from collections.abc import Callable

from cosim.api import DtNode, GpioController, Peripheral, Register, RegisterArray, hookimpl

LINES = 8
ALL = (1 << LINES) - 1


class Pl061(Peripheral, GpioController):
    compatible = ("arm,pl061", "arm,primecell")
    primecell_id = 0x00041061
    irq_names = ("gpio",)
    gpio_lines = LINES

    DATA = RegisterArray(0x000, count=256, stride=4, width=8, on_read="read_data",
                         on_write="write_data")
    DIR = Register(0x400, width=8, on_write="drive_outputs")
    IS = Register(0x404, width=8, on_write="update_interrupt")
    IBE = Register(0x408, width=8, on_write="update_interrupt")
    IEV = Register(0x40C, width=8, on_write="update_interrupt")
    IE = Register(0x410, width=8, on_write="update_interrupt")
    RIS = Register(0x414, width=8, access="ro", on_read="raw_status")
    MIS = Register(0x418, width=8, access="ro", on_read="masked_status")
    IC = Register(0x41C, width=8, access="wo", on_write="clear_edges")
    AFSEL = Register(0x420, width=8)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.output_latch = 0  # what GPIODATA holds for the lines set as outputs
        self.inputs = ALL  # levels applied from outside (pulled up)
        self.edges = 0  # latched edge interrupts
        self.listeners: dict[int, list[Callable[[bool], None]]] = {}
        self.driven = self.levels()

    def levels(self) -> int:
        out = self.regs.DIR.value
        return (self.output_latch & out) | (self.inputs & ~out & ALL)

    def connect_gpio_output(self, line: int, on_change: Callable[[bool], None]) -> None:
        if not 0 <= line < LINES:
            raise ValueError(f"{self.name} has GPIO lines 0..{LINES - 1}, not {line}")
        self.listeners.setdefault(line, []).append(on_change)
        on_change(bool(self.levels() >> line & 1))

    def set_input(self, line: int, level: bool) -> None:
        """The host drives input ``line`` (a button, an interrupt from a device)."""
        with self.lock:
            before = self.levels()
            self.inputs = (self.inputs & ~(1 << line)) | (int(level) << line)
            self._changed(before)

    # --- registers ---

    def read_data(self, index: int) -> int:
        return self.levels() & index  # the address bits [9:2] mask the lines

    def write_data(self, index: int, value: int) -> None:
        before = self.levels()
        self.output_latch = (self.output_latch & ~index) | (value & index)
        self._changed(before)

    def drive_outputs(self, _value: int = 0) -> None:
        self._changed(self.driven)

    def _changed(self, before: int) -> None:
        now = self.levels()
        changed = before ^ now
        if not changed:
            self.update_interrupt()
            return
        rising, falling = changed & now, changed & ~now
        edge_mode = ~self.regs.IS.value
        both = self.regs.IBE.value
        wanted = (rising & (both | self.regs.IEV.value)) | (falling & (both | ~self.regs.IEV.value))
        self.edges |= wanted & edge_mode & ALL
        self.driven = now
        for line in range(LINES):
            if changed >> line & 1:
                for listener in self.listeners.get(line, ()):
                    listener(bool(now >> line & 1))
        self.update_interrupt()

    def raw_status(self) -> int:
        level_mode = self.regs.IS.value
        high = ~(self.levels() ^ self.regs.IEV.value)  # level matches the sense (IEV 1: high)
        return (self.edges | (level_mode & high)) & ALL

    def masked_status(self) -> int:
        return self.raw_status() & self.regs.IE.value

    def clear_edges(self, value: int) -> None:
        self.edges &= ~value
        self.update_interrupt()

    def update_interrupt(self, _value: int = 0) -> None:
        self.irq("gpio").set(bool(self.masked_status()))


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"pl061": Pl061}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode) -> None:
    if isinstance(peripheral, Pl061):
        node.set("interrupt-controller", True)
        node.set("#interrupt-cells", 2)
