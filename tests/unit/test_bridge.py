"""The harness end of the bridge, driven by a fake QEMU that speaks the wire protocol."""

from __future__ import annotations

import mmap
import re
import socket
import threading
from pathlib import Path

import pytest

import cosim
from cosim import protocol as p
from cosim.bridge import BridgeEndpoint, BridgeFailure, PostedRing, Replies
from cosim.bus import Bus
from cosim.clock import GuestClock
from cosim.peripheral import Field, Peripheral, PeripheralConfig, Register


class Doorbell(Peripheral):
    irq_names = ("ring", "other")

    RING = Register(0x0, fields=[Field("ON", 0)], on_write="ring")
    BOOM = Register(0x4, on_read="explode")
    LATER = Register(0x8, on_write="ring_later", doc="raise 'other' this many ns from now")
    RUNG = Register(0xC, access="ro", on_read="rung_at")
    NEXT = Register(0x10, on_write="ring_next_tick", doc="raise 'other' at the next tick")
    FORGET = Register(0x14, access="wo", on_write="forget", posted=True)
    BAD_POSTED = Register(0x18, on_write="ring_at_once", posted=True, doc="posted, yet it rings")

    def forget(self, value: int) -> None:
        self.forgotten = value
        self.forgets = [*getattr(self, "forgets", []), (value, self.now(), hasattr(self, "rang"))]

    def ring_at_once(self, _value: int) -> None:
        self.ring_other()

    def ring(self, _value: int) -> None:
        self.irq("ring").set(bool(self.regs.RING.ON))

    def ring_later(self, delay: int) -> None:
        self.after(delay, self.ring_other)

    def ring_next_tick(self, _value: int) -> None:
        self.soon(self.ring_other)

    def ring_other(self) -> None:
        self.rang = self.now()
        self.irq("other").set(True)

    def rung_at(self) -> int:
        return getattr(self, "rang", 0)

    def explode(self) -> int:
        raise ZeroDivisionError("model bug")


class FakeQemu:
    def __init__(self, path, name="bell", version=p.VERSION):
        self.seq = 0
        self.sync = self._connect(path, name, version, p.Channel.SYNC)
        self.async_ = self._connect(path, name, version, p.Channel.ASYNC) if self.sync else None

    @staticmethod
    def _connect(path, name, version, channel):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(5)
        s.connect(str(path))
        s.send(p.HELLO.pack(p.MAGIC, version, channel, 1234, 0, name.encode()))
        magic, _version, status, _irqs, _ = p.HELLO_ACK.unpack(s.recv(64))
        assert magic == p.MAGIC
        return s if status == p.HelloStatus.OK else None

    def access(self, op, offset, data=0, size=4, clock=0):
        status, value, irqs, _ = self.exchange(op, offset, data, size, clock)
        return status, value, irqs

    def exchange(self, op, offset=0, data=0, size=4, clock=0):
        """One request at virtual time ``clock``: (status, value, this peripheral's IRQ changes,
        its new deadline: None if unchanged)."""
        status, value, changes = self.request(op, offset, data, size, clock)
        irqs = [(line, level, seq) for o, i, line, level, seq in changes if o == p.Op.IRQ and i == 0]
        deadlines = [d for o, i, _, _, d in changes if o == p.Op.DEADLINE and i == 0]
        return status, value, irqs, deadlines[-1] if deadlines else None

    def request(self, op, offset=0, data=0, size=4, clock=0):
        """(status, value, every change in the answer as (op, index, line, level, value))."""
        self.seq += 1
        self.sync.send(p.REQUEST.pack(op, size, 0, self.seq, offset, data, clock))
        raw = self.sync.recv(65536)
        seq, status, count, value = p.REPLY.unpack_from(raw)
        assert seq == self.seq and len(raw) == p.REPLY.size + count * p.CHANGE.size
        return status, value, [p.CHANGE.unpack_from(raw, p.REPLY.size + i * p.CHANGE.size)
                               for i in range(count)]


def post(ring: PostedRing, offset: int, data: int, vclock: int = 0, index: int = 0, size: int = 4) -> None:
    """What QEMU does with a write to a posted register: an entry in the ring, no message."""
    with open(ring.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        head, tail, capacity, entry = p.RING_HEADER.unpack_from(m)
        assert head - tail < capacity
        p.POSTED.pack_into(m, p.RING_HEADER.size + head % capacity * entry, index, size, offset, data, vclock)
        p.RING_HEADER.pack_into(m, 0, head + 1, tail, capacity, entry)


@pytest.fixture
def endpoint(tmp_path):
    failures: list[BridgeFailure] = []
    ring = PostedRing(tmp_path / "posted-ring", capacity=8)
    ep = BridgeEndpoint("bell", tmp_path / "bell.sock", failures.append, replies=Replies(ring))
    dev = Doorbell(PeripheralConfig("bell", 0, 0x1000, (112, 113)), Bus(), ep)
    ep.start(dev)
    ep.failures, ep.ring = failures, ring
    yield ep
    ep.close()
    ring.close()


def test_irq_changes_ride_on_the_mmio_reply(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    status, _, irqs = qemu.access(p.Op.WRITE, 0x0, 1)
    assert status == p.Status.OK
    assert [(line, level) for line, level, _ in irqs] == [(0, 1)]
    status, value, irqs = qemu.access(p.Op.READ, 0x0)
    assert (value, irqs) == (1, [])
    _, _, irqs = qemu.access(p.Op.WRITE, 0x0, 0)
    assert [(line, level) for line, level, _ in irqs] == [(0, 0)]


def test_irq_changes_outside_mmio_use_the_async_channel_with_rising_sequence(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    _, _, [(_, _, first_seq)] = qemu.access(p.Op.WRITE, 0x0, 1)
    endpoint.peripheral.irq("other").set(True)
    op, index, line, level, seq = p.CHANGE.unpack(qemu.async_.recv(64))
    assert (op, index, line, level) == (p.Op.IRQ, 0, 1, 1)
    assert seq > first_seq


def test_scheduled_work_runs_in_a_tick_at_its_deadline_with_its_irq_on_the_reply(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    *_, deadline = qemu.exchange(p.Op.WRITE, 0x8, 5_000, clock=1_000_000)
    assert deadline == 1_005_000  # the reply tells QEMU when to tick
    _, _, irqs, deadline = qemu.exchange(p.Op.TICK, clock=1_005_000)
    assert [(line, level) for line, level, _ in irqs] == [(1, 1)] and deadline is None  # none left
    assert qemu.access(p.Op.READ, 0xC, clock=1_006_000)[1] == 1_005_000
    assert endpoint.accesses == 2  # ticks are not MMIO accesses


def test_an_access_after_a_missed_deadline_sees_the_work_done_first(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    qemu.exchange(p.Op.WRITE, 0x8, 5_000, clock=1_000_000)
    _, value, irqs, _ = qemu.exchange(p.Op.READ, 0xC, clock=2_000_000)  # no tick came in between
    assert value == 1_005_000 and [(line, level) for line, level, _ in irqs] == [(1, 1)]


def test_work_scheduled_outside_an_access_asks_qemu_for_a_tick(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    qemu.access(p.Op.READ, 0x0, clock=7_000)
    with endpoint.peripheral.lock:
        endpoint.peripheral.soon(endpoint.peripheral.ring_other)  # host input, say
    assert qemu.async_.recv(64) == p.encode_wake(0)
    _, _, irqs, _ = qemu.exchange(p.Op.TICK, clock=9_000)
    assert [(line, level) for line, level, _ in irqs] == [(1, 1)]
    assert qemu.access(p.Op.READ, 0xC, clock=9_500)[1] == 9_000  # it ran at the tick's time


def test_work_for_the_next_tick_gets_a_deadline_qemu_fires_at_once(endpoint):
    """``soon()`` during an access: the reply's deadline must be a time QEMU has passed (never
    the value meaning "no deadline"), so the work runs in the very next tick."""
    qemu = FakeQemu(endpoint.socket_path)
    _, _, _, deadline = qemu.exchange(p.Op.WRITE, 0x10, 1, clock=3_000)
    assert deadline is not None and deadline != p.NO_DEADLINE and deadline <= 3_000
    _, _, irqs, deadline = qemu.exchange(p.Op.TICK, clock=3_100)
    assert [(line, level) for line, level, _ in irqs] == [(1, 1)] and deadline is None


def test_another_models_irq_and_deadline_changed_in_an_answer_ride_on_it(tmp_path):
    """A tick of one model that makes another raise its interrupt and schedule work: QEMU must
    have both before the guest's time runs on (under virtual time an async change comes late)."""
    replies = Replies()
    one = BridgeEndpoint("bell", tmp_path / "one.sock", lambda f: None, index=0, replies=replies)
    two = BridgeEndpoint("bell2", tmp_path / "two.sock", lambda f: None, index=1, replies=replies)
    lock, clock = threading.RLock(), GuestClock()  # a board's models share both
    first = Doorbell(PeripheralConfig("bell", 0, 0x1000, (112, 113)), Bus(), one, lock=lock, clock=clock)
    second = Doorbell(PeripheralConfig("bell2", 0, 0x1000, (114, 115)), Bus(), two, lock=lock, clock=clock)
    first.ring = lambda _value: (second.irq("ring").set(True), second.after(500, second.ring_other))
    one.start(first)
    two.start(second)
    try:
        qemu = FakeQemu(one.socket_path)
        FakeQemu(two.socket_path, name="bell2")
        _, _, changes = qemu.request(p.Op.WRITE, 0x0, 1, clock=10_000)
        assert [(op, index, line, level) for op, index, line, level, _ in changes if op == p.Op.IRQ] \
            == [(p.Op.IRQ, 1, 0, 1)]
        assert (p.Op.DEADLINE, 1, 0, 0, 10_500) in changes
    finally:
        one.close()
        two.close()


def test_changes_before_qemu_connects_are_delivered(tmp_path):
    ep = BridgeEndpoint("bell", tmp_path / "bell.sock", lambda f: None)
    dev = Doorbell(PeripheralConfig("bell", 0, 0x1000, (112, 113)), Bus(), ep)
    dev.irq("other").set(True)
    ep.start(dev)
    try:
        qemu = FakeQemu(ep.socket_path)
        _op, _index, line, level, _seq = p.CHANGE.unpack(qemu.async_.recv(64))
        assert (line, level) == (1, 1)
    finally:
        ep.close()


def test_plugin_exception_is_a_bus_error_and_a_reported_failure(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    status, _, _ = qemu.access(p.Op.READ, 0x4)
    assert status == p.Status.BUS_ERROR
    [failure] = endpoint.failures
    assert "ZeroDivisionError" in failure.message and "offset 0x4" in failure.message
    assert "model bug" in failure.traceback and "explode" in failure.traceback
    status, _, _ = qemu.access(p.Op.READ, 0x0)  # the bridge keeps serving
    assert status == p.Status.OK


def test_posted_writes_are_served_in_order_before_the_next_request(endpoint):
    assert Doorbell.posted_offsets() == (0x14, 0x18)
    qemu = FakeQemu(endpoint.socket_path)
    for value in (10, 20, 30):
        post(endpoint.ring, 0x14, value)
    assert not hasattr(endpoint.peripheral, "forgotten")  # nothing reached the model yet
    status, _, irqs = qemu.access(p.Op.READ, 0x0)
    assert (status, irqs, endpoint.failures) == (p.Status.OK, [], [])
    assert [value for value, _, _ in endpoint.peripheral.forgets] == [10, 20, 30]
    assert endpoint.accesses == 4 and endpoint.ring.served == 3


def test_a_drain_request_serves_the_ring_and_the_ring_wraps(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    for round_ in range(3):  # 8 entries: the third round wraps past the end
        for value in range(5):
            post(endpoint.ring, 0x14, round_ * 10 + value)
        assert qemu.access(p.Op.DRAIN, 0)[0] == p.Status.OK
    assert [value for value, _, _ in endpoint.peripheral.forgets] == [
        r * 10 + v for r in range(3) for v in range(5)]


def test_posted_writes_run_work_falling_due_between_them_in_between(endpoint):
    """Writes to one register go to the model in one call only up to the model's next
    scheduled work: what falls due between two writes runs between them, each at its time."""
    qemu = FakeQemu(endpoint.socket_path)
    qemu.access(p.Op.WRITE, 0x8, 100, clock=1000)  # 'other' rings at 1100
    for value, vclock in ((10, 1050), (11, 1060), (12, 1200), (13, 1210)):
        post(endpoint.ring, 0x14, value, vclock)
    assert qemu.access(p.Op.DRAIN, 0, clock=1300)[0] == p.Status.OK
    assert endpoint.peripheral.rang == 1100
    assert [(value, rang) for value, _, rang in endpoint.peripheral.forgets] == [
        (10, False), (11, False), (12, True), (13, True)]
    assert endpoint.peripheral.forgets[2][1] >= 1200 and endpoint.accesses == 5
    assert endpoint.failures == []  # the ring came from the scheduled work, not a posted write


def test_a_posted_write_for_a_bridge_not_on_the_board_is_a_protocol_error(endpoint):
    done = threading.Event()
    endpoint.on_failure = lambda f: (endpoint.failures.append(f), done.set())
    qemu = FakeQemu(endpoint.socket_path)
    post(endpoint.ring, 0x14, 1, index=7)
    qemu.sync.send(p.REQUEST.pack(p.Op.DRAIN, 0, 0, 1, 0, 0, 0))
    assert done.wait(5)
    [failure] = endpoint.failures
    assert "a posted write for bridge 7, which is not on this board" in failure.message


def test_posted_writes_of_two_bridges_keep_the_guests_order(tmp_path):
    """One ring for the board: a request on either bridge serves both peripherals' posted
    writes first, in the order the guest made them."""
    failures: list[BridgeFailure] = []
    replies = Replies(PostedRing(tmp_path / "posted-ring"))
    ends = [BridgeEndpoint(name, tmp_path / f"{name}.sock", failures.append, index=i, replies=replies)
            for i, name in enumerate(("mmu", "dma"))]
    models = [Doorbell(PeripheralConfig(e.name, 0, 0x1000, (112, 113)), Bus(), e) for e in ends]
    order: list[str] = []
    for end, model in zip(ends, models, strict=True):
        model.forget = lambda value, name=end.name: order.append(f"{name}={value}")  # type: ignore[method-assign]
        end.start(model)
    try:
        dma = FakeQemu(ends[1].socket_path, "dma")
        for index, value in ((0, 1), (1, 2), (0, 3)):
            post(replies.ring, 0x14, value, index=index)
        assert dma.access(p.Op.READ, 0x0)[0] == p.Status.OK and failures == []
        assert order == ["mmu=1", "dma=2", "mmu=3"]
    finally:
        for end in ends:
            end.close()
        replies.ring.close()


def test_a_posted_write_that_changes_an_interrupt_is_a_failure(endpoint):
    qemu = FakeQemu(endpoint.socket_path)
    post(endpoint.ring, 0x18, 1)
    qemu.access(p.Op.DRAIN, 0)
    [failure] = endpoint.failures
    assert "offset 0x18, declared posted, changed an interrupt line" in failure.message


def test_a_read_only_register_cannot_be_posted():
    with pytest.raises(ValueError, match="a posted register is written"):
        Register(0x0, access="ro", posted=True)


def test_the_c_side_speaks_this_protocol():
    source = (Path(cosim.__file__).parent / "engines" / "qemu" / "cosim-bridge.c").read_text()
    assert f"#define COSIM_PROTOCOL_VERSION {p.VERSION}\n" in source
    for op in p.Op:
        assert f"OP_{op.name} = {op.value}," in source


def test_version_mismatch_names_the_stale_build(endpoint):
    done = threading.Event()
    endpoint.on_failure = lambda f: (endpoint.failures.append(f), done.set())
    assert FakeQemu(endpoint.socket_path, version=p.VERSION + 1).sync is None
    assert done.wait(5)
    [failure] = endpoint.failures
    assert "stale" in failure.message and "cosim build" in failure.message


def test_wrong_peripheral_name_is_refused(endpoint):
    done = threading.Event()
    endpoint.on_failure = lambda f: (endpoint.failures.append(f), done.set())
    assert FakeQemu(endpoint.socket_path, name="someone-else").sync is None
    assert done.wait(5)
    assert "someone-else" in endpoint.failures[0].message


def _c_struct_sizes() -> dict[str, int]:
    """Sizes of the packed structs in cosim-bridge.c, from its source."""
    source = (Path(cosim.__file__).parent / "engines" / "qemu" / "cosim-bridge.c").read_text()
    widths = {"uint8_t": 1, "uint16_t": 2, "uint32_t": 4, "uint64_t": 8, "int64_t": 8, "char": 1}
    sizes = {}
    for body, name in re.findall(r"typedef struct QEMU_PACKED \{(.*?)\} (\w+);", source, re.S):
        total = 0
        for ctype, count in re.findall(r"(\w+) \w+(?:\[(\w+)\])?;", body):
            n = 1 if not count else int(count) if count.isdigit() else 0
            total += widths.get(ctype, 0) * n
        sizes[name] = total
    return sizes


def test_wire_sizes_match_the_c_structs():
    c = _c_struct_sizes()
    assert c["CosimHello"] == p.HELLO.size
    assert c["CosimHelloAck"] == p.HELLO_ACK.size
    assert c["CosimRequest"] == p.REQUEST.size
    assert c["CosimChange"] == p.CHANGE.size
    assert c["CosimReply"] == p.REPLY.size  # the IRQ array is sized by a macro, counted apart
    assert c["CosimPosted"] == p.POSTED.size
    assert c["CosimRingHeader"] == p.RING_HEADER.size
