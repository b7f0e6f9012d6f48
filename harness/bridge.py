"""The harness end of the bridge: serves one peripheral's MMIO and IRQs for QEMU.

See protocol.py for the wire format and the deadlock rule.  One :class:`BridgeEndpoint` per
peripheral: it listens on a socket in the board's private folder, takes QEMU's two connections,
answers MMIO on its own thread and forwards IRQ changes.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import mmap
import os
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import protocol as p

if TYPE_CHECKING:
    from .peripheral import Peripheral

ACCEPT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BridgeFailure:
    peripheral: str
    message: str
    traceback: str = ""


class PostedRing:
    """The board's posted-write ring (see protocol.py), a file QEMU maps too: QEMU adds the writes
    to posted registers, and the endpoint answering any request serves them first."""

    def __init__(self, path: Path, capacity: int = p.RING_CAPACITY):
        self.path, self.capacity = path, capacity
        with open(path, "wb") as f:
            f.write(p.RING_HEADER.pack(0, 0, capacity, p.POSTED.size) + bytes(capacity * p.POSTED.size))
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        self.served = 0  # posted writes served, all bridges

    def take(self) -> tuple[list[int], list[int], list[int], list[int], list[int]] | None:
        """The writes QEMU added since the last take, in order, as columns (bridge index, size,
        offset, data, virtual clock), None if there are none; the ring is empty again."""
        head, tail, _, _ = p.RING_HEADER.unpack_from(self._map)
        if head == tail:
            return None
        first, size, entries = tail % self.capacity, p.POSTED.size, p.RING_HEADER.size
        raw = self._map[entries + first * size:entries + min(first + head - tail, self.capacity) * size]
        if first + head - tail > self.capacity:  # it wrapped
            raw += self._map[entries:entries + (first + head - tail - self.capacity) * size]
        words, signed = array.array("Q", raw), array.array("q", raw)  # 4 words an entry
        heads = words[0::4].tolist()
        p.RING_HEADER.pack_into(self._map, 0, head, head, self.capacity, size)
        self.served += head - tail
        return ([h & 0xFFFF for h in heads], [h >> 16 & 0xFF for h in heads], words[1::4].tolist(),
                words[2::4].tolist(), signed[3::4].tolist())

    def close(self) -> None:
        self._map.close()


class Replies:
    """A board's endpoints answer QEMU one at a time (QEMU holds its big lock while it waits), so
    whatever any model changes while one answers — another model's interrupt, another model's
    deadline, the posted writes it serves first — rides on that answer, applied before the guest
    runs on."""

    def __init__(self, ring: PostedRing | None = None) -> None:
        self.endpoints: list[BridgeEndpoint] = []
        self._local = threading.local()
        self.ring = ring

    def collecting(self) -> list[bytes] | None:
        """The answer being put together on this thread, if this thread is answering QEMU."""
        return getattr(self._local, "changes", None)

    def begin(self) -> list[bytes]:
        self._local.changes = []
        return self._local.changes

    def end(self) -> None:
        self._local.changes = None

    def deadline_changes(self) -> list[bytes]:
        """A DEADLINE change for each peripheral whose next deadline is not the one QEMU has."""
        out = []
        for endpoint in self.endpoints:
            if endpoint.peripheral is None:
                continue
            deadline = endpoint.peripheral.scheduled_work.next_deadline()
            if deadline != endpoint.qemu_deadline:
                endpoint.qemu_deadline = deadline
                out.append(p.encode_deadline(endpoint.index, deadline))
        return out


def serve_posted(replies: Replies, changes: list[bytes]) -> None:
    """Serves the ring's posted writes in the guest's order, each run of writes to one register
    of one peripheral in one go."""
    assert replies.ring is not None
    taken = replies.ring.take()
    if taken is None:
        return
    indexes, sizes, offsets, values, vclocks = taken
    endpoints = {endpoint.index: endpoint for endpoint in replies.endpoints}
    start, count = 0, len(indexes)
    while start < count:
        key, rest = (indexes[start], sizes[start], offsets[start]), count - start
        if indexes[start:] == [key[0]] * rest and sizes[start:] == [key[1]] * rest \
                and offsets[start:] == [key[2]] * rest:
            end = count  # the rest is one run: a driver's invalidation loop
        else:
            end = start + 1
            while end < count and (indexes[end], sizes[end], offsets[end]) == key:
                end += 1
        endpoint = endpoints.get(key[0])
        if endpoint is None or endpoint.peripheral is None:
            raise p.ProtocolError(f"a posted write for bridge {key[0]}, which is not on this board")
        endpoint.serve_posted_run(key[1], key[2], values[start:end], vclocks[start:end], changes)
        start = end


class BridgeEndpoint:
    """Implements IrqSink for its peripheral; serves QEMU's requests once started.  ``index``
    numbers the peripheral on the board (QEMU's bridge has the same); ``replies`` is shared by
    the board's endpoints."""

    def __init__(self, name: str, socket_path: Path, on_failure: Callable[[BridgeFailure], None],
                 cpus: set[int] | None = None, index: int = 0, replies: Replies | None = None):
        self.name, self.socket_path, self.index = name, socket_path, index
        self.cpus = cpus  # serve on these CPUs: beside QEMU's vCPU thread, wake-ups are cheap
        self.on_failure = on_failure
        self.replies = replies or Replies()
        self.replies.endpoints.append(self)
        self.peripheral: Peripheral | None = None
        self.qemu_deadline: int | None = None  # the deadline QEMU's timer has for this peripheral
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(str(socket_path))
        self.listener.listen(2)
        self.listener.settimeout(ACCEPT_TIMEOUT_S)
        self.sync: socket.socket | None = None
        self.async_: socket.socket | None = None
        self.accesses = 0
        self._irq_lock = threading.Lock()
        self._irq_seq = itertools.count(1)
        self._pending_async: list[bytes] = []  # changes made before QEMU connected
        self._thread = threading.Thread(target=self._run, name=f"cosim-bridge-{name}", daemon=True)
        self._closed = False

    def start(self, peripheral: Peripheral) -> None:
        self.peripheral = peripheral
        peripheral.scheduled_work.on_earlier = self._wake
        self._thread.start()

    def _wake(self) -> None:
        """Work was scheduled ahead of the deadline QEMU knows.  While an endpoint answers, its
        answer carries the new deadline; otherwise ask QEMU for a tick now."""
        if self.replies.collecting() is None:
            self._send_or_keep(p.encode_wake(self.index))

    # --- IrqSink ---

    def set_irq(self, line: int, level: bool) -> None:
        with self._irq_lock:
            change = p.encode_irq_change(self.index, line, int(level), next(self._irq_seq))
        changes = self.replies.collecting()
        if changes is not None:
            changes.append(change)  # rides on the answer QEMU waits for
        else:
            self._send_or_keep(change)

    def _send_or_keep(self, change: bytes) -> None:
        with self._irq_lock:
            if self.async_ is None:
                self._pending_async.append(change)
            else:
                self._send_async(change)

    def _send_async(self, change: bytes) -> None:
        assert self.async_ is not None
        with contextlib.suppress(OSError):  # QEMU is gone; the board reports its exit
            self.async_.send(change)

    # --- serving ---

    def _accept(self) -> tuple[socket.socket, p.Hello]:
        conn, _ = self.listener.accept()
        conn.settimeout(ACCEPT_TIMEOUT_S)
        hello = p.Hello.decode(conn.recv(p.HELLO.size + 1))
        if hello.version != p.VERSION:
            conn.send(p.encode_hello_ack(p.HelloStatus.VERSION_MISMATCH))
            conn.close()
            raise p.ProtocolError(p.stale_build_message(hello.version))
        if hello.name != self.name:
            conn.send(p.encode_hello_ack(p.HelloStatus.UNKNOWN_PERIPHERAL))
            conn.close()
            raise p.ProtocolError(f"QEMU connected as '{hello.name}' to the socket of '{self.name}'")
        conn.settimeout(None)
        return conn, hello

    def _run(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)  # this thread only
        try:
            for _ in range(2):
                conn, hello = self._accept()
                conn.send(p.encode_hello_ack(p.HelloStatus.OK, len(self.peripheral.irqs)))
                if hello.channel == p.Channel.SYNC:
                    self.sync = conn
                    continue
                with self._irq_lock:  # after the handshake answer: QEMU reads that first
                    self.async_ = conn
                    for change in self._pending_async:
                        self._send_async(change)
                    self._pending_async.clear()
            self._serve()
        except (OSError, p.ProtocolError) as e:
            if not self._closed:
                self.on_failure(BridgeFailure(self.name, f"bridge: {e}"))

    def _serve(self) -> None:
        assert self.sync is not None and self.peripheral is not None
        sync, peripheral, replies = self.sync, self.peripheral, self.replies
        reply, encode_reply = p.REPLY.pack, b"".join
        read_op, write_op, tick_op = p.Op.READ, p.Op.WRITE, p.Op.TICK
        clock, timers, lock = peripheral.guest_clock, peripheral.scheduled_work, peripheral.lock
        while True:
            raw = sync.recv(2 * p.REQUEST.size)
            if not raw:
                return  # QEMU closed the connection: it is exiting
            if len(raw) != p.REQUEST.size:
                raise p.ProtocolError(f"a request of {len(raw)} bytes, not {p.REQUEST.size}")
            op, size, _cpu, seq, offset, data, vclock = p.REQUEST.unpack(raw)
            status, value = p.Status.OK, 0
            changes = replies.begin()
            try:
                if replies.ring is not None:
                    serve_posted(replies, changes)  # the guest wrote them before this access
                try:
                    with lock:
                        if op == tick_op:
                            self.qemu_deadline = None  # QEMU's timer for this peripheral expired
                        timers.run_due(clock, clock.seen(vclock))  # what was due comes first
                        if op == read_op:
                            value = peripheral.read(offset, size)
                        elif op == write_op:
                            peripheral.write(offset, size, data)
                except Exception as e:
                    status = p.Status.BUS_ERROR
                    self._model_raised(e, op, size, offset, clock.now_ns)
                self.accesses += op in (read_op, write_op)
                with lock:  # the deadlines as this answer leaves them: QEMU keeps only those
                    changes += replies.deadline_changes()
            finally:
                replies.end()
            if len(changes) > 1:  # only the newest change of each line (and deadline) matters
                changes = list({change[:6]: change for change in changes}.values())
            if len(changes) > p.MAX_CHANGES_PER_REPLY:
                self.on_failure(BridgeFailure(self.name, f"{len(changes)} IRQ and deadline changes in "
                                              f"one answer; QEMU takes {p.MAX_CHANGES_PER_REPLY}"))
                changes = changes[-p.MAX_CHANGES_PER_REPLY:]
            sync.send(encode_reply([reply(seq, status, len(changes), value), *changes]))

    def serve_posted_run(self, size: int, offset: int, values: list[int], vclocks: list[int],
                         changes: list[bytes]) -> None:
        """Posted writes to one of this peripheral's registers, in a row: in one call to the model
        up to any scheduled work falling due between them (which runs between), each run at its
        first write's time; a write that changes the peripheral's interrupt is a failure."""
        peripheral = self.peripheral
        assert peripheral is not None
        clock, timers, lock = peripheral.guest_clock, peripheral.scheduled_work, peripheral.lock
        start, count = 0, len(values)
        while start < count:
            end = start + 1
            try:
                with lock:
                    timers.run_due(clock, clock.seen(vclocks[start]))
                    before = len(changes)  # what the writes change, not the work that fell due
                    due = timers.next_deadline()
                    if due is None or vclocks[-1] < due:
                        end = count
                    else:
                        while end < count and vclocks[end] < due:
                            end += 1
                    peripheral.write_many(offset, size, values[start:end])
                    clock.seen(vclocks[end - 1])
            except Exception as e:
                self._model_raised(e, None, size, offset, clock.now_ns)
            else:
                self._check_posted(offset, changes, before)
            self.accesses += end - start
            start = end

    def _check_posted(self, offset: int, changes: list[bytes], since: int) -> None:
        """A posted write must not change its own peripheral's interrupt: the vCPU went on."""
        own_irq = p.CHANGE.pack(p.Op.IRQ, self.index, 0, 0, 0)[:4]
        if any(change[:4] == own_irq for change in changes[since:]):
            self.on_failure(BridgeFailure(
                self.name, f"a write to offset {offset:#x}, declared posted, changed an "
                "interrupt line: the vCPU did not wait for it; declare the register "
                "without posted"))

    def _model_raised(self, error: Exception, op: int | None, size: int, offset: int, now_ns: int) -> None:
        """``op`` None: a posted write."""
        if op in (p.Op.READ, p.Op.WRITE):
            kind = "read" if op == p.Op.READ else "write"
            what = f"on a {size}-byte {kind} at offset {offset:#x}; the guest saw a bus error"
        elif op is None:
            what = f"on a posted {size}-byte write at offset {offset:#x} (the guest did not wait for it)"
        else:
            what = f"in work scheduled on the guest's clock (at {now_ns} ns)"
        self.on_failure(BridgeFailure(self.name, f"plugin raised {type(error).__name__} {what}",
                                      traceback.format_exc()))

    def close(self) -> None:
        self._closed = True
        for sock in (self.listener, self.sync, self.async_):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
