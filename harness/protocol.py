"""The cosim bridge wire protocol: the one place it is defined.

QEMU's ``cosim-bridge`` device (guest/qemu/cosim-bridge.c) and the harness speak it over two
``AF_UNIX``/``SOCK_SEQPACKET`` connections per bridged peripheral, both opened by QEMU to a socket
the harness listens on inside a private 0700 directory:

* the **sync** channel carries MMIO: QEMU's vCPU thread sends a request and blocks (holding the
  big QEMU lock) until the harness replies.  The reply carries the read data and every change the
  access caused — IRQ levels and deadlines, of this peripheral and of any other (a SPI
  controller's tick that makes the DMA controller finish a transfer raises the DMA's interrupt):
  so a clear-interrupt write never leaves a stale interrupt pending, and under virtual time QEMU
  never runs guest time on before it has applied what a model did.
  A write to a register the model declares ``posted`` (one whose write changes no interrupt, as
  an IOTLB invalidation) goes into the **posted-write ring** instead, and the vCPU goes on, as
  an interconnect's write buffer lets it: a file both map (``RING_HEADER``, then ``capacity``
  ``POSTED`` entries; host byte order), one for the board, QEMU adding at ``head`` and the
  harness serving from ``tail``.  The harness empties it, in order, before it serves any request
  on any bridge — QEMU waits for that answer holding its big lock, so nothing is added while the
  harness reads — so the models see the guest's accesses in the guest's order, and what posted
  writes changed rides on that answer.  A ``DRAIN`` request asks for just that: QEMU sends one
  when the ring is full, and from its main loop when posted writes waited 10 ms of host time
  for an access.
* the **async** channel carries IRQ level changes that happen outside an MMIO access (a worker
  thread finishing a DMA, host data arriving at a UART), and wake-ups.  QEMU's main loop applies
  them.

Time: every request carries QEMU's virtual clock (``QEMU_CLOCK_VIRTUAL``, ns), the guest's own
time.  A reply carries the new next deadline (or none) of each peripheral whose deadline changed;
QEMU arms a virtual-clock timer per peripheral, and when one expires sends a ``TICK`` request on
that peripheral's sync channel, served like an MMIO access.  A ``WAKE`` on the async channel
asks for a tick now: work scheduled from outside an access (host input to a UART) enters at the
guest's current time.

Peripherals are numbered on the board (QEMU's ``index`` property of each bridge).  Every IRQ
change carries a sequence number taken from one counter per peripheral; QEMU ignores a change
older than the newest it has applied to that line, so the two channels cannot reorder a line's
level.

Deadlock rule: while answering a sync request the harness must never wait for anything QEMU's main
loop must do.  DMA therefore goes through the shared guest-RAM file, never through QEMU.

All integers are little-endian.  ``VERSION`` changes whenever a layout below changes; QEMU and the
harness compare it in the handshake and refuse to talk on a mismatch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = 0x4D495343  # "CSIM"
VERSION = 6

# Handshake, QEMU -> harness, first message on each connection:
#   u32 magic, u16 version, u16 channel, u32 qemu pid, u32 reserved, char name[64] (NUL padded)
HELLO = struct.Struct("<IHHII64s")
# Handshake answer, harness -> QEMU: u32 magic, u16 version, u16 status, u32 irq count, u32 reserved
HELLO_ACK = struct.Struct("<IHHII")

# MMIO request, QEMU -> harness (sync channel):
#   u8 op, u8 size, u16 cpu, u32 seq, u64 offset, u64 data (writes), i64 virtual clock in ns
REQUEST = struct.Struct("<BBHIQQq")
# (A TICK request has offset, size and data 0.)
# Reply, harness -> QEMU: u32 seq, u8 status, u8 reserved, u16 change count, u64 data, then that
# many CHANGE records.
REPLY = struct.Struct("<IBxHQ")
# A change, 16 bytes (in a reply, or alone on the async channel):
#   u16 op, u16 peripheral index, u16 line, u16 level, i64 value
#   Op.IRQ: line, level, value = sequence number; Op.DEADLINE: value = the next deadline on the
#   virtual clock in ns, NO_DEADLINE for none; Op.WAKE (async only): tick this peripheral now.
CHANGE = struct.Struct("<HHHHq")
NO_DEADLINE = -1

MAX_IRQS_PER_PERIPHERAL = 32
MAX_CHANGES_PER_REPLY = 256  # QEMU's receive buffer

# The posted-write ring: u64 head (entries QEMU wrote), u64 tail (entries the harness served),
# u32 capacity, u32 entry size, 40 bytes reserved; then the entries, each
#   u16 bridge index, u8 size, 5 bytes reserved, u64 offset, u64 data, i64 virtual clock in ns
RING_HEADER = struct.Struct("=QQII40x")
POSTED = struct.Struct("=HB5xQQq")
RING_CAPACITY = 4096  # posted writes the ring holds before QEMU asks for a drain


class Channel(IntEnum):
    SYNC = 0
    ASYNC = 1


class Op(IntEnum):
    READ = 1
    WRITE = 2
    IRQ = 3
    TICK = 4  # QEMU -> harness, sync: the peripheral's deadline came
    WAKE = 5  # harness -> QEMU, async: tick now
    DEADLINE = 6  # harness -> QEMU: a peripheral's next deadline
    DRAIN = 8  # QEMU -> harness, sync: serve the posted-write ring (the ring full, or a timeout)


class Status(IntEnum):
    OK = 0
    BUS_ERROR = 1  # QEMU turns it into MEMTX_ERROR: a synchronous external abort in the guest


class HelloStatus(IntEnum):
    OK = 0
    VERSION_MISMATCH = 1
    UNKNOWN_PERIPHERAL = 2


class ProtocolError(RuntimeError):
    """The other side broke the protocol, or speaks another version of it."""


@dataclass(frozen=True)
class Hello:
    version: int
    channel: Channel
    pid: int
    name: str

    @classmethod
    def decode(cls, raw: bytes) -> Hello:
        if len(raw) != HELLO.size:
            raise ProtocolError(f"handshake of {len(raw)} bytes, expected {HELLO.size}")
        magic, version, channel, pid, _, name = HELLO.unpack(raw)
        if magic != MAGIC:
            raise ProtocolError(f"bad handshake magic {magic:#x}: not a cosim-bridge peer")
        return cls(version, Channel(channel), pid, name.rstrip(b"\0").decode())


def encode_hello_ack(status: HelloStatus, irq_count: int = 0) -> bytes:
    return HELLO_ACK.pack(MAGIC, VERSION, status, irq_count, 0)


def encode_irq_change(index: int, line: int, level: int, seq: int) -> bytes:
    return CHANGE.pack(Op.IRQ, index, line, level, seq)


def encode_deadline(index: int, deadline: int | None) -> bytes:
    """``deadline`` None is none; a negative one (work for the next tick) is 0, a time QEMU has
    passed, so its timer fires at once."""
    if deadline is None:
        return CHANGE.pack(Op.DEADLINE, index, 0, 0, NO_DEADLINE)
    return CHANGE.pack(Op.DEADLINE, index, 0, 0, max(deadline, 0))


def encode_wake(index: int) -> bytes:
    return CHANGE.pack(Op.WAKE, index, 0, 0, 0)


def stale_build_message(qemu_version: int) -> str:
    return (
        f"QEMU's cosim-bridge speaks protocol v{qemu_version}, this harness v{VERSION}: "
        "the QEMU build is stale. Run `cosim build` to rebuild it."
    )
