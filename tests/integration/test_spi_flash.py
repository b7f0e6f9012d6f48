"""An SPI NOR flash behind the PL022 (chip select on a PL061 GPIO): Linux's spi-nor identifies
it, MTD programs, reads and erases it over SPI with DMA through the Python PL330."""

from __future__ import annotations

import hashlib

from .conftest import virt_with

SPI1 = 0x0C080000
SECTOR = 64 << 10


def test_spi_nor_identifies_the_flash(module_board):
    assert module_board.run("cat /sys/class/mtd/mtd0/type").output == "nor"
    assert "mtd0: 00100000 00010000" in module_board.run("cat /proc/mtd").output
    assert module_board.run("cat /sys/bus/spi/devices/spi1.0/spi-nor/partname").output == "m25p80"
    assert module_board.run("cat /sys/bus/spi/devices/spi1.0/spi-nor/jedec_id").output == "202014"


def test_write_read_back_and_erase_an_image(module_board):
    flash = module_board.spi_devices["flash"]
    before_dma = module_board.bus.device_traffic["pdma", SPI1]
    before = dict(flash.counts)
    module_board.run("head -c 65536 /dev/urandom > /tmp/image")
    module_board.run(f"mtd-erase /dev/mtd0 {SECTOR} {SECTOR}")
    module_board.run(f"dd if=/tmp/image of=/dev/mtd0 bs=4096 seek={SECTOR // 4096}", timeout=120)
    module_board.run("dd if=/dev/mtd0 of=/tmp/back bs=65536 skip=1 count=1", timeout=120)
    assert module_board.run("cmp /tmp/image /tmp/back").status == 0
    # the flash array holds what the guest wrote, at the place it wrote it
    guest_md5 = module_board.run("md5sum /tmp/image").output.split()[0]
    assert hashlib.md5(flash.array[SECTOR:2 * SECTOR]).hexdigest() == guest_md5
    done = {k: flash.counts.get(k, 0) - before.get(k, 0) for k in flash.counts}
    assert done["SE"] == 1 and done["PP"] == SECTOR // 256 and done["READ"] + done.get("FAST_READ", 0) >= 1
    # program and read moved through the DMA controller: 64 KiB out, 64 KiB in, plus commands
    assert module_board.bus.device_traffic["pdma", SPI1] - before_dma >= 2 * SECTOR
    # the timeline has the flash's commands beside the pdma's requests and transfers
    commands = {e["name"] for e in module_board.trace.on_track("flash flash")}
    assert {"sector erase", "page program", "read"} <= commands
    assert module_board.trace.on_track("pdma request line 5")  # spi1's TX requests

    module_board.run(f"mtd-erase /dev/mtd0 {SECTOR} {SECTOR}")
    module_board.run("dd if=/dev/mtd0 of=/tmp/back bs=65536 skip=1 count=1", timeout=120)
    assert module_board.run("tr -d '\\377' < /tmp/back | wc -c").output == "0"
    assert flash.array[SECTOR:2 * SECTOR] == b"\xff" * SECTOR


def test_flash_content_from_and_to_host_files(cosim_board_factory, tmp_path):
    image = tmp_path / "boot.img"
    image.write_bytes(b"cosim flash image\n" + bytes(range(256)) * 16)
    saved = tmp_path / "saved.bin"
    platform = virt_with(tmp_path, "spi1", lambda spi1: spi1["devices"][0].update(
        properties={"image": str(image), "save_to": str(saved)}))
    board = cosim_board_factory(platform=platform)
    assert board.run("head -c 18 /dev/mtd0").output == "cosim flash image"
    board.run("mtd-erase /dev/mtd0 0 65536 && echo -n written | dd of=/dev/mtd0 conv=notrunc")
    board.stop()
    assert saved.read_bytes()[:8] == b"written\xff"
    assert len(saved.read_bytes()) == 1 << 20
