"""The harness end of the bridge: serves one peripheral's MMIO and IRQs for QEMU.

See protocol.py for the wire format and the deadlock rule.  One :class:`BridgeEndpoint` per
peripheral: it listens on a socket in the board's private folder, takes QEMU's two connections,
answers MMIO on its own thread and forwards IRQ changes.
"""

from __future__ import annotations

import contextlib
import itertools
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


class BridgeEndpoint:
    """Implements IrqSink for its peripheral; serves QEMU's requests once started."""

    def __init__(self, name: str, socket_path: Path, on_failure: Callable[[BridgeFailure], None],
                 cpus: set[int] | None = None):
        self.name, self.socket_path = name, socket_path
        self.cpus = cpus  # serve on these CPUs: beside QEMU's vCPU thread, wake-ups are cheap
        self.on_failure = on_failure
        self.peripheral: Peripheral | None = None
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
        self._reply_irqs: list[bytes] = []
        self._serving = threading.local()
        self._thread = threading.Thread(target=self._run, name=f"cosim-bridge-{name}", daemon=True)
        self._closed = False

    def start(self, peripheral: Peripheral) -> None:
        self.peripheral = peripheral
        self._thread.start()

    # --- IrqSink ---

    def set_irq(self, line: int, level: bool) -> None:
        with self._irq_lock:
            change = p.encode_irq_change(line, int(level), next(self._irq_seq))
            if getattr(self._serving, "active", False):
                self._reply_irqs.append(change)  # rides on the MMIO reply
            elif self.async_ is None:
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
        sync, peripheral = self.sync, self.peripheral
        request, reply, encode_reply = p.REQUEST.unpack, p.REPLY.pack, b"".join
        read_op = p.Op.READ
        serving = self._serving
        while True:
            raw = sync.recv(64)
            if not raw:
                return  # QEMU closed the connection: it is exiting
            op, size, _cpu, seq, offset, data, _clock = request(raw)
            status, value = p.Status.OK, 0
            serving.active = True
            try:
                if op == read_op:
                    value = peripheral.read(offset, size)
                else:
                    peripheral.write(offset, size, data)
            except Exception as e:
                status = p.Status.BUS_ERROR
                kind = "read" if op == read_op else "write"
                self.on_failure(BridgeFailure(
                    self.name, f"plugin raised {type(e).__name__} on a {size}-byte {kind} at offset "
                    f"{offset:#x}; the guest saw a bus error", traceback.format_exc()))
            finally:
                serving.active = False
            with self._irq_lock:
                irqs, self._reply_irqs = self._reply_irqs, []
            if len(irqs) > 1:  # only the newest change of each line matters
                irqs = list({change[2:4]: change for change in irqs}.values())
            self.accesses += 1
            sync.send(encode_reply([reply(seq, status, len(irqs), 0, value), *irqs]))

    def close(self) -> None:
        self._closed = True
        for sock in (self.listener, self.sync, self.async_):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
