"""SPI NOR flash with the classic command set (ST M25P80: 1 MiB, 64 KiB sectors, 256-byte pages),
as Linux's spi-nor core identifies and programs it.

Commands framed by the chip select:

=====  ===========================  ===================================================
0x9F   RDID   read identification   JEDEC manufacturer, type, capacity
0x05   RDSR   read status           bit 0 WIP (never set: operations finish at once),
                                    bit 1 WEL, bits 2-4 BP (stored, not enforced), 7 SRWD
0x01   WRSR   write status          needs WEL
0x06   WREN / 0x04 WRDI             set / clear the write-enable latch
0x03   READ / 0x0B FAST_READ        from a 3-byte address (FAST_READ: one dummy byte),
                                    wrapping at the end of the array
0x02   PP     page program          needs WEL; clears bits only (AND), wraps within the
                                    256-byte page, last 256 bytes count
0xD8   SE     sector erase          needs WEL; the 64 KiB sector to 0xFF
0xC7   BE     bulk (chip) erase     needs WEL (0x60 as well)
=====  ===========================  ===================================================

Writing commands take effect when the chip select goes inactive, as on the chip; any other
command is ignored with MISO high.

Properties: ``jedec_id`` (default 0x202014), ``size`` (bytes, default 1 MiB), ``image`` (a host
file loaded into the array at start), ``save_to`` (a host file the array is written to at stop).
The array is also kept as ``<name>.bin`` in the board's logs.
"""

from __future__ import annotations

from pathlib import Path

from cosim.api import SpiDevice, hookimpl

PAGE = 256
SECTOR = 64 << 10
RDID, RDSR, WRSR, WREN, WRDI, READ, FAST_READ, PP, SE, BE, CE = (
    0x9F, 0x05, 0x01, 0x06, 0x04, 0x03, 0x0B, 0x02, 0xD8, 0xC7, 0x60)
WIP, WEL = 0x01, 0x02
SR_WRITABLE = 0x9C  # BP0-2, SRWD
NAMES = {RDID: "RDID", RDSR: "RDSR", WRSR: "WRSR", WREN: "WREN", WRDI: "WRDI", READ: "READ",
         FAST_READ: "FAST_READ", PP: "PP", SE: "SE", BE: "BE", CE: "BE"}


class SpiNorFlash(SpiDevice):
    compatible = ("jedec,spi-nor",)
    # A real flash clock (the M25P80 reads at up to 75 MHz; the PL022 gives it its top 12 MHz):
    # the SPI core's timeouts are in the guest's time, which waits for the models.
    max_frequency = 50_000_000
    needs_chip_select = True

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        p = self.properties
        self.jedec_id = int(p.get("jedec_id", 0x202014))
        self.size = int(p.get("size", 1 << 20))
        if self.size % SECTOR or self.size > 1 << 24:
            raise ValueError(f"size must be a multiple of 64 KiB up to 16 MiB, not {self.size}")
        self.array = bytearray(b"\xff" * self.size)
        if "image" in p:
            image = Path(p["image"]).read_bytes()
            if len(image) > self.size:
                raise ValueError(f"image {p['image']} has {len(image)} bytes; the flash {self.size}")
            self.array[:len(image)] = image
        self.status = 0
        self.command: list[int] = []  # opcode and address bytes of the command in progress
        self.count = 0  # bytes exchanged since the chip select went active
        self.data = bytearray()  # page-program data
        self.counts: dict[str, int] = {}  # commands executed, by name

    def select(self, selected: bool) -> None:
        super().select(selected)
        if selected:
            self.command, self.count, self.data = [], 0, bytearray()
        elif self.command:
            self._finish()

    def exchange(self, word: int, bits: int) -> int:
        if not self.selected or bits != 8:
            return (1 << bits) - 1
        pos = self.count
        self.count += 1
        if pos < 5:
            self.command.append(word)
        op = self.command[0]
        if op == RDID:
            return self.jedec_id.to_bytes(3, "big")[pos - 1] if 1 <= pos <= 3 else 0
        if op == RDSR:
            return self.status
        if op in (READ, FAST_READ):
            first = 4 if op == READ else 5
            if pos < first:
                return 0xFF
            return self.array[(self._address() + pos - first) % self.size]
        if op == PP and pos >= 4:
            self.data.append(word)
        return 0xFF

    def exchange_words(self, words: list[int], bits: int) -> list[int]:
        """A READ's or a page program's data phase at once; anything else frame by frame."""
        op, pos = (self.command[0] if self.command else None), self.count
        if not self.selected or bits != 8 or pos < 5 or op not in (READ, FAST_READ, PP):
            return super().exchange_words(words, bits)
        n = len(words)
        self.count += n
        if op == PP:
            self.data.extend(words)
            return [0xFF] * n
        start = (self._address() + pos - (4 if op == READ else 5)) % self.size
        out = self.array[start:start + n]
        while len(out) < n:  # the array wraps around
            out += self.array[:n - len(out)]
        return list(out)

    def _address(self) -> int:
        return int.from_bytes(bytes(self.command[1:4]), "big") % self.size

    def _finish(self) -> None:
        op, n = self.command[0], self.count
        name = NAMES.get(op, f"{op:#04x}")
        self.counts[name] = self.counts.get(name, 0) + 1
        if op == WREN:
            self.status |= WEL
        elif op == WRDI:
            self.status &= ~WEL
        elif op in (WRSR, PP, SE, BE, CE) and self.status & WEL:
            if op == WRSR and n >= 2:
                self.status = (self.status & ~SR_WRITABLE) | (self.command[1] & SR_WRITABLE)
            elif op == PP and n >= 5:
                self._program(self._address(), bytes(self.data[-PAGE:]))
            elif op == SE and n >= 4:
                start = self._address() & ~(SECTOR - 1)
                self.array[start:start + SECTOR] = b"\xff" * SECTOR
                self.trace.instant(f"{self.name} flash", "sector erase", address=f"{start:#x}")
            elif op in (BE, CE):
                self.array[:] = b"\xff" * self.size
                self.trace.instant(f"{self.name} flash", "chip erase")
            self.status &= ~WEL  # a write command, done or cut short, clears the latch
        elif op in (READ, FAST_READ) and n > 4:
            self.trace.instant(f"{self.name} flash", "read", address=f"{self._address():#x}",
                               length=n - (4 if op == READ else 5))

    def _program(self, address: int, data: bytes) -> None:
        page = address & ~(PAGE - 1)
        for i, byte in enumerate(data):
            at = page + (address + i) % PAGE
            self.array[at] &= byte  # programming only clears bits; erase sets them
        self.trace.instant(f"{self.name} flash", "page program", address=f"{address:#x}",
                           length=len(data))

    def save(self, artifacts: Path) -> None:
        (artifacts / f"{self.name}.bin").write_bytes(self.array)
        if "save_to" in self.properties:
            Path(self.properties["save_to"]).write_bytes(self.array)


@hookimpl
def cosim_spi_device_types() -> dict[str, type[SpiDevice]]:
    return {"spi-nor": SpiNorFlash}
