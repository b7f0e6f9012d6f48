"""The push/pull region's place in guest RAM (no guest needed)."""

from __future__ import annotations

from cosim.share import SHARE_BYTES, GuestShare


def test_the_region_is_the_top_of_guest_ram():
    share = GuestShare(0x40000000, 1 << 30)
    assert share.size == SHARE_BYTES and share.address == 0x40000000 + (1 << 30) - SHARE_BYTES
    reserved, device = share.device_tree_nodes()
    assert reserved.children[0].properties["no-map"] is True
    assert device.properties["compatible"] == "cosim,share"


def test_a_small_guest_gives_an_eighth_of_its_ram():
    share = GuestShare(0x40000000, 64 << 20)  # such a board booted before the region existed
    assert share.size == 8 << 20 and share.offset == 56 << 20
