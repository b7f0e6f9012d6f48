"""GPIO lines between models: a GPIO controller's output drives another model's input — an SPI
chip select, a reset line.

A platform wires them on the consumer, as the device-tree binding ``<name>-gpios`` does::

    - name: spi1
      plugin: pl022
      gpios: {cs: [[gpio0, 0]]}    # cs-gpios = <&gpio0 0 GPIO_ACTIVE_LOW>

The consumer declares ``gpio_input_names`` and receives each level change through
``Peripheral.gpio_input(name, index, level)``; the controller implements :class:`GpioController`.
Lines are active low in the device tree: ``level`` is the electrical level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

GPIO_ACTIVE_LOW = 1


class GpioController(Protocol):
    gpio_lines: int

    def connect_gpio_output(self, line: int, on_change: Callable[[bool], None]) -> None:
        """Calls ``on_change(level)`` now and whenever the line's level changes."""
        ...
