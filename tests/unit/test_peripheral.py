from __future__ import annotations

import pytest

from cosim.peripheral import Field, Peripheral, PeripheralError, Register


class Widget(Peripheral):
    irq_names = ("irq",)
    primecell_id = 0x00041234

    CTRL = Register(0x00, fields=[Field("EN", 0), Field("MODE", 4, 3), Field("LOCKED", 8, access="ro")],
                    on_write="ctrl_written")
    STATUS = Register(0x04, reset=0x3, fields=[Field("DONE", 0, access="w1c"), Field("ERR", 1, access="w1c")])
    COUNT = Register(0x08, access="ro", on_read="count")
    DATA = Register(0x0C, width=16, reset=0xBEEF)
    SECRET = Register(0x10, access="wo")

    def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
        super().__init__(*a, **k)
        self.writes: list[int] = []

    def ctrl_written(self, value: int) -> None:
        self.writes.append(value)

    def count(self) -> int:
        return 0x11223344


def test_reset_values_and_fields(make):
    w = make(Widget)
    assert w.read(0x04, 4) == 0x3
    assert w.regs.DATA.value == 0xBEEF
    w.regs.CTRL.MODE = 5
    assert w.regs.CTRL.value == 5 << 4
    assert w.regs.CTRL.MODE == 5


def test_read_only_fields_ignore_writes_and_callback_sees_written_value(make):
    w = make(Widget)
    w.write(0x00, 4, 0xFFFF_FFFF)
    assert w.read(0x00, 4) == 0x71  # EN and MODE only; LOCKED is read-only
    assert w.writes == [0xFFFF_FFFF]


def test_write_one_to_clear(make):
    w = make(Widget)
    w.write(0x04, 4, 0x1)
    assert w.read(0x04, 4) == 0x2


def test_on_read_computes_and_sub_word_reads_take_lanes(make):
    w = make(Widget)
    assert w.read(0x08, 4) == 0x11223344
    assert w.read(0x09, 1) == 0x33
    assert w.read(0x0A, 2) == 0x1122


def test_write_only_reads_zero_and_unmapped_is_counted(make):
    w = make(Widget)
    w.write(0x10, 4, 0x1234)
    assert w.read(0x10, 4) == 0
    assert w.read(0x100, 4) == 0
    w.write(0x104, 4, 1)
    assert w.unmapped_accesses == 2


def test_byte_write_merges_into_register(make):
    w = make(Widget)
    w.write(0x0D, 1, 0x12)
    assert w.regs.DATA.value == 0x12EF


def test_primecell_ids(make):
    w = make(Widget)
    ids = [w.read(0xFE0 + 4 * i, 4) for i in range(8)]
    assert ids == [0x34, 0x12, 0x04, 0x00, 0x0D, 0xF0, 0x05, 0xB1]


def test_overlapping_registers_are_refused():
    with pytest.raises(PeripheralError, match="overlap"):

        class Bad(Peripheral):
            A = Register(0x00)
            B = Register(0x02, width=16)


def test_missing_callback_is_refused(make):
    class Bad(Peripheral):
        A = Register(0x00, on_write="nowhere")

    with pytest.raises(PeripheralError, match="no method nowhere"):
        make(Bad)


def test_irq_sink_sees_only_changes(make, irqs):
    w = make(Widget)
    w.irq("irq").set(True)
    w.irq("irq").set(True)
    w.irq("irq").set(False)
    w.irq("irq").set(True)
    assert irqs.rises == {0: 2}
    assert irqs.levels[0] is True


def test_register_arrays_expand_and_pass_the_index(make):
    from cosim.peripheral import RegisterArray

    class Banked(Peripheral):
        STATUS = RegisterArray(0x100, count=4, stride=8, access="ro", on_read="status")
        CTRL = RegisterArray(0x104, count=4, stride=8, on_write="ctrl")

        def status(self, index: int) -> int:
            return 0x10 + index

        def ctrl(self, index: int, value: int) -> None:
            self.seen = (index, value)

    b = make(Banked)
    assert [b.read(0x100 + 8 * i, 4) for i in range(4)] == [0x10, 0x11, 0x12, 0x13]
    b.write(0x114, 4, 7)
    assert b.seen == (2, 7) and b.regs.CTRL2.value == 7
    assert [r.name for r in Banked.register_map()][:2] == ["STATUS0", "CTRL0"]


def test_an_exception_in_a_host_thread_is_reported_with_its_traceback(make):
    class Clocked(Peripheral):
        def tick(self, count: int) -> None:
            raise RuntimeError(f"tick {count} went wrong")

    model = make(Clocked)
    model.start_host_thread(model.tick, 3).join(timeout=5)
    assert len(model.host_failures) == 1
    assert model.host_failures[0].startswith("dut: host thread tick: RuntimeError: tick 3 went wrong")
    assert "Traceback" in model.host_failures[0]


class Gadget(Peripheral):
    """A register as a datasheet's bit table gives it: documented fields, a field callback,
    bits the model keeps but does not act on, and reserved bits."""

    CTRL = Register(0x00, fields=[
        Field("EN", 0, doc="enable", on_change="enable_changed"),
        Field("SPEED", 4, 2, doc="bus speed: the model runs at one speed", modelled=False)])

    def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
        super().__init__(*a, **k)
        self.changes: list[tuple[int, int]] = []

    def enable_changed(self, old: int, new: int) -> None:
        self.changes.append((old, new))


def test_field_callbacks_see_old_and_new_values_only_on_change(make):
    g = make(Gadget)
    g.write(0x00, 4, 1)
    g.write(0x00, 4, 1)
    g.write(0x00, 4, 0)
    assert g.changes == [(0, 1), (1, 0)]


def test_what_the_model_does_not_model_is_noted(make):
    g = make(Gadget)
    g.write(0x00, 4, 0x1 | 0x20)  # SPEED changes: kept, not acted on
    g.write(0x00, 4, 0x121)  # a reserved bit (SPEED as it was)
    g.read(0x40, 4)  # no register there
    g.write(0x40, 4, 7)
    assert g.notes.counts == {
        ("dut", "CTRL: unmodelled bits changed", 0x0): 1,
        ("dut", "CTRL: reserved bits set", 0x0): 1,
        ("dut", "read of an unmodelled register", 0x40): 1,
        ("dut", "write to an unmodelled register", 0x40): 1,
    }
    assert g.notes.summary() == "dut: 4"
    assert "dut: CTRL: reserved bits set at offset 0x0 (first value 0x121), 1 time(s)" in g.notes.lines()


def test_masks_come_from_the_declared_fields():
    assert Gadget.CTRL.mask("EN", "SPEED") == 0x31
    assert Gadget.CTRL.fields["SPEED"].doc == "bus speed: the model runs at one speed"


def test_a_missing_field_callback_is_an_error(make):
    class Broken(Peripheral):
        CTRL = Register(0x0, fields=[Field("EN", 0, on_change="nowhere")])

    with pytest.raises(PeripheralError, match="no method nowhere"):
        make(Broken)
