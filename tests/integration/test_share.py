"""board.push() and board.pull(): large data in and out of the guest through guest RAM."""

from __future__ import annotations

import hashlib
import os

import pytest

from cosim.share import SHARE_BYTES


def test_a_16_mib_image_goes_in_and_comes_back(module_board, tmp_path):
    image = os.urandom(16 << 20)
    host_file = tmp_path / "flash.img"
    host_file.write_bytes(image)
    module_board.push(host_file, "/tmp/flash.img")
    assert module_board.run("md5sum /tmp/flash.img").output.split()[0] == hashlib.md5(image).hexdigest()
    module_board.run("tr 'A' 'B' < /tmp/flash.img > /tmp/changed.img")  # the guest changes it
    changed = module_board.pull("/tmp/changed.img")
    assert changed == image.replace(b"A", b"B")
    module_board.run("rm /tmp/flash.img /tmp/changed.img")


def test_small_and_empty_files_and_names_with_spaces(module_board):
    module_board.push(b"", "/tmp/empty")
    module_board.push(b"hello\n", "/tmp/a file")
    assert module_board.run("wc -c < /tmp/empty; cat '/tmp/a file'").output == "0\nhello"
    assert module_board.pull("/tmp/a file") == b"hello\n"


def test_the_region_is_reserved_and_the_limit_is_clear(module_board):
    assert "cosim-share" in module_board.run("ls /dev").output
    assert "reserved" in module_board.run("cat /proc/iomem").output
    with pytest.raises(ValueError, match=r"board\.push\(\) moves up to 32 MiB at a time"):
        module_board.push(bytes(SHARE_BYTES + 1), "/tmp/too-big")
