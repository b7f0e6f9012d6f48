from cosim.api import Peripheral, Register, hookimpl


class Answer(Peripheral):
    compatible = ("acme,answer",)
    VALUE = Register(0x0, access="ro", reset=42)


@hookimpl
def cosim_peripheral_types():
    return {"acme-answer": Answer}
