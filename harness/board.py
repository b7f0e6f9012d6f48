"""A running board: the strategy that sequences small parts, as labgrid's strategies do.

Start: assembly (models and wiring, already checked) → guest RAM on the bus → bridge endpoints
for the models' registers and interrupts → device tree → consoles → engine → guest ready.
Stop: the reverse, keeping the logs.  Whatever goes wrong surfaces as a :class:`BoardFailure`
(cosim.watch) at the next wait, with the logs that explain it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy

from . import collector, hygiene
from .assembly import Assembly
from .binding import UNBOUND_COMMAND, ModelDevice, UnboundDeviceWarning, unbound_devices
from .bridge import BridgeEndpoint, BridgeFailure, PostedRing, Replies
from .build import Artifacts
from .bus import Memory, keep_freed_heap
from .cachemodel import CacheModel, CoherencyLayer, Mode
from .cachemodel.reports import (
    SWIOTLB_BOUNCED,
    TRACE,
    TRACE_EVENTS,
    CacheReport,
    CacheWatch,
    describe_fault_address,
    describe_truncation,
    parse_dma_trace,
)
from .clock import IdleHold
from .console import (
    CommandFailed,
    CommandResult,
    CommandTimeout,
    ConsoleNotConnected,
    Consoles,
    KernelLog,
    ShellConsole,
)
from .devicetree import compile_dts, delete_nodes_dts, node_paths, overlay_dts
from .engines.qemu.engine import BridgedDevice, CacheDevice, NativeDevice, QemuEngine, default_pinning, pin
from .peripheral import Peripheral
from .platform import LoadedPlatform, PlatformError
from .pluginmanager import default_plugin_manager
from .share import GuestShare
from .spi import SpiDevice
from .watch import BoardFailure, FailureWatch

__all__ = ["Board", "BoardFailure"]

BOOTARGS = "console=ttyAMA0 rdinit=/init panic=-1 loglevel=7"
BOOT_TIMEOUT_S = 60.0
# cosim-share's reading of the guest's clock against the virtual counter (cosim_share.c)
CLOCK_LINE = re.compile(r"cosim-share: clock: sched_clock (?P<sched>\d+) ns at virtual counter "
                        r"(?P<counter>\d+) ns")


class Board:
    """One emulated board: its models, QEMU, the guest's consoles and the failure watch.  A test
    gets one from a fixture (``board``, ``module_board``, ``cosim_board_factory``) or makes one
    (``with Board(load_platform("virt"), build_all(), logdir) as board:``).

    Besides the members below: ``bus`` (the DMA path and what it saw: ``faults``,
    ``truncations``, ``hazards``, ``width_mismatches``), ``unbound`` (models' devices no guest
    driver bound, found after boot), ``platform`` (the loaded platform, ``.spec``), ``logdir``
    and ``trace`` (the timeline, saved as ``trace.json``)."""

    def __init__(self, platform: LoadedPlatform, artifacts: Artifacts, logdir: Path,
                 pm: pluggy.PluginManager | None = None, pin_cpus: set[int] | None = None,
                 host_folder: Path | None = None, cache: str | None = None, time: str | None = None):
        self.platform, self.artifacts, self.logdir = platform, artifacts, logdir
        # the guest's clock, "wall" or "virtual": the platform's machine.time unless the caller says
        self.time_mode = time or platform.spec.machine.time
        if self.time_mode not in ("wall", "virtual"):
            raise ValueError(f"time '{self.time_mode}': use wall or virtual")
        # the cache model's mode: the platform's machine.cache unless the caller (a test) says
        self.cache_mode = cache or platform.spec.machine.cache
        if self.cache_mode not in ("off", "report", "emulate"):
            raise ValueError(f"cache mode '{self.cache_mode}': use off, report or emulate")
        self.cache: CacheWatch | None = None
        self.idle_hold: IdleHold | None = None  # virtual time: the hold on an idle guest
        # Shared read-write with the guest, which mounts it at /mnt/host (virtio-9p, see its init);
        # kept with the logs by default
        self.host_folder = host_folder or logdir / "host"
        self.pm = pm or default_plugin_manager()
        self.pin_cpus = default_pinning() if pin_cpus is None else pin_cpus
        self.engine = QemuEngine(artifacts.qemu, platform.spec.machine)
        self.assembly = Assembly(platform, self.engine.layout, self.pm)
        self.bus, self.trace = self.assembly.bus, self.assembly.trace
        self.watch = FailureWatch(self.bus, logdir, self.engine.exit_code)
        self.share = GuestShare(self.engine.layout.ram_base, platform.spec.machine.memory)
        self.endpoints: list[BridgeEndpoint] = []
        self.posted_ring: PostedRing | None = None  # QEMU and the endpoints share it while it runs
        self.unbound: list[str] = []  # models' devices no guest driver bound, found after boot
        self.consoles: Consoles | None = None
        self.workdir: Path | None = None

    # --- what tests use ---

    @property
    def peripherals(self) -> dict[str, Peripheral]:
        """The models by their platform names."""
        return self.assembly.peripherals

    @property
    def spi_devices(self) -> dict[str, SpiDevice]:
        """The SPI devices (platform ``devices:``) by name."""
        return self.assembly.spi_devices

    def peripheral(self, name: str) -> Any:
        """The model named ``name`` in the platform (the object itself: its state, its methods)."""
        return self.peripherals[name]

    @property
    def kernel_log(self) -> KernelLog | None:
        """The guest kernel's console: ``text()``, ``settle()``; None before the board starts."""
        return self.consoles.kernel_log if self.consoles else None

    @property
    def console(self) -> ShellConsole | None:
        return self.consoles.shell if self.consoles else None

    @property
    def failure(self) -> BoardFailure | None:
        """What broke the board, once something did (it then raises it on every use)."""
        return self.watch.failure

    def check(self) -> None:
        """Raises the board's failure, if any; between guest commands, cache-model events become
        reports first (that may ask the guest for symbols and its DMA trace).  Faults are explained
        before: a cache report that follows from a fault must not be the failure shown."""
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        self.explain_faults()
        self.settle_cache()
        self.watch.check(between_commands=True)

    @property
    def cache_reports(self) -> list[CacheReport]:
        """Every cache-model report so far (expected or not)."""
        self.settle_cache()
        return list(self.cache.reports) if self.cache else []

    def _answering_shell(self) -> ShellConsole | None:
        """The guest's shell while it can answer: QEMU running, the board not broken."""
        if self.engine.exit_code() is not None or self.watch.failure is not None:
            return None
        return self.console

    def _trace_clock_offset(self) -> int | None:
        """How far (ns) the guest's sched_clock, which stamps its trace events, runs behind QEMU's
        virtual clock: cosim-share reads both at once when it probes.  None if it did not say."""
        if self.kernel_log is None:
            return None
        said = CLOCK_LINE.search(self.kernel_log.text())
        return None if said is None else int(said["counter"]) - int(said["sched"])

    def settle_cache(self) -> None:
        """Turns the cache model's events into reports, asking the guest while it can answer."""
        if self.cache is None or not self.cache.has_events():
            return
        shell = self._answering_shell()
        if shell is None:
            self.cache.settle(None)
            return
        try:
            self.cache.settle(lambda command: shell.run(command, timeout=60, check=False).output)
        except (CommandTimeout, OSError):
            self.cache.settle(None)

    def explain_faults(self) -> None:
        """Notes, for each unexpected DMA fault, the guest's last mapping that covered its
        address, and for each address truncation the mapping the driver gave and what lies at the
        address reached instead (from the ``dma`` trace events), while the guest can answer."""
        watch = self.watch
        faults = [i for i in watch.unexpected_faults() if i not in watch.fault_notes]
        truncations = [i for i in watch.unexpected_truncations() if i not in watch.truncation_notes]
        shell = self._answering_shell() if faults or truncations else None
        if shell is None:
            return
        try:
            trace = shell.run(f"[ -d {TRACE_EVENTS} ] && cat {TRACE}", timeout=60, check=False)
        except (CommandTimeout, OSError):
            return
        mappings = parse_dma_trace(trace.output)
        unknown = "the guest kernel has no dma trace events to say more"
        offset = self._trace_clock_offset()
        for i in faults:
            fault = self.bus.faults[i]
            at = (None if offset is None or fault.guest_ns is None
                  else (fault.guest_ns - offset) / 1e9)
            watch.fault_notes[i] = (describe_fault_address(fault.master, fault.address, mappings, at)
                                    if trace.status == 0 else unknown)
        for i in truncations:
            t = self.bus.truncations[i]
            watch.truncation_notes[i] = (describe_truncation(t.master, t.issued, t.address, mappings)
                                         if trace.status == 0 else unknown)

    @contextlib.contextmanager
    def expect(self, *categories: str, dma_faults: int = 0, width_mismatches: int = 0,
               truncations: int = 0, hazards: int = 0) -> Iterator[None]:
        """Within the block, the named kernel-log categories (e.g. "DMA-API"), cache-model
        reports ("cache"), up to ``dma_faults`` DMA faults, ``width_mismatches`` DMA width
        mismatches, ``truncations`` address truncations (accesses of a master given an address
        wider than its bus) and ``hazards`` models' hazard reports are expected."""
        with self.watch.expect(*categories, dma_faults=dma_faults, width_mismatches=width_mismatches,
                               truncations=truncations, hazards=hazards):
            yield
            self.settle_cache()  # reports of what happened inside the block are expected

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> CommandResult:
        """Runs a shell command in the guest: its output and exit status.  A status other than 0
        raises CommandFailed (unless ``check`` is False); the board's failures (an oops, a DMA
        fault, a model's exception) raise BoardFailure; ``timeout`` raises CommandTimeout."""
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        assert self.console is not None, "the board is not started"
        try:
            result = self.console.run(command, timeout=timeout, check=False)
        except CommandTimeout:
            self.check()  # a command stuck after a DMA fault fails with the fault
            raise
        if result.status != 0 and self.kernel_log is not None:
            # An oops that killed the command arrives on the other console: the board's
            # failure, with the kernel's report, is the cause to show, not "Segmentation fault".
            self.kernel_log.settle(quiet_s=0.1, limit_s=1.0)
        self.check()
        if check and result.status != 0:
            raise CommandFailed(result)
        return result

    def push(self, data: bytes | bytearray | Path, guest_path: str, timeout: float = 120.0) -> None:
        """Puts ``data`` (or a host file's content) at ``guest_path``, through guest RAM: fast
        for images of many MiB (up to ``board.share.size`` at a time)."""
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        self.share.push(self.run, data, guest_path, timeout)

    def pull(self, guest_path: str, timeout: float = 120.0) -> bytes:
        """The content of ``guest_path`` in the guest, through guest RAM."""
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        return self.share.pull(self.run, guest_path, timeout)

    def device_tree_source(self) -> str:
        """The DTS the guest boots with: the machine's tree, the models' nodes, dropped nodes."""
        nodes, aliases = self.assembly.device_tree_nodes(noncoherent=self.cache_mode != "off")
        nodes += self.share.device_tree_nodes()
        base = self.engine.base_device_tree()
        drop = self.platform.spec.machine.drop_nodes
        existing = node_paths(base)
        for i, path in enumerate(drop):
            if path not in existing:
                top = ", ".join(p for p in existing if p.count("/") == 1)
                raise PlatformError(f"{self.platform.where('machine', 'drop_nodes', i)}: the machine's "
                                    f"device tree has no node {path} — its top-level nodes: {top}")
        return base + overlay_dts(nodes, aliases) + delete_nodes_dts(drop)

    # --- life cycle ---

    def start(self, boot_timeout: float = BOOT_TIMEOUT_S, extra_qemu_args: list[str] | None = None) -> None:
        """Boots the board up to the guest's shell (fixtures do it); stops it again on failure."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.workdir = hygiene.open_workdir(self)
        try:
            self._start(self.workdir, boot_timeout, extra_qemu_args or [])
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir: Path, boot_timeout: float, extra_qemu_args: list[str]) -> None:
        collector.collect()  # before any guest of this board waits on the models
        keep_freed_heap()
        ram_file = self._guest_ram(workdir)
        cache = self._cache_model(workdir, ram_file) if self.cache_mode != "off" else None
        idle_hold = None
        if self.time_mode == "virtual":
            self.idle_hold = IdleHold(workdir / "idle-hold")
            idle_hold = self.idle_hold.path
            self.trace.clock = self.assembly.clock  # the timeline in the guest's time
        self.assembly.build(on_host_failure=lambda name, message, details: self.watch.model_failed(
            BridgeFailure(name, message, details)))
        bridged = self._bridge_endpoints(workdir)
        dts = self.device_tree_source()
        (self.logdir / "board.dts").write_text(dts)
        compile_dts(dts, workdir / "board.dtb")
        self.consoles = Consoles(workdir, self.logdir)
        self.host_folder.mkdir(parents=True, exist_ok=True)
        spec = self.platform.spec
        cmd = self.engine.command(
            ram_file=ram_file, dtb=workdir / "board.dtb", kernel=self.artifacts.kernel,
            initramfs=self._initramfs(workdir), host_folder=self.host_folder,
            bootargs=" ".join(filter(None, [BOOTARGS, spec.guest.bootargs])),
            kernel_console=self.consoles.kernel_socket, shell_console=self.consoles.shell_socket,
            devices=bridged, extra_args=extra_qemu_args, cache=cache, idle_hold=idle_hold,
            native=[NativeDevice(q.model, q.base, tuple(q.irqs), {k: str(v) for k, v in q.props.items()},
                                 q.link_memory) for q in spec.qemu_devices])
        (self.logdir / "qemu-cmdline.txt").write_text(" ".join(cmd) + "\n")
        for endpoint in self.endpoints:
            endpoint.start(self.peripherals[endpoint.name])
        self.engine.start(cmd, self.logdir / "qemu-stderr.log", self.pin_cpus)
        try:
            self.watch.kernel_log, _ = self.consoles.connect(self.watch.check)
        except ConsoleNotConnected as e:
            raise BoardFailure(self.watch.report(str(e))) from None
        if self.pin_cpus:  # again: the vCPU thread exists only now
            pin(self.engine.process.pid, self.pin_cpus)  # type: ignore[union-attr]
        assert self.console is not None
        self.console.wait_ready(boot_timeout)
        if self.idle_hold is not None:  # from now on the guest's idle time runs during commands
            self.console.idle_hold = self.idle_hold
            self.idle_hold.hold()
        # the DMA API's calls, to name the buffers in cache reports and fault reports, and
        # swiotlb's bounces of mappings a master cannot reach
        self.console.run(f"for e in {TRACE_EVENTS} {SWIOTLB_BOUNCED}; do [ -d $e ] && "
                         "echo 1 > $e/enable; done; true", check=False)
        self.unbound = self._unbound_devices()
        for line in self.unbound:
            warnings.warn(UnboundDeviceWarning(line), stacklevel=3)
        self.pm.hook.cosim_board_started(board=self)
        collector.freeze()

    def _unbound_devices(self) -> list[str]:
        """The models whose devices no guest driver bound, each with why (cosim.binding)."""
        assert self.console is not None
        devices = [ModelDevice(name, entry.spec.base, entry.cls.compatible, entry.cls.primecell_id)
                   for name, entry in self.assembly.entries.items()]
        output = self.console.run(UNBOUND_COMMAND, check=False).output
        return unbound_devices(devices, output, self.artifacts.build.tree)

    def _initramfs(self, workdir: Path) -> Path:
        """cosim's image with the layers appended: Linux unpacks concatenated archives in turn."""
        if not self.artifacts.layers:
            return self.artifacts.initramfs
        image = workdir / "initramfs.cpio"
        with image.open("wb") as out:
            for part in (self.artifacts.initramfs, *self.artifacts.layers):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out)
        return image

    def _guest_ram(self, workdir: Path) -> Path:
        """Guest RAM is a file QEMU maps shared: models DMA straight into it through the bus."""
        machine = self.platform.spec.machine
        ram_file = workdir / "guest-ram"
        with ram_file.open("wb") as f:
            f.truncate(machine.memory)
        ram = Memory.shared_file("ram", self.engine.layout.ram_base, ram_file, machine.memory)
        self.bus.add_memory(ram)
        self.share.attach(ram.view)
        return ram_file

    def _cache_model(self, workdir: Path, ram_file: Path) -> CacheDevice:
        """The CPU data-cache model: its state file, its place on the DMA path, its reports."""
        if not self.engine.has_device("cosim-cache"):
            raise BoardFailure(
                f"the platform asks for the cache model (machine.cache: {self.cache_mode}) but "
                f"this QEMU ({self.artifacts.qemu}) was built without it (no cosim-cache device): "
                "rebuild it with `cosim build`, or set machine.cache: off")
        state = workdir / "cache-state"
        model = CacheModel(state, ram_file, self.engine.layout.ram_base,
                           self.platform.spec.machine.memory, Mode[self.cache_mode.upper()])
        layer = CoherencyLayer(model)
        self.bus.add_layer(layer, "coherency")
        self.cache = CacheWatch(model, layer, self.artifacts.build.tree / "System.map",
                                self.logdir / "cache-reports.txt", self.trace)
        self.watch.cache = self.cache
        return CacheDevice(state, int(model.mode))

    def _bridge_endpoints(self, workdir: Path) -> list[BridgedDevice]:
        """One endpoint per model serves its registers to QEMU and carries its interrupts."""
        bridged, replies = [], Replies(PostedRing(workdir / "posted-ring"))
        self.posted_ring = replies.ring
        for index, entry in enumerate(self.assembly.entries.values()):
            endpoint = BridgeEndpoint(entry.name, workdir / f"{entry.name}.sock", self.watch.model_failed,
                                      self.pin_cpus, index, replies)
            self.endpoints.append(endpoint)
            self.assembly.irq_relays[entry.name].bind(endpoint)
            bridged.append(BridgedDevice(entry.name, endpoint.socket_path, entry.spec.base, entry.size,
                                         tuple(entry.spec.irqs), index, entry.cls.posted_offsets(),
                                         replies.ring.path))
        return bridged

    def stop(self) -> None:
        """Stops QEMU and the models and keeps the logs; nothing is left behind."""
        if self.workdir is None:
            return
        with contextlib.suppress(Exception):
            self.pm.hook.cosim_board_stopping(board=self, artifacts=self.logdir)
        self.engine.stop()
        self.assembly.close()  # host threads first: they may still signal through endpoints
        # the host's pauses go on a host-time line only: the guest's time never saw them
        pauses = collector.pauses_since(self.trace.origin_ns) if self.trace.clock is None else []
        for start, end, generation in pauses:
            self.trace.span("harness", "garbage collection", self.trace.at(start), self.trace.at(end),
                            generation=generation)
        for endpoint in self.endpoints:
            endpoint.close()
        if self.posted_ring is not None:
            self.posted_ring.close()
        self.assembly.save(self.logdir, {e.name: e.accesses for e in self.endpoints})
        if self.consoles is not None:
            self.consoles.close()
        self.share.detach()
        if self.cache is not None:
            self.cache.model.close()
        if self.idle_hold is not None:
            self.idle_hold.close()
            self.idle_hold = None
        self.bus.close()
        hygiene.close_workdir(self, self.workdir)
        self.workdir = None
        collector.collect()
        collector.freeze()  # for the boards still running

    def __enter__(self) -> Board:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
