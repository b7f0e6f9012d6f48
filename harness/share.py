"""Large data in and out of the guest through guest RAM: ``board.push()`` and ``board.pull()``.

Guest RAM is a file the harness maps. The top ``SHARE_BYTES`` of it (an eighth on a board with less
than 256 MiB) are reserved in the device tree (``no-map``: the kernel never uses them) and given to
cosim's ``cosim_share`` guest driver, which shows them as ``/dev/cosim-share``. A push writes the
bytes there on the host and has the guest copy them out with ``head -c``; a pull has the guest write
a file there and reads it on the host — memory copies, no console traffic.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from .console import CommandResult
from .devicetree import DtNode, Ref, reg_cells

SHARE_BYTES = 32 << 20
GUEST_DEVICE = "/dev/cosim-share"


class GuestShare:
    def __init__(self, ram_base: int, ram_bytes: int):
        self.size = min(SHARE_BYTES, ram_bytes // 8)
        self.address = ram_base + ram_bytes - self.size
        self.offset = ram_bytes - self.size  # into the guest-RAM file
        self.memory: memoryview | None = None  # the region in the mapped guest RAM, once started

    def device_tree_nodes(self) -> list[DtNode]:
        region = DtNode("cosim-share", self.address, {"reg": reg_cells(self.address, self.size),
                                                      "no-map": True})
        reserved = DtNode("reserved-memory", None, {"#address-cells": 2, "#size-cells": 2,
                                                    "ranges": True}, [region])
        device = DtNode("cosim-share", None, {
            "compatible": "cosim,share",
            "memory-region": [Ref(f"/reserved-memory/{region.full_name}")]})
        return [reserved, device]

    def attach(self, ram: memoryview) -> None:
        self.memory = ram[self.offset:self.offset + self.size]

    def detach(self) -> None:
        """Before guest RAM is unmapped: no view of it may outlive the mapping."""
        if self.memory is not None:
            self.memory.release()
            self.memory = None

    def push(self, run: Callable[..., CommandResult], data: bytes | bytearray | Path, guest_path: str,
             timeout: float) -> None:
        payload = data.read_bytes() if isinstance(data, Path) else bytes(data)
        self._fits(len(payload), "push")
        assert self.memory is not None, "the board is not started"
        self.memory[:len(payload)] = payload
        run(f"head -c {len(payload)} {GUEST_DEVICE} > {shlex.quote(guest_path)}", timeout=timeout)

    def pull(self, run: Callable[..., CommandResult], guest_path: str, timeout: float) -> bytes:
        quoted = shlex.quote(guest_path)
        size = int(run(f"wc -c < {quoted}", timeout=timeout).output)
        self._fits(size, "pull")
        run(f"cat {quoted} > {GUEST_DEVICE}", timeout=timeout)
        assert self.memory is not None, "the board is not started"
        return bytes(self.memory[:size])

    def _fits(self, size: int, what: str) -> None:
        if size > self.size:
            raise ValueError(f"board.{what}() moves up to {self.size >> 20} MiB at a time, "
                             f"not {size} bytes")
