"""A user's content in the guest: archives appended at boot, the host folder, and the errors a
user meets (a package that does not exist, a missing file, a module that fails to load, a kernel
option that did not take, a kernel tree without what cosim needs)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cosim.board import BoardFailure
from cosim.build import KERNEL_PACKAGE, BuildError, build_all
from cosim.guestimage import build_for, kernel_changes
from cosim.platform import PlatformError, load_platform, resolve_platform_path

SAMPLE = Path(__file__).parent / "user_repository"

HELLO_MAKEFILE = """\
hello: hello.c
\t$(CC) -O2 -o $@ $<
"""
HELLO = '#include <stdio.h>\nint main(void) { puts("hello, dynamically linked"); return 0; }\n'


def virt_with_guest(folder: Path, guest: dict) -> Path:
    spec = yaml.safe_load(resolve_platform_path("virt").read_text())
    spec["guest"].update(guest)
    path = folder / "board.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_tests_own_module_program_and_files_come_as_a_layer(cosim_board_factory, cosim_artifacts,
                                                              tmp_path):
    shutil.copytree(SAMPLE / "drivers", tmp_path / "drivers")
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "Makefile").write_text(HELLO_MAKEFILE)
    (tmp_path / "hello" / "hello.c").write_text(HELLO)
    (tmp_path / "overlay" / "etc").mkdir(parents=True)
    (tmp_path / "overlay" / "etc" / "motd").write_text("acme lab\n")
    board = cosim_board_factory(guest={
        "modules": [{"path": str(tmp_path / "drivers" / "acme_dma")}],
        "programs": [str(tmp_path / "hello")],
        "overlay": str(tmp_path / "overlay")})
    # cosim's own image and kernel are the session's: only a layer was added
    assert board.artifacts.initramfs == cosim_artifacts.initramfs and len(board.artifacts.layers) == 1
    assert board.run("hello").output == "hello, dynamically linked"  # with Debian's libc6
    assert board.run("cat /etc/motd").output == "acme lab"
    board.run("modprobe acme_dma")  # not loaded unless asked: the test loads it
    assert "acme_dma: copying with dma0chan" in board.kernel_log.text()
    board.run("echo 4096 > /dev/acme-dma")
    # the layer's module index still knows the kernel's own modules
    board.run("modprobe dmatest && grep -q '^dmatest ' /proc/modules")


def test_the_host_folder_is_shared_read_write(board):
    (board.host_folder / "from-host.txt").write_text("written on the host\n")
    assert board.run("cat /mnt/host/from-host.txt").output == "written on the host"
    board.run("head -c 3000000 /dev/urandom > /mnt/host/from-guest.bin; "
              "md5sum /mnt/host/from-guest.bin > /tmp/sum")
    data = (board.host_folder / "from-guest.bin").read_bytes()
    assert len(data) == 3000000
    assert board.run("cat /tmp/sum").output.split()[0] == hashlib.md5(data).hexdigest()


@pytest.mark.cosim_guest(files={"user_repository/data/calibration.txt": "/etc/acme/cal.txt"})
def test_a_marker_adds_files_to_the_board(board):
    assert board.run("cat /etc/acme/cal.txt").output == "acme calibration table v1"


def test_a_module_that_fails_to_load_at_boot_fails_the_board(cosim_board_factory, tmp_path):
    shutil.copytree(SAMPLE / "drivers", tmp_path / "drivers")
    with pytest.raises(BoardFailure, match=r"\[boot module\] .*cannot load module acme_dma"):
        board = cosim_board_factory(guest={"modules": [
            {"path": str(tmp_path / "drivers" / "acme_dma"), "load": ["acme_dma seed=lots"]}]})
        board.run("true")


def test_a_module_whose_init_fails_runs_it_once(board):
    """busybox's modprobe and insmod retry a failed finit_module() with init_module(), running the
    module's init again; the guest's are kmod's."""
    board.kernel_log.settle()
    seen = len(board.kernel_log.text())
    for command in ("modprobe mtd_readtest",
                    "insmod /lib/modules/$(uname -r)/kernel/drivers/mtd/tests/mtd_readtest.ko"):
        assert board.run(command, check=False).status != 0  # no dev=: its init returns -EINVAL
    board.kernel_log.settle()
    assert board.kernel_log.text()[seen:].count("Please specify a valid mtd-device") == 2


def test_a_package_that_does_not_exist_names_its_line(cosim_artifacts, tmp_path):
    platform = load_platform(virt_with_guest(tmp_path, {"packages": ["alsa-utils", "no-such-tool"]}))
    with pytest.raises(PlatformError, match=r"board\.yaml:\d+: guest package 'no-such-tool': no such "
                                            r"Debian bookworm package for arm64"):
        build_for(platform, artifacts=cosim_artifacts)


def test_a_missing_file_names_its_line(cosim_artifacts, tmp_path):
    platform = load_platform(virt_with_guest(tmp_path, {"files": {"nowhere.bin": "/tmp/x"}}))
    with pytest.raises(PlatformError, match=r"board\.yaml:\d+: guest\.files\.nowhere\.bin: no path"):
        build_for(platform, artifacts=cosim_artifacts)


def test_a_kernel_option_that_did_not_take_is_named(tmp_path):
    platform = load_platform(virt_with_guest(tmp_path, {"kernel": {
        "options": ["CONFIG_NO_SUCH_OPTION=y", "CONFIG_DMATEST=y"]}}))
    with pytest.raises(BuildError) as failure:
        build_for(platform)
    text = str(failure.value)
    assert "CONFIG_NO_SUCH_OPTION=y (guest.kernel.options): this tree has no such option" in text
    assert "DMATEST" not in text  # that one took (=y where cosim's fragment has =m: the user's wins)


def test_a_kernel_tree_without_what_cosim_needs_is_told_so(tmp_path):
    """A vendor tree whose Kconfig lacks the PL330 driver: cosim names the option and why."""
    subprocess.run(["tar", "xf", f"/usr/src/{KERNEL_PACKAGE}.tar.xz", "-C", tmp_path], check=True)
    tree = tmp_path / KERNEL_PACKAGE
    kconfig = tree / "drivers" / "dma" / "Kconfig"
    text = kconfig.read_text()
    start = text.index("config PL330_DMA")
    kconfig.write_text(text[:start] + text[text.index("\nconfig ", start + 1) + 1:])
    platform = load_platform(virt_with_guest(tmp_path, {"kernel": {"source": str(tree)}}))
    with pytest.raises(BuildError) as failure:
        build_all(kernel_changes=kernel_changes(platform))
    assert ("CONFIG_PL330_DMA=y (cosim): this tree has no such option; cosim needs it for: "
            "DMA engines and tests") in str(failure.value)


def test_a_16_mib_image_through_the_host_folder(board):
    image = os.urandom(16 << 20)
    (board.host_folder / "flash.img").write_bytes(image)
    board.run("cp /mnt/host/flash.img /tmp/flash.img", timeout=120)
    assert board.run("md5sum /tmp/flash.img").output.split()[0] == hashlib.md5(image).hexdigest()
