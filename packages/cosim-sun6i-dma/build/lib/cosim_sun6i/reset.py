"""The reset part of Allwinner's clock-control unit (``allwinner,sun6i-a31-clock-reset``), as
Linux's reset-simple drives it: one bit a reset line, active low — a cleared bit holds the block
behind that line in reset, a set bit releases it.  Every line starts asserted, so a block whose
driver never deasserts its reset stays deaf (the sun6i DMA driver deasserts it at probe)."""

from __future__ import annotations

from collections.abc import Callable

from cosim.api import Field, Peripheral, Register, ResetController

LINES = 32


class Sun6iReset(Peripheral, ResetController):
    compatible = ("allwinner,sun6i-a31-clock-reset",)
    reset_cells = 1

    RESET0 = Register(0x0, on_write="lines_written",
                      fields=[Field(f"LINE{n}", n, doc=f"reset line {n}: 0 held, 1 released")
                              for n in range(LINES)])

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.listeners: dict[int, list[Callable[[bool], None]]] = {}
        self.released = 0

    def connect_reset_output(self, line: int, on_change: Callable[[bool], None]) -> None:
        if not 0 <= line < LINES:
            raise ValueError(f"{self.name} has reset lines 0..{LINES - 1}, not {line}")
        self.listeners.setdefault(line, []).append(on_change)
        on_change(not self.released >> line & 1)

    def lines_written(self, value: int) -> None:
        changed, self.released = self.released ^ value, value
        for line, listeners in self.listeners.items():
            if changed >> line & 1:
                for on_change in listeners:
                    on_change(not value >> line & 1)
