"""A plugin with a bug, to prove that a model's exception fails the test and not the guest."""

from __future__ import annotations

from cosim.api import Peripheral, Register, hookimpl


class Faulty(Peripheral):
    compatible = ("cosim,faulty",)

    GOOD = Register(0x0, reset=0x600D)
    BAD = Register(0x4, on_read="broken")

    def broken(self) -> int:
        return {}["no such key"]


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"faulty": Faulty}
