"""The cosim command as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

COSIM = [sys.executable, "-m", "cosim.cli"]


def cosim(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COSIM, *args], capture_output=True, text=True, timeout=timeout)


def test_run_prints_output_and_exits_with_the_commands_status():
    proc = cosim("run", "virt", "--", "echo from the guest; exit 3")
    assert proc.stdout == "from the guest\n"
    assert proc.returncode == 3


def test_dts_shows_what_the_guest_boots_with():
    proc = cosim("dts", "virt")
    assert proc.returncode == 0
    assert 'compatible = "arm,pl330", "arm,primecell";' in proc.stdout
    assert "dmas = <&{/pdma@c060000} 0x0 &{/pdma@c060000} 0x1>;" in proc.stdout
    assert shutil.which("dtc") and "intc@8000000" in proc.stdout  # QEMU's own nodes are kept


def test_unknown_platform_is_a_clear_error(tmp_path: Path):
    proc = cosim("run", "vrit", "--", "true")
    assert proc.returncode == 2
    assert "no platform 'vrit'" in proc.stderr and "virt" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nperipherals:\n  - name: x\n    plugin: nope\n    base: 0x0c000000\n")
    proc = cosim("dts", str(bad))
    assert proc.returncode == 2
    assert "bad.yaml:4: unknown plugin 'nope' — installed plugins:" in proc.stderr


def test_the_demo_passes_and_leaves_its_wav():
    proc = cosim("demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())  # rich wraps long lines
    assert "failures=0" in text and "DMA-API debug error count: 0" in text
    assert "host -> guest 4 KiB at 115200 baud: identical" in text
    assert "spi-nor identified an m25p80" in text and "read back through /dev/mtd0: identical" in text
    assert "played 48000 frames at 48000 Hz, xruns 0" in text and "underruns 0" in text
    wav = Path(text.split("the tone is in ")[1].split()[0])
    assert wav.stat().st_size > 4 * 48000
    shutil.rmtree(wav.parent)


def test_run_passes_each_argument_as_one_word():
    assert cosim("run", "virt", "--", "sh", "-c", "echo one two").stdout == "one two\n"
    proc = cosim("run", "virt", "--timeout", "60", "--", "echo", "a  b", "c'd", "$HOME")
    assert proc.stdout == "a  b c'd $HOME\n", proc.stderr


def test_run_removes_its_logs_unless_the_board_failed(tmp_path: Path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([*COSIM, "run", "virt", "--", "exit 4"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 4
    assert list(tmp_path.glob("cosim-run-logs-*")) == []
    proc = subprocess.run([*COSIM, "run", "virt", "--", "echo c > /proc/sysrq-trigger"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Kernel panic" in proc.stderr
    kept = list(tmp_path.glob("cosim-run-logs-*"))
    assert len(kept) == 1 and f"logs: {kept[0]}" in proc.stderr
