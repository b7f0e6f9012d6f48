"""The SPI NOR flash model, driven as spi-nor drives it: commands framed by the chip select."""

from __future__ import annotations

import pytest

from cosim.plugins.spi_nor import SECTOR, SpiNorFlash


def command(flash: SpiNorFlash, *out: int, read: int = 0) -> list[int]:
    flash.select(True)
    answer = [flash.exchange(b, 8) for b in [*out, *([0] * read)]]
    flash.select(False)
    return answer[len(out):]


def program(flash: SpiNorFlash, address: int, data: bytes) -> None:
    command(flash, 0x06)
    command(flash, 0x02, *address.to_bytes(3, "big"), *data)


@pytest.fixture
def flash() -> SpiNorFlash:
    return SpiNorFlash("flash")


def test_identifies_as_an_m25p80(flash):
    assert command(flash, 0x9F, read=3) == [0x20, 0x20, 0x14]


def test_fresh_flash_reads_erased(flash):
    assert command(flash, 0x03, 0, 0, 0, read=4) == [0xFF] * 4
    assert command(flash, 0x0B, 0x0F, 0xFF, 0xFE, 0, read=3) == [0xFF] * 3  # wraps at the end


def test_page_program_needs_write_enable_and_clears_bits_only(flash):
    command(flash, 0x02, 0, 0x10, 0, 0x12)  # no WREN: ignored
    assert command(flash, 0x03, 0, 0x10, 0, read=1) == [0xFF]
    program(flash, 0x1000, b"\xf0\x0f")
    program(flash, 0x1000, b"\x3c\xff")
    assert command(flash, 0x03, 0, 0x10, 0, read=2) == [0x30, 0x0F]
    assert command(flash, 0x05, read=1) == [0]  # WEL cleared by the program


def test_page_program_wraps_within_its_page(flash):
    program(flash, 0x00FE, b"\x01\x02\x03")
    assert command(flash, 0x03, 0, 0, 0xFE, read=2) == [1, 2]
    assert command(flash, 0x03, 0, 0, 0, read=1) == [3]


def test_sector_erase_and_status(flash):
    program(flash, 0x10000, b"\x00" * 4)
    program(flash, 0x20000, b"\x00")
    command(flash, 0x06)
    assert command(flash, 0x05, read=2) == [0x02, 0x02]  # WEL, read repeatedly
    command(flash, 0xD8, 0x01, 0x23, 0x45)  # any address in the sector
    assert command(flash, 0x03, 0x01, 0, 0, read=4) == [0xFF] * 4
    assert command(flash, 0x03, 0x02, 0, 0, read=1) == [0]  # the next sector is untouched
    assert flash.counts["SE"] == 1 and flash.counts["PP"] == 2


def test_a_command_without_chip_select_is_not_heard(flash):
    assert flash.exchange(0x9F, 8) == 0xFF
    assert command(flash, 0x9F, read=1) == [0x20]


def test_image_in_and_out(tmp_path):
    image = tmp_path / "in.bin"
    image.write_bytes(bytes(range(256)) * 4)
    flash = SpiNorFlash("boot", {"image": str(image), "size": 2 * SECTOR,
                                 "save_to": str(tmp_path / "out.bin")})
    assert command(flash, 0x03, 0, 0x01, 0x02, read=2) == [2, 3]
    command(flash, 0x06)
    command(flash, 0xC7)
    flash.save(tmp_path)
    assert (tmp_path / "out.bin").read_bytes() == b"\xff" * 2 * SECTOR
    assert (tmp_path / "boot.bin").read_bytes() == b"\xff" * 2 * SECTOR


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of 64 KiB"):
        SpiNorFlash("f", {"size": 1000})
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(2 * SECTOR))
    with pytest.raises(ValueError, match="has 131072 bytes"):
        SpiNorFlash("f", {"image": str(big), "size": SECTOR})


@pytest.mark.parametrize("opcode,first", [(0x03, 4), (0x0B, 5)])
def test_a_data_phase_at_once_answers_as_frame_by_frame(opcode, first):
    """exchange_words of a READ (wrapping at the end of the array) and of a page program give
    what exchanging each frame gives."""
    by_frame, at_once = SpiNorFlash("a", {"size": SECTOR}), SpiNorFlash("b", {"size": SECTOR})
    for f in (by_frame, at_once):
        program(f, SECTOR - 256, bytes(range(256)))
        program(f, 0, bytes(range(255, -1, -1)))
    header = [opcode, 0, 0xFF, 0xF0] + [0] * (first - 4)  # 16 bytes before the end
    by_frame.select(True)
    expected = [by_frame.exchange(w, 8) for w in header + [0] * 40]
    by_frame.select(False)
    at_once.select(True)
    got = at_once.exchange_words(header[:2], 8) + at_once.exchange_words(header[2:] + [0] * 3, 8)
    got += at_once.exchange_words([0] * 37, 8)
    at_once.select(False)
    assert got == expected and got[first:first + 16] == list(range(240, 256))
    assert got[first + 16:] == list(range(255, 231, -1))  # wrapped to address 0
    for f in (by_frame, at_once):
        command(f, 0x06)
        f.select(True)
    for w in [0x02, 0, 0x20, 0, *b"\x55\xaa"]:
        by_frame.exchange(w, 8)
    at_once.exchange_words([0x02, 0, 0x20, 0, 0x55], 8)
    at_once.exchange_words([0xAA], 8)
    for f in (by_frame, at_once):
        f.select(False)
    assert by_frame.array == at_once.array and at_once.array[0x2000:0x2002] == b"\x55\xaa"
