"""The ``cosim`` command: build, boot, run, dts, demo."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .board import Board, BoardFailure
from .build import BuildError, build_all
from .console import CommandFailed, CommandTimeout
from .guestimage import build_for
from .platform import PlatformError, load_platform

out = Console(soft_wrap=True)  # never break a path or an error message
err = Console(stderr=True, soft_wrap=True)


def _logdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"cosim-{name}-logs-"))


def _board(platform: str, purpose: str = "run", time: str | None = None) -> Board:
    loaded = load_platform(platform)
    return Board(loaded, build_for(loaded), _logdir(purpose), time=time)


@contextlib.contextmanager
def _logs_kept_on_failure(board: Board, keep: bool) -> Iterator[None]:
    """A board's log folder stays when something failed (the error names it) or when asked for;
    a clean exit removes it, so runs do not pile folders up in /tmp."""
    yield
    if keep:
        err.print(f"logs: {board.logdir}")
    else:
        shutil.rmtree(board.logdir, ignore_errors=True)


def guest_command_line(words: list[str]) -> str:
    """One word is a shell line as it is (``cosim run virt -- 'a | b'``); several are quoted so
    the guest runs exactly them (``cosim run virt -- sh -c 'echo one two'``)."""
    return words[0] if len(words) == 1 else shlex.join(words)


def cmd_build(args: argparse.Namespace) -> int:
    artifacts = build_for(load_platform(args.platform)) if args.platform else build_all()
    out.print(f"QEMU      {artifacts.qemu}\nkernel    {artifacts.kernel}\ninitramfs {artifacts.initramfs}")
    for layer in artifacts.layers:
        out.print(f"layer     {layer}")
    return 0


def cmd_dts(args: argparse.Namespace) -> int:
    board = Board(load_platform(args.platform), build_all(), Path("/nonexistent"))
    board.assembly.build()  # models and wiring only: no sockets, no QEMU run
    try:
        sys.stdout.write(board.device_tree_source())
    finally:
        board.assembly.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not args.command:
        err.print("usage: cosim run PLATFORM -- COMMAND")
        return 2
    board = _board(args.platform, time=args.time)
    with _logs_kept_on_failure(board, args.keep_logs), board:
        result = board.run(guest_command_line(args.command), timeout=args.timeout, check=False)
        sys.stdout.write(result.output + ("\n" if result.output else ""))
    return result.status


def cmd_boot(args: argparse.Namespace) -> int:
    board = _board(args.platform, "boot", time=args.time)
    with _logs_kept_on_failure(board, args.keep_logs), board:
        err.print(f"[bold]{board.platform.spec.name}[/] booted; kernel log: {board.logdir}/kernel.log"
                  f"{'' if args.keep_logs else ' (removed at exit unless --keep-logs)'}; leave with Ctrl-]")
        assert board.console is not None
        board.console.interact()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Boots the default platform and shows the Python models working for real drivers."""
    start = time.monotonic()
    loaded = load_platform(args.platform)
    board = Board(loaded, build_for(loaded), _logdir("demo"))
    table = Table(title=f"platform {board.platform.spec.name}: Python peripherals")
    for column in ("name", "model", "window", "GIC SPIs"):
        table.add_column(column)
    for p in board.platform.spec.peripherals:
        size = board.assembly.entries[p.name].size
        table.add_row(p.name, p.plugin, f"{p.base:#x}+{size:#x}", ", ".join(map(str, p.irqs)))
    out.print(table)
    with board:
        boot = time.monotonic() - start
        out.print(f"[green]booted[/] to a shell in {boot:.1f} s (with builds checked): "
                  + board.run("uname -sr").output)
        log = board.kernel_log.text() if board.kernel_log else ""
        for line in log.splitlines():
            if "ttyAMA1" in line or "dma-copy" in line:
                out.print(f"  [dim]guest kernel:[/] {escape(line.strip())}")

        out.print("\n[bold]1. DMA through our guest driver and the Python copy engine[/]")
        control = "/sys/kernel/debug/cosim-dma-copy/c010000.dmacopy/control"
        board.run(f"echo 'test all 2000 42 65536' > {control}", timeout=300)
        result = board.run(f"cat {control}").output
        out.print(f"  2000 random copies (coherent, map_single + sync, map_sg + dma_pool): {result}")
        board.run(f"echo 'bench 1048576 200' > {control}", timeout=300)
        out.print(f"  1 MiB copies: {board.run(f'cat {control}').output}")
        errors = board.run("cat /sys/kernel/debug/dma-api/error_count").output
        out.print(f"  DMA-API debug error count: {errors}")

        out.print("\n[bold]2. The upstream amba-pl011 driver on the Python PL011[/]")
        uart = board.peripheral("uart1")
        board.run("stty -F /dev/ttyAMA1 115200 raw -echo")
        board.run("(exec 3<>/dev/ttyAMA1; printf R >&3; head -c 4096 <&3 | md5sum > /tmp/rx.md5) "
                  "& echo $! > /tmp/rx.pid")
        uart.take_from_guest(1, timeout=10)
        message = os.urandom(4096)
        uart.send_to_guest(message)
        board.run("wait $(cat /tmp/rx.pid)", timeout=60)
        same = board.run("cat /tmp/rx.md5").output.split()[0] == hashlib.md5(message).hexdigest()
        out.print(f"  host -> guest 4 KiB at 115200 baud: {'identical' if same else 'CORRUPTED'}")
        board.run("echo 'hello from the guest' > /dev/ttyAMA1")
        out.print(f"  guest -> host: {uart.take_from_guest(21, timeout=5).decode().strip()!r}")
        table_text = board.run("cat /proc/interrupts").output
        for line in table_text.splitlines():
            if re.search(r"GICv3\s+14[45] Level", line):
                out.print(f"  [dim]{escape(line.strip())}[/]")

        out.print("\n[bold]3. spi-nor and MTD on a Python SPI NOR flash behind the PL022, with DMA[/]")
        part = board.run("cat /sys/bus/spi/devices/spi1.0/spi-nor/partname").output
        board.run("head -c 4096 /dev/urandom > /tmp/image && mtd-erase /dev/mtd0 0 65536 "
                  "&& dd if=/tmp/image of=/dev/mtd0 bs=4096 2>/dev/null", timeout=120)
        flashed = board.run("dd if=/dev/mtd0 bs=4096 count=1 2>/dev/null | cmp - /tmp/image",
                            timeout=120, check=False).status == 0
        counts = ", ".join(f"{k} {v}" for k, v in sorted(board.spi_devices["flash"].counts.items()))
        out.print(f"  spi-nor identified an {part}; 4 KiB erased, written and read back through "
                  f"/dev/mtd0: {'identical' if flashed else 'DIFFERENT'}")
        out.print(f"  [dim]commands the flash model executed: {counts}[/]")

        out.print("\n[bold]4. dwc-i2s with cyclic DMA on the Python DesignWare I2S[/]")
        i2s = board.peripheral("i2s0")
        played = board.run("pcmtest play /dev/snd/pcmC0D0p 48000 440 48000", timeout=60).output
        out.print(f"  {played}; {len(i2s.played) // 4} frames on the I2S wire, underruns "
                  f"{i2s.underruns}")
    out.print(f"  the tone is in {board.logdir}/i2s0-playback.wav")
    out.print(f"\n[green]demo done[/] in {time.monotonic() - start:.1f} s; logs in {board.logdir}")
    return 0 if same and flashed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosim", description=__doc__)
    sub = parser.add_subparsers(dest="command_name", required=True)
    build = sub.add_parser("build", help="build QEMU (with the bridge), the guest kernel and "
                           "initramfs, and a platform's own guest content")
    build.add_argument("platform", nargs="?", help="also build what this platform's guest: needs")
    build.set_defaults(func=cmd_build)
    for name, func, text in (("boot", cmd_boot, "boot a platform to an interactive shell"),
                             ("dts", cmd_dts, "print the device tree the guest would boot with"),
                             ("demo", cmd_demo, "boot the default platform and show DMA and UART")):
        p = sub.add_parser(name, help=text)
        p.add_argument("platform", nargs="?" if name == "demo" else None, default="virt")
        if name == "boot":
            p.add_argument("--keep-logs", action="store_true", help="keep the board's log folder")
            p.add_argument("--time", choices=["wall", "virtual"], default="wall",
                           help="the guest's clock (default wall: it follows yours as you type)")
        p.set_defaults(func=func)
    run = sub.add_parser("run", help="boot, run one command, print its output, exit with its status")
    run.add_argument("platform")
    run.add_argument("command", nargs="*", help="the guest command (put it after --)")
    run.add_argument("--timeout", type=float, default=300.0)
    run.add_argument("--time", choices=["wall", "virtual"], default=None,
                     help="the guest's clock (default: the platform's machine.time, virtual)")
    run.add_argument("--keep-logs", action="store_true",
                     help="keep the board's log folder (it is always kept when the board fails)")
    run.set_defaults(func=cmd_run)
    argv = sys.argv[1:] if argv is None else argv
    # Everything after the first "--" is the guest's command, untouched; options go before it.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if args.command_name == "run":
        args.command = [*args.command, *argv[split + 1:]]
    try:
        return args.func(args)
    except (PlatformError, BuildError) as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 2
    except (BoardFailure, CommandFailed, CommandTimeout) as e:
        err.print(f"[red]failed:[/] {escape(str(e))}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
