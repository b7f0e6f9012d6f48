"""The harness end of the bridge, driven by a fake QEMU that speaks the wire protocol."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

import cosim
from cosim import protocol as p
from cosim.bridge import BridgeEndpoint, BridgeFailure
from cosim.bus import Bus
from cosim.peripheral import Field, Peripheral, PeripheralConfig, Register


class Doorbell(Peripheral):
    irq_names = ("ring", "other")

    RING = Register(0x0, fields=[Field("ON", 0)], on_write="ring")
    BOOM = Register(0x4, on_read="explode")

    def ring(self, _value: int) -> None:
        self.irq("ring").set(bool(self.regs.RING.ON))

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

    def access(self, op, offset, data=0, size=4):
        self.seq += 1
        self.sync.send(p.REQUEST.pack(op, size, 0, self.seq, offset, data, 0))
        raw = self.sync.recv(1024)
        seq, status, nirq, _, value = p.REPLY.unpack_from(raw)
        assert seq == self.seq
        changes = [p.IRQ_CHANGE.unpack_from(raw, p.REPLY.size + i * p.IRQ_CHANGE.size) for i in range(nirq)]
        return status, value, [(line, level, s) for _op, line, level, s in changes]


@pytest.fixture
def endpoint(tmp_path):
    failures: list[BridgeFailure] = []
    ep = BridgeEndpoint("bell", tmp_path / "bell.sock", failures.append)
    dev = Doorbell(PeripheralConfig("bell", 0, 0x1000, (112, 113)), Bus(), ep)
    ep.start(dev)
    ep.failures = failures
    yield ep
    ep.close()


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
    op, line, level, seq = p.IRQ_CHANGE.unpack(qemu.async_.recv(64))
    assert (op, line, level) == (p.Op.IRQ, 1, 1)
    assert seq > first_seq


def test_changes_before_qemu_connects_are_delivered(tmp_path):
    ep = BridgeEndpoint("bell", tmp_path / "bell.sock", lambda f: None)
    dev = Doorbell(PeripheralConfig("bell", 0, 0x1000, (112, 113)), Bus(), ep)
    dev.irq("other").set(True)
    ep.start(dev)
    try:
        qemu = FakeQemu(ep.socket_path)
        _op, line, level, _seq = p.IRQ_CHANGE.unpack(qemu.async_.recv(64))
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
    assert c["CosimIrqChange"] == p.IRQ_CHANGE.size
    assert c["CosimReply"] == p.REPLY.size  # the IRQ array is sized by a macro, counted apart
