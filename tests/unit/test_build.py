"""Build steps without a kernel build: kernel patches applied in order, a user's program built
with the cross compiler, the library check on Debian's real packages; clear errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cosim.build import BuildError, apply_patches, base_packages, build_lock, kernel_patches
from cosim.guestimage import build_program, check_libraries

PATCH = """\
--- a/drivers/x.c
+++ b/drivers/x.c
@@ -1,3 +1,3 @@
 int a;
-int b = DIV_ROUND_UP(len, PAGE_SIZE);
+int b = entries(buf, len);
 int c;
"""


def tree(tmp_path: Path, line: str) -> Path:
    (tmp_path / "src" / "drivers").mkdir(parents=True)
    (tmp_path / "src" / "drivers" / "x.c").write_text(f"int a;\n{line}\nint c;\n")
    return tmp_path / "src"


def test_patches_apply_in_order(tmp_path):
    src = tree(tmp_path, "int b = DIV_ROUND_UP(len, PAGE_SIZE);")
    patch = tmp_path / "0001-fix.patch"
    patch.write_text(PATCH)
    apply_patches(src, [patch], tmp_path / "kernel.log")
    assert "entries(buf, len)" in (src / "drivers" / "x.c").read_text()


def test_a_patch_that_does_not_apply_is_named(tmp_path):
    src = tree(tmp_path, "int b = something_else;")
    patch = tmp_path / "0001-fix.patch"
    patch.write_text(PATCH)
    with pytest.raises(BuildError, match=r"kernel patch .*0001-fix\.patch does not apply") as info:
        apply_patches(src, [patch], tmp_path / "kernel.log")
    assert "FAILED" in str(info.value)  # patch's own report of the hunk


def test_cosims_own_patches_are_found():
    assert [p.name for p in kernel_patches()] == [
        "0001-spi-pl022-size-DMA-scatterlists-for-buffer-offset.patch"]


def test_a_program_that_does_not_compile_names_the_users_file(tmp_path):
    source = tmp_path / "acme-test.c"
    source.write_text("int main(void) { return missing; }\n")
    with pytest.raises(BuildError) as info:
        build_program(source, tmp_path / "logs")
    assert f"{source}:1:" in str(info.value) and "undeclared" in str(info.value)


def test_a_program_missing_its_libraries_is_named(tmp_path):
    """Debian's busybox is dynamic: alone it lacks its loader and libc; with libc6 it has them."""
    packages = {folder.name.split("_")[0]: folder for folder in base_packages(tmp_path)}
    busybox, libc6 = packages["busybox"], packages["libc6"]
    staging = tmp_path / "layer"
    (staging / "bin").mkdir(parents=True)
    shutil.copy(busybox / "bin" / "busybox", staging / "bin" / "busybox")
    with pytest.raises(BuildError) as info:
        check_libraries(staging, [])
    assert "bin/busybox needs its loader /lib/ld-linux-aarch64.so.1" in str(info.value)
    assert "bin/busybox needs libc.so.6" in str(info.value)
    check_libraries(staging, [libc6])


def test_a_makefile_that_ignores_cc_is_told_so(tmp_path):
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "Makefile").write_text("tool: tool.c\n\tgcc -o $@ $<\n")  # the host's gcc
    (tmp_path / "tool" / "tool.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(BuildError, match=r"tool not built for arm64 \(does its Makefile compile with"):
        build_program(tmp_path / "tool", tmp_path / "logs")


HOLD_LOCK = """
import fcntl, sys, time
with open(sys.argv[1], "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0); f.truncate(); f.write("pid 4242 (cosim build)"); f.flush()
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_build_waiting_for_another_says_whose_build_it_waits_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COSIM_CACHE", str(tmp_path))
    other = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / ".build.lock")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        entered = threading.Event()

        def build() -> None:
            with build_lock():
                entered.set()

        waiter = threading.Thread(target=build)
        waiter.start()
        assert not entered.wait(0.5)  # blocked behind the other build
        other.stdin.close()  # the other build ends
        waiter.join(timeout=10)
        assert entered.is_set()
    finally:
        other.kill()
        other.wait()
    err = capsys.readouterr().err
    assert "waiting for the build of pid 4242 (cosim build) to finish" in err
    assert str(tmp_path / ".build.lock") in err and "the other build finished" in err
