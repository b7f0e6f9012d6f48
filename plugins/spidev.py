"""A device that Linux's spidev binds to, for user-space SPI (``/dev/spidevB.C``, spidev_test).

It answers nothing (MISO pulled up): tests run the controller in loopback or put a model of
their own at the chip select."""

from __future__ import annotations

from cosim.api import SpiDevice, hookimpl


class Spidev(SpiDevice):
    compatible = ("rohm,dh2228fv",)  # spidev binds only to devices it knows: the usual stand-in
    max_frequency = 12_000_000


@hookimpl
def cosim_spi_device_types() -> dict[str, type[SpiDevice]]:
    return {"spidev": Spidev}
