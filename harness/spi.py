"""Devices on an SPI bus: what sits behind an SPI controller model, one per chip select.

A platform puts them under their controller::

    - name: spi1
      plugin: pl022
      gpios: {cs: [[gpio0, 0]]}        # chip select 0 is GPIO line 0 (active low)
      devices:
        - {name: flash, model: spi-nor, reg: 0, properties: {image: boot.img}}

The controller shifts frames through :meth:`SpiDevice.exchange` (full duplex, MSB first) and
tells the device when its chip select goes active or inactive (:meth:`SpiDevice.select`): the
framing of every command a flash or sensor understands.  Plugins provide device models through
the ``cosim_spi_device_types`` hook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .devicetree import DtNode
from .trace import EventTrace


class SpiDevice:
    """A device behind an SPI controller (platform ``devices:``): the controller calls
    ``select(active)`` when its chip select changes and ``exchange(word, bits)`` for each frame,
    which returns the device's MISO word; its node goes under the controller's."""

    compatible: tuple[str, ...] = ()
    max_frequency = 1_000_000  # spi-max-frequency in the device tree: the SPI core's clock
    needs_chip_select = False  # True: commands are framed by the chip select (a flash)

    def __init__(self, name: str, properties: dict[str, Any] | None = None,
                 trace: EventTrace | None = None):
        self.name = name
        self.properties = dict(properties or {})
        self.trace = trace or EventTrace()
        self.selected = False

    def select(self, selected: bool) -> None:
        """The chip select went active (True) or inactive: a command begins or ends."""
        self.selected = selected

    def exchange(self, word: int, bits: int) -> int:
        """One frame of ``bits`` bits out of the controller; returns the frame shifted back."""
        return (1 << bits) - 1  # MISO pulled up: nothing drives it

    def exchange_words(self, words: list[int], bits: int) -> list[int]:
        """Frames back to back, with nothing between them (the chip select stays as it is); the
        answers in order.  A model whose answers follow from where it is in a command (a
        flash's data phase) may give them at once."""
        return [self.exchange(word, bits) for word in words]

    def device_tree(self, node: DtNode) -> None:
        """Adds what the device's binding needs beyond compatible, reg, spi-max-frequency."""

    def close(self) -> None:
        """The board is stopping: release host-side files."""

    def save(self, artifacts: Path) -> None:
        """After ``close()``: write what a person may want to look at into ``artifacts``."""
