"""A user's kernel: their own source tree in place of Debian's linux-source, their patch, config
fragment and options, built once and cached like cosim's own (one kernel build, ~5 minutes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cosim.build import KERNEL_PACKAGE, cache_root
from cosim.platform import resolve_platform_path

SAMPLE = Path(__file__).parent / "user_repository"


def vendor_tree() -> Path:
    """A kernel tree outside cosim's build: Debian's source unpacked once into the cache, as a BSP
    checkout would sit beside a user's repository (a stable path and mtimes: the kernel built
    from it stays cached between runs)."""
    tree = cache_root() / "sample-vendor-tree" / KERNEL_PACKAGE
    if not (tree / "Makefile").exists():
        tree.parent.mkdir(exist_ok=True)
        subprocess.run(["tar", "xf", f"/usr/src/{KERNEL_PACKAGE}.tar.xz", "-C", tree.parent], check=True)
    return tree


@pytest.fixture(scope="module")
def bsp_board(cosim_module_board_factory, tmp_path_factory):
    spec = yaml.safe_load(resolve_platform_path("virt").read_text())
    spec["guest"]["kernel"] = {
        "source": str(vendor_tree()),
        "patches": [str(SAMPLE / "kernel" / "0001-pl330-name-the-bsp-in-the-probe-message.patch")],
        "fragments": [str(SAMPLE / "kernel" / "acme.config")],
        "options": ["CONFIG_DMATEST=y"]}
    spec["guest"]["bootargs"] += " dmatest.iterations=20 dmatest.channel=dma0chan0 dmatest.run=1"
    path = tmp_path_factory.mktemp("bsp") / "acme-bsp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return cosim_module_board_factory(path)


def test_the_users_tree_patch_and_options_are_in_the_kernel(bsp_board):
    log = bsp_board.kernel_log
    assert "dma-pl330 c020000.pl330: Loaded driver for PL330 DMAC-341330 (acme BSP)" in log.text()
    # the fragment's and the options' CONFIG_DMATEST=y: built in, it runs from the command line
    bsp_board.run("grep -q dmatest.ko /lib/modules/$(uname -r)/modules.builtin")
    bsp_board.run("cat /sys/module/dmatest/parameters/wait", timeout=300)
    log.settle()
    assert "dmatest: dma0chan0-copy0: summary 20 tests, 0 failures" in log.text()
