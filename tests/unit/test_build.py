"""Build steps that need no toolchain: kernel patches applied in order, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.build import BuildError, apply_patches, kernel_patches

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
