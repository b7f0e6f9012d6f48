"""A plugin with a bug, to prove that a model's exception fails the test and not the guest."""

from __future__ import annotations

from cosim.api import Peripheral, Register, hookimpl


class Faulty(Peripheral):
    compatible = ("cosim,faulty",)

    GOOD = Register(0x0, reset=0x600D)
    BAD = Register(0x4, on_read="broken")
    START = Register(0x8, on_write="start_clock")

    def broken(self) -> int:
        return {}["no such key"]

    def start_clock(self, _value: int) -> None:
        self.start_host_thread(self.clock)

    def clock(self) -> None:
        raise ZeroDivisionError("the clock divided by zero")


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"faulty": Faulty}
