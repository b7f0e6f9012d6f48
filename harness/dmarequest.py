"""Peripheral DMA requests (DRQ): how a slave peripheral asks a DMA controller for service.

The wiring follows the device-tree binding ``dmas = <&dmac N>``: a platform names, for each of a
peripheral's ``dma_request_names``, the DMA controller and the cells of its specifier (as many
as the controller's ``dma_cells``; the controller maps them to a request line)::

    - name: uart1
      plugin: pl011
      dmas: {rx: [pl330, 0], tx: [pl330, 1]}

The peripheral then holds a :class:`DmaRequestPort` per name and signals on it, as the hardware
handshake does (PL330: drtype single/burst, drlast):

* ``port.single()`` — room or data for one beat;  ``port.burst()`` — for a whole burst;
* ``last=True`` — the final request of a transfer the peripheral controls the length of.

A peripheral moving data at a fixed rate may ask the controller how many single requests it
will serve in a row, each the same way (``port.standing()``), and then have a FIFO's worth
served at once (``port.serve(n)``): a model of a 12 MHz SPI wire then needs no tick per frame.

Requests are levels, as on the wires: one stays pending until the controller consumes it (a
channel's DMAWFP) or flushes it (DMAFLUSHP), or the peripheral withdraws it (``port.withdraw()``)
because it can no longer take or give data — a full TX FIFO, an empty RX FIFO.  The controller
calls the port's ``on_flush`` so that a peripheral still needing service asserts its request again,
as a real flush handshake makes it do.

Requests are delivered synchronously with the board-wide model lock held: a peripheral may call
``single()``/``burst()`` from a register callback or a host thread alike.
"""

from __future__ import annotations

from collections.abc import Callable

from .roles import DmaController


class DmaRequestPort:
    """One named request output of a peripheral, wired to one line of a DMA controller."""

    def __init__(self, name: str, target: DmaController, line: int):
        self.name, self.target, self.line = name, target, line
        self.on_flush: Callable[[], None] = lambda: None
        target.connect_request_line(line, lambda: self.on_flush())

    def single(self, last: bool = False) -> None:
        """Asserts a single request (``last``: the transfer's last one), as a peripheral's DRQ does."""
        self.target.dma_request(self.line, burst=False, last=last)

    def burst(self, last: bool = False) -> None:
        """Asserts a burst request: the FIFO has room (or data) for a whole burst."""
        self.target.dma_request(self.line, burst=True, last=last)

    def withdraw(self) -> None:
        """Takes back a request the controller has not served (the FIFO level moved back)."""
        self.target.dma_request_withdraw(self.line)

    def standing(self, burst: bool = False) -> int:
        """Single (or burst) requests the controller has promised to serve in a row (see
        ``DmaController.standing_order``): a peripheral may move that many with ``serve``."""
        return self.target.standing_order(self.line, burst)

    def serve(self, count: int, burst: bool = False) -> int:
        """Has the controller serve ``count`` single (or burst) requests at once (at most
        ``standing()``): one bus transfer instead of a request, a load and a store each."""
        return self.target.serve_requests(self.line, count, burst)

    def drive(self, active: bool, burst: bool = False) -> None:
        """Sets the request lines as a peripheral's FIFO logic does: withdrawn when not
        ``active``, else a burst request when ``burst``, else a single one."""
        if not active:
            self.withdraw()
        elif burst:
            self.burst()
        else:
            self.single()
