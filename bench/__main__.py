"""cosim benchmarks: boot overhead of the bridge, MMIO round trips, DMA bandwidth, slave DMA,
the cache model's cost.

    ./run bench [--boots N] [--only edit-to-shell|cache-model|suite-cost]

Prints a Markdown table (the README's "Measured" section) and writes it to bench/results.md.
Numbers are wall-clock on whatever machine runs this; the README says which one produced its table.
Rates the guest measures itself (MMIO round trips, DMA bandwidth, dmatest) run on wall-time
boards: under virtual time the guest's clock stands still while Python works, so the guest would
report the hardware's speed, not the host's.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cosim.board import Board
from cosim.build import build_all
from cosim.guestimage import build_for
from cosim.platform import load_platform
from cosim.pluginmanager import create_plugin_manager

CONTROL = "/sys/kernel/debug/cosim-dma-copy/c010000.dmacopy/control"
COPY_ENGINE = 0x0C010000


def logdir() -> Path:
    """A folder for one board's logs, removed when the bench exits: a bench keeps numbers, not
    logs (nothing piles up in /tmp run after run)."""
    path = Path(tempfile.mkdtemp(prefix="cosim-bench-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def boot_seconds(artifacts, boots: int, *setups: dict) -> list[list[float]]:
    """Boot-to-shell times of each setup (``Board`` keywords: platform, cache, time), the setups
    taking turns so that the host's drift from minute to minute falls on all of them alike."""
    times: list[list[float]] = [[] for _ in setups]
    for _ in range(boots):
        for setup, runs in zip(setups, times, strict=True):
            options = dict(setup)
            board = Board(load_platform(options.pop("platform", "virt")), artifacts,
                          logdir(), **options)
            start = time.monotonic()
            board.start()
            runs.append(time.monotonic() - start)
            board.stop()
    return times


def with_board(artifacts, pin: set[int] | None, work, cache: str | None = None,
               clock: str | None = "wall"):
    board = Board(load_platform("virt"), artifacts, logdir(),
                  pin_cpus=pin, cache=cache, time=clock)
    with board:
        return work(board)


def mmio_rate(board: Board) -> float:
    out = board.run(f"mmio-bench {COPY_ENGINE:#x} 50000").output
    return float(re.search(r"per_second=(\d+)", out).group(1))


def copy_bandwidth(board: Board, size: int, count: int) -> float:
    board.run(f"echo 'bench {size} {count}' > {CONTROL}", timeout=600)
    out = board.run(f"cat {CONTROL}").output
    return float(re.search(r"mbytes_per_s=(\d+)", out).group(1))


def dmatest_throughput(board: Board, size: int, iterations: int, verify: bool = False) -> float:
    """KB/s dmatest reports on one channel: fixed-size, unverified copies, or (``verify``) its
    defaults: random sizes and offsets, every byte of source and destination checked by the CPU."""
    options = f"test_buf_size={size} iterations={iterations}" + ("" if verify else " norandom=1 noverify=1")
    board.run(f"modprobe dmatest {options} threads_per_chan=1 channel=dma0chan0 run=1", timeout=600)
    board.run("cat /sys/module/dmatest/parameters/wait", timeout=1200)
    board.kernel_log.settle()
    summary = [line for line in board.kernel_log.text().splitlines() if "summary" in line][-1]
    board.run("rmmod dmatest")
    return float(re.search(r"([\d.]+) KB/s", summary).group(1))


def timed(board: Board, command: str) -> float:
    start = time.monotonic()
    board.run(command, timeout=600)
    return time.monotonic() - start


def slave_dma(board: Board) -> list[tuple[str, str]]:
    """SPI, SPI flash, UART and I2S through the pdma/adma PL330s and the upstream drivers, at the
    hardware's rates on a virtual-time board: host wall time."""
    rows = []
    board.run("head -c 65536 /dev/urandom > /tmp/in")
    spi = timed(board, "spidev_test -D /dev/spidev0.0 -l -b 8 -s 12000000 -i /tmp/in -o /tmp/out")
    rows.append(("SPI loopback at 12 MHz, 64 KiB of 8-bit frames by DMA (spidev_test, one transfer)",
                 f"{spi:.2f} s = {64 / spi:.1f} KiB/s"))
    board.run("mtd-erase /dev/mtd0 0 65536")
    write = timed(board, "dd if=/tmp/in of=/dev/mtd0 bs=4096")
    read = timed(board, "dd if=/dev/mtd0 of=/tmp/back bs=65536 count=16")
    rows.append(("SPI NOR flash at 12 MHz through MTD: write 64 KiB / read the 1 MiB flash "
                 "(0.70 s of wire time)", f"{64 / write:.1f} KiB/s / {read:.2f} s = {1 / read:.2f} MiB/s"))
    uart = board.peripheral("uart2")
    board.run("stty -F /dev/ttyAMA2 3000000 raw -echo -ixon -ixoff")
    start = time.monotonic()
    board.run("cat /tmp/in > /dev/ttyAMA2")
    sent = uart.take_from_guest(65536, timeout=120)
    seconds = time.monotonic() - start
    rows.append(("UART at 3 Mbaud by DMA, 64 KiB guest to host (0.22 s of line time)",
                 f"{seconds:.2f} s{'' if len(sent) == 65536 else f' ({len(sent)} bytes only)'}"))
    i2s = board.peripherals["i2s0"]
    underruns, cpu = i2s.underruns, time.process_time()
    seconds = timed(board, "pcmtest play /dev/snd/pcmC0D0p 48000 1000 240000")
    cpu = time.process_time() - cpu
    rows.append(("I2S playback, 5 s of 48 kHz stereo: wall time / harness CPU per audio second",
                 f"{seconds:.2f} s / {cpu / 5:.2f} s (underruns {i2s.underruns - underruns})"))
    return rows


def dmatest_side_by_side(artifacts, first: str, second: str, what: str,
                         runs: int = 3) -> list[tuple[str, str]]:
    """1 MiB and 4 KiB dmatest copies on two platforms' dma0chan0, each on a wall-time board:
    rows "<what>" with first / second and their ratio.  Each is the best of ``runs`` runs: the
    host only ever slows a run down (a run of 200 copies lasts well under a second)."""
    results = {}
    for platform in (first, second):
        board = Board(load_platform(platform), artifacts, logdir(),
                      time="wall")
        with board:
            results[platform] = (max(dmatest_throughput(board, 1 << 20, 200) for _ in range(runs)),
                                 max(dmatest_throughput(board, 4096, 3000) for _ in range(runs)))
    rows = []
    for i, label in enumerate(("1 MiB", "4 KiB")):
        a, b = results[first][i], results[second][i]
        rows.append((f"PL330 dmatest {label} copies: {what}",
                     f"{a / 1000:,.1f} / {b / 1000:,.1f} MB/s = {a / b:.2f}x"))
    return rows


def pl330_side_by_side(artifacts) -> list[tuple[str, str]]:
    """The same dmatest through the Python PL330 and through QEMU's C PL330 (hw/dma/pl330.c)."""
    return dmatest_side_by_side(artifacts, "virt", "virt-qemu-pl330", "Python model / QEMU's C model")


def iommu_cost(artifacts) -> list[tuple[str, str]]:
    """The same dmatest through a Rockchip IOMMU (virt-iommu) and straight to RAM (virt): what
    the translation layer and the upstream driver's IOVA mappings cost."""
    return dmatest_side_by_side(artifacts, "virt-iommu", "virt", "through the IOMMU / without")


def cache_model_cost(artifacts, boots: int) -> list[tuple[str, str]]:
    """Boot and dmatest with the cache model off and on (report mode)."""
    rows = []
    off, on = boot_seconds(artifacts, boots, {"cache": "off"}, {"cache": "report"})
    boot = {"off": statistics.median(off), "report": statistics.median(on)}
    rows.append((f"boot to shell, cache model off / on (median of {boots})",
                 f"{boot['off']:.2f} / {boot['report']:.2f} s = {boot['report'] / boot['off']:.2f}x"))
    for label, size, iterations, verify in (("verified, random sizes <= 16 KiB", 16384, 500, True),
                                            ("1 MiB unverified", 1 << 20, 100, False)):
        speed = {mode: with_board(artifacts, None, lambda board, s=size, i=iterations, v=verify:
                                  dmatest_throughput(board, s, i, v), cache=mode)
                 for mode in ("off", "report")}
        rows.append((f"PL330 dmatest {label}: cache model off / on",
                     f"{speed['off'] / 1000:,.2f} / {speed['report'] / 1000:,.2f} MB/s = "
                     f"{speed['off'] / speed['report']:.2f}x slower"))
    return rows


def suite_cost() -> list[tuple[str, str]]:
    """The whole test suite with the cache model off, then on: wall time of each."""
    repo = Path(__file__).resolve().parent.parent
    times = {}
    for mode in ("off", "report"):
        artifacts = logdir()
        log = artifacts / "pytest.log"
        start = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   f"--cosim-cache={mode}", "--cosim-artifacts", str(artifacts),
                                   "tests"], cwd=repo, stdout=out, stderr=subprocess.STDOUT)
        times[mode] = time.monotonic() - start
        if proc.returncode != 0:
            summary = log.read_text().strip().splitlines()[-1]
            raise SystemExit(f"the suite failed with the cache model {mode}: {summary} (see {log})")
    return [("whole test suite, cache model off / on (one run each, back to back)",
             f"{times['off'] / 60:.1f} / {times['report'] / 60:.1f} min = "
             f"{times['report'] / times['off']:.2f}x")]


SAMPLE_REPOSITORY = Path(__file__).resolve().parent.parent / "tests" / "integration" / "user_repository"


def edit_to_shell(edits: int = 3) -> list[tuple[str, str]]:
    """A user's repository (the sample one): one line of their module's source changed, then
    the time until the guest's shell is up with the rebuilt module loaded."""
    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as tmp:
        repo = Path(tmp) / "acme"
        shutil.copytree(SAMPLE_REPOSITORY, repo)
        sys.path.insert(0, str(repo))
        pm = create_plugin_manager((importlib.import_module("acme_plugin"),))
        source = repo / "drivers" / "acme_dma" / "acme_dma.c"

        def boot() -> float:
            start = time.monotonic()
            platform = load_platform(repo / "acme.yaml")
            with Board(platform, build_for(platform), Path(tmp) / "logs", pm=pm) as board:
                elapsed = time.monotonic() - start
                assert board.run("cat /sys/module/acme_dma/parameters/seed").output == "51"
            return elapsed

        boot()  # the first build of the module and its layer
        times = []
        for edit in range(edits):
            source.write_text(source.read_text().replace("copies that many bytes",
                                                         f"copies that many bytes ({edit})", 1))
            times.append(boot())
    return [(f"edit one module's source to the guest's shell with it loaded (median of {edits})",
             f"{statistics.median(times):.1f} s (each: {', '.join(f'{t:.1f}' for t in times)})")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--boots", type=int, default=7)
    parser.add_argument("--only", choices=["edit-to-shell", "cache-model", "iommu", "suite-cost"],
                        help="run one benchmark (suite-cost: the whole suite twice, ~40 min)")
    args = parser.parse_args()
    if args.only == "edit-to-shell":
        print(edit_to_shell())
        return
    if args.only == "cache-model":
        print(cache_model_cost(build_all(), args.boots))
        return
    if args.only == "iommu":
        print(iommu_cost(build_all()))
        return
    if args.only == "suite-cost":
        print(suite_cost())
        return
    artifacts = build_all()
    rows: list[tuple[str, str]] = edit_to_shell()

    bare, full, wall = boot_seconds(artifacts, args.boots, {"platform": "virt-bare"}, {},
                                    {"time": "wall"})
    ratio = statistics.median(full) / statistics.median(bare)
    rows.append((f"boot to shell, no Python peripherals (median of {args.boots})",
                 f"{statistics.median(bare):.2f} s"))
    rows.append(("boot to shell, default platform (11 Python models)",
                 f"{statistics.median(full):.2f} s"))
    rows.append(("boot ratio with / without Python peripherals", f"{ratio:.2f}x"))
    rows.append((f"boot to shell, virtual / wall time (median of {args.boots}, taking turns)",
                 f"{statistics.median(full):.2f} / {statistics.median(wall):.2f} s = "
                 f"{statistics.median(full) / statistics.median(wall):.2f}x"))

    pinned = with_board(artifacts, None, mmio_rate)
    unpinned = with_board(artifacts, set(), mmio_rate)
    rows.append(("MMIO round trips/s, QEMU + bridge on one core (default)",
                 f"{pinned:,.0f} ({1e6 / pinned:.1f} us each)"))
    rows.append(("MMIO round trips/s, unpinned (COSIM_PIN=off)",
                 f"{unpinned:,.0f} ({1e6 / unpinned:.1f} us each)"))

    def bandwidth(board: Board) -> tuple[float, float]:
        return copy_bandwidth(board, 4096, 5000), copy_bandwidth(board, 1 << 20, 300)

    small, large = with_board(artifacts, None, bandwidth)
    rows.append(("DMA copy bandwidth, 4 KiB transfers (guest driver, IRQ per copy)", f"{small:,.0f} MB/s"))
    rows.append(("DMA copy bandwidth, 1 MiB transfers (cache model on, the default)",
                 f"{large:,.0f} MB/s"))

    rows += with_board(artifacts, None, slave_dma, clock=None)
    rows += pl330_side_by_side(artifacts)
    rows += iommu_cost(artifacts)
    rows += cache_model_cost(artifacts, args.boots)

    table = "| measurement | result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    print(table)
    (Path(__file__).parent / "results.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
