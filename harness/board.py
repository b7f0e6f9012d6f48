"""A running board: one guest, its peripheral models, its consoles — and everything that can fail.

:class:`Board` composes small parts (engine, bridge endpoints, bus, device tree, consoles) the way
labgrid's strategies compose drivers.  Whatever goes wrong — a plugin exception, a kernel oops,
QEMU exiting, an unexpected DMA fault — surfaces as a :class:`BoardFailure` at the next wait, with
the logs that explain it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy

from .bridge import BridgeEndpoint, BridgeFailure
from .build import Artifacts
from .bus import Bus, BusTracer, Memory
from .console import EXPECTABLE, CommandResult, KernelLog, ShellConsole
from .devicetree import Cell, DtNode, Ref, compile_dts, overlay_dts, reg_cells, spi_cells
from .dmarequest import DmaRequestPort
from .engines.qemu.engine import BridgedDevice, NativeDevice, QemuEngine, pin
from .gpio import GPIO_ACTIVE_LOW
from .peripheral import Peripheral, PeripheralConfig
from .platform import BusDeviceSpec, LoadedPlatform, PeripheralSpec, PlatformError
from .pluginmanager import default_plugin_manager, peripheral_types, spi_device_types
from .protocol import MAX_IRQ_CHANGES_PER_REPLY
from .spi import SpiDevice
from .trace import EventTrace

BOOTARGS = "console=ttyAMA0 rdinit=/init panic=-1 loglevel=7"
BOOT_TIMEOUT_S = 60.0
WORKDIR_PARENT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
WORKDIR_PREFIX = "cosim-"


_live_boards: weakref.WeakSet[Board] = weakref.WeakSet()


@atexit.register
def _stop_live_boards() -> None:
    """However the harness ends (Ctrl-C included), no QEMU, socket or RAM file stays behind."""
    for board in list(_live_boards):
        board.stop()


def _terminate_like_interrupt(signum: int, frame: object) -> None:
    # KeyboardInterrupt, not SystemExit: pytest ends a session on it (a SystemExit inside a test
    # is only that test's failure, and the run would go on booting boards).
    raise KeyboardInterrupt(f"signal {signum}")


def _unwind_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so boards stop and clean up."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)


def default_pinning() -> set[int]:
    """QEMU and the bridge threads share one core (wake-ups across cores cost ~70 us on these
    VMs; see the README's numbers).  COSIM_PIN=off disables it, COSIM_PIN=3 picks core 3."""
    setting = os.environ.get("COSIM_PIN", "auto")
    if setting == "off":
        return set()
    if setting == "auto":
        return {max(os.sched_getaffinity(0))}
    return {int(cpu) for cpu in setting.split(",")}


class BoardFailure(AssertionError):
    """The board broke; the message carries the cause and where the logs are."""


def sweep_stale_workdirs() -> None:
    """Removes private folders of harness processes that died without cleaning up."""
    for folder in WORKDIR_PARENT.glob(f"{WORKDIR_PREFIX}*"):
        try:
            pid = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


class Board:
    def __init__(self, platform: LoadedPlatform, artifacts: Artifacts, logdir: Path,
                 pm: pluggy.PluginManager | None = None, pin_cpus: set[int] | None = None):
        self.platform, self.artifacts = platform, artifacts
        self.logdir = logdir
        self.pm = pm or default_plugin_manager()
        self.pin_cpus = default_pinning() if pin_cpus is None else pin_cpus
        self.types = peripheral_types(self.pm)
        self.spi_types = spi_device_types(self.pm)
        self.engine = QemuEngine(artifacts.qemu, platform.spec.machine)
        self._check_platform()
        self.bus = Bus()
        self.tracer = BusTracer()
        self.bus.add_layer(self.tracer)
        self.peripherals: dict[str, Peripheral] = {}
        self.spi_devices: dict[str, SpiDevice] = {}
        self.model_lock = threading.RLock()  # one for all models: see Peripheral.lock
        self.trace = EventTrace()
        self.endpoints: list[BridgeEndpoint] = []
        self.failures: list[BridgeFailure] = []
        self.expected_dma_faults = 0
        self.expected_width_mismatches = 0
        self.failure: BoardFailure | None = None
        self._failure_lock = threading.Lock()
        self.workdir: Path | None = None
        self.kernel_log: KernelLog | None = None
        self.console: ShellConsole | None = None

    # --- checks before anything starts ---

    def _check_platform(self) -> None:
        spec, engine = self.platform.spec, self.engine
        windows: list[tuple[int, int, str]] = []
        for i, q in enumerate(spec.qemu_devices):
            self._check_window(("qemu_devices", i), q.name, q.base, q.size, windows)
        for i, p in enumerate(spec.peripherals):
            where = self.platform.where("peripherals", i)
            if p.plugin not in self.types:
                known = ", ".join(sorted(self.types)) or "none"
                raise PlatformError(f"{self.platform.where('peripherals', i, 'plugin')}: unknown "
                                    f"plugin '{p.plugin}' — installed plugins: {known}")
            size = p.size or self.types[p.plugin].default_size
            self._check_window(("peripherals", i), p.name, p.base, size, windows)
            wanted = len(self.types[p.plugin].irq_names)
            if wanted > MAX_IRQ_CHANGES_PER_REPLY:
                raise PlatformError(f"{where}: plugin '{p.plugin}' declares {wanted} IRQ outputs; "
                                    f"the bridge carries at most {MAX_IRQ_CHANGES_PER_REPLY}")
            if len(p.irqs) != wanted:
                raise PlatformError(f"{self.platform.where('peripherals', i, 'irqs')}: '{p.name}' "
                                    f"({p.plugin}) has {wanted} IRQ outputs "
                                    f"{list(self.types[p.plugin].irq_names)}; give {wanted} SPIs")
            for spi in p.irqs:
                if spi not in engine.peripheral_spis:
                    r = engine.peripheral_spis
                    raise PlatformError(f"{self.platform.where('peripherals', i, 'irqs')}: SPI "
                                        f"{spi} is not free on virt — use {r.start}..{r.stop - 1}")
        names = {p.name: p for p in spec.peripherals}
        for i, p in enumerate(spec.peripherals):
            for request, (target, _line) in p.dmas.items():
                where = self.platform.where("peripherals", i, "dmas", request)
                offered = self.types[p.plugin].dma_request_names
                if request not in offered:
                    raise PlatformError(f"{where}: '{p.name}' ({p.plugin}) has no DMA request "
                                        f"'{request}' — it has {list(offered) or 'none'}")
                if target not in names or not hasattr(self.types[names[target].plugin], "dma_request"):
                    raise PlatformError(f"{where}: '{target}' is not a DMA controller of this "
                                        "platform — name one that takes requests (e.g. a pl330)")
            self._check_gpios(i, p, names)
            self._check_devices(i, p)
        spis = [s for p in [*spec.peripherals, *spec.qemu_devices] for s in p.irqs]
        if len(spis) != len(set(spis)):
            raise PlatformError(f"{self.platform.where('peripherals')}: two peripherals share an SPI")

    def _check_gpios(self, i: int, p: PeripheralSpec, names: dict[str, PeripheralSpec]) -> None:
        for name, lines in p.gpios.items():
            where = self.platform.where("peripherals", i, "gpios", name)
            offered = self.types[p.plugin].gpio_input_names
            if name not in offered:
                raise PlatformError(f"{where}: '{p.name}' ({p.plugin}) has no GPIO input '{name}' "
                                    f"— it has {list(offered) or 'none'}")
            for target, _line in lines:
                cls = self.types[names[target].plugin] if target in names else None
                if cls is None or not hasattr(cls, "connect_gpio_output"):
                    raise PlatformError(f"{where}: '{target}' is not a GPIO controller of this "
                                        "platform — name one (e.g. a pl061)")

    def _check_devices(self, i: int, p: PeripheralSpec) -> None:
        if p.devices and not hasattr(self.types[p.plugin], "attach"):
            raise PlatformError(f"{self.platform.where('peripherals', i, 'devices')}: '{p.name}' "
                                f"({p.plugin}) has no bus for devices")
        for j, d in enumerate(p.devices):
            where = self.platform.where("peripherals", i, "devices", j)
            if d.model not in self.spi_types:
                known = ", ".join(sorted(self.spi_types)) or "none"
                raise PlatformError(f"{self.platform.where('peripherals', i, 'devices', j, 'model')}"
                                    f": unknown SPI device model '{d.model}' — installed: {known}")
            if self.spi_types[d.model].needs_chip_select and len(p.gpios.get("cs", [])) <= d.reg:
                raise PlatformError(f"{where}: '{d.name}' ({d.model}) needs a chip select: wire "
                                    f"GPIO line {d.reg} of '{p.name}' (gpios: {{cs: [...]}})")

    def _check_window(self, loc: tuple[str, int], name: str, base: int, size: int,
                      windows: list[tuple[int, int, str]]) -> None:
        lo, hi = self.engine.peripheral_window
        if not (lo <= base and base + size <= hi):
            raise PlatformError(f"{self.platform.where(*loc, 'base')}: window {base:#x}+{size:#x} of "
                                f"'{name}' is outside the free window {lo:#x}..{hi:#x} of "
                                f"{self.engine.name} virt — move it there")
        for start, end, other in windows:
            if base < end and start < base + size:
                raise PlatformError(f"{self.platform.where(*loc)}: window of '{name}' "
                                    f"({base:#x}+{size:#x}) overlaps '{other}' ({start:#x}..{end:#x})"
                                    " — move one")
        windows.append((base, base + size, name))

    # --- failures ---

    def _on_bridge_failure(self, failure: BridgeFailure) -> None:
        with self._failure_lock:
            self.failures.append(failure)
        self.trace_line(f"FAILURE {failure.peripheral}: {failure.message}\n{failure.traceback}")

    def trace_line(self, text: str) -> None:
        if self.workdir is not None:
            with (self.logdir / "plugin-trace.log").open("a") as f:
                f.write(text.rstrip() + "\n")

    def check(self) -> None:
        """Raises BoardFailure if anything went wrong; the console calls it while it waits.

        The first failure sticks: a broken board raises it again on every later use."""
        if self.failure is not None:
            raise self.failure
        cause = self._find_failure()
        if cause is not None:
            self.failure = BoardFailure(cause)
            raise self.failure

    def _find_failure(self) -> str | None:
        if self.failures:
            f = self.failures[0]
            return self._report(f"peripheral '{f.peripheral}': {f.message}", f.traceback)
        if self.kernel_log is not None and (events := self.kernel_log.unexpected()):
            self.kernel_log.settle()
            lines = "\n".join(f"  [{e.category}] {e.line}" for e in events[:5])
            return self._report(f"the guest kernel reported:\n{lines}")
        unexpected = len(self.bus.faults) - self.expected_dma_faults
        if unexpected > 0:
            faults = "\n".join(f"  {f}" for f in self.bus.faults[-unexpected:][:5])
            return self._report(f"unexpected DMA fault(s):\n{faults}")
        unexpected = len(self.bus.width_mismatches) - self.expected_width_mismatches
        if unexpected > 0:
            lines = "\n".join(f"  {m}" for m in self.bus.width_mismatches[-unexpected:][:5])
            return self._report(f"unexpected DMA width mismatch(es):\n{lines}")
        code = self.engine.exit_code()
        if code is not None:
            if self.kernel_log is not None:
                self.kernel_log.settle()
            stderr = (self.logdir / "qemu-stderr.log").read_text(errors="replace").strip()
            return self._report(f"QEMU exited with status {code}\nQEMU stderr:\n{stderr or '(empty)'}")
        return None

    def _report(self, cause: str, detail: str = "") -> str:
        parts = [cause]
        if detail:
            parts.append(detail.rstrip())
        if self.kernel_log is not None:
            parts.append("--- kernel log (tail) ---\n" + self.kernel_log.tail(40))
        parts.append(f"logs: {self.logdir}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def expect(self, *categories: str, dma_faults: int = 0, width_mismatches: int = 0) -> Iterator[None]:
        """Within the block, the named kernel-log categories (e.g. "DMA-API"), up to
        ``dma_faults`` DMA faults and ``width_mismatches`` DMA width mismatches are expected."""
        unknown = set(categories) - EXPECTABLE
        if unknown:
            raise ValueError(f"cannot expect {sorted(unknown)}; expectable: {sorted(EXPECTABLE)}")
        assert self.kernel_log is not None
        before = set(self.kernel_log.expected)
        self.kernel_log.expected |= set(categories) | ({"warning"} if "DMA-API" in categories else set())
        self.expected_dma_faults += dma_faults
        self.expected_width_mismatches += width_mismatches
        try:
            yield
        finally:
            self.kernel_log.expected = before

    # --- life cycle ---

    def _build_peripherals(self, workdir: Path) -> list[BridgedDevice]:
        devices = []
        for spec in self.platform.spec.peripherals:
            cls = self.types[spec.plugin]
            size = spec.size or cls.default_size
            endpoint = BridgeEndpoint(spec.name, workdir / f"{spec.name}.sock", self._on_bridge_failure,
                                      self.pin_cpus)
            self.endpoints.append(endpoint)
            config = PeripheralConfig(spec.name, spec.base, size, tuple(spec.irqs), spec.properties,
                                      spec.dt)
            try:
                peripheral = cls(config, self.bus, endpoint, lock=self.model_lock, trace=self.trace)
            except Exception as e:
                raise PlatformError(f"{self.platform.where('peripherals')}: plugin '{spec.plugin}' "
                                    f"failed to create '{spec.name}': {type(e).__name__}: {e}") from e
            peripheral.host_failure = (  # type: ignore[method-assign]
                lambda message, details, name=spec.name: self._on_bridge_failure(
                    BridgeFailure(name, message, details)))
            self.peripherals[spec.name] = peripheral
            self.bus.add_device(spec.base, size, peripheral)  # reachable by slave DMA
            devices.append(BridgedDevice(spec.name, endpoint.socket_path, spec.base, size,
                                         tuple(spec.irqs)))
        self._wire_dma_requests()
        self._build_spi_devices()
        self._wire_gpios()
        return devices

    def _build_spi_devices(self) -> None:
        for i, spec in enumerate(self.platform.spec.peripherals):
            for j, d in enumerate(spec.devices):
                try:
                    device = self.spi_types[d.model](d.name, d.properties, trace=self.trace)
                    self.peripherals[spec.name].attach(d.reg, device)  # type: ignore[attr-defined]
                except Exception as e:
                    raise PlatformError(f"{self.platform.where('peripherals', i, 'devices', j)}: "
                                        f"'{d.name}' ({d.model}): {type(e).__name__}: {e}") from e
                self.spi_devices[d.name] = device

    def _wire_gpios(self) -> None:
        for i, spec in enumerate(self.platform.spec.peripherals):
            consumer = self.peripherals[spec.name]
            for name, lines in spec.gpios.items():
                for index, (target, line) in enumerate(lines):
                    def on_change(level: bool, name: str = name, index: int = index,
                                  consumer: Peripheral = consumer) -> None:
                        consumer.gpio_input(name, index, level)
                    try:
                        self.peripherals[target].connect_gpio_output(line, on_change)  # type: ignore[attr-defined]
                    except ValueError as e:
                        where = self.platform.where("peripherals", i, "gpios", name)
                        raise PlatformError(f"{where}: {e}") from None

    def _wire_dma_requests(self) -> None:
        for i, spec in enumerate(self.platform.spec.peripherals):
            for request, (target, line) in spec.dmas.items():
                try:
                    port = DmaRequestPort(request, self.peripherals[target], line)
                except ValueError as e:
                    raise PlatformError(f"{self.platform.where('peripherals', i, 'dmas', request)}: "
                                        f"{e}") from None
                self.peripherals[spec.name].connect_dma_request(port)

    def device_tree_nodes(self) -> tuple[list[DtNode], dict[str, str]]:
        nodes, aliases = [], {}
        serial_index = 1  # serial0 is the machine's own UART, the kernel console
        for spec in self.platform.spec.peripherals:
            peripheral = self.peripherals[spec.name]
            node = DtNode(spec.name, spec.base)
            if peripheral.compatible:
                node.set("compatible", list(peripheral.compatible))
            node.set("reg", reg_cells(spec.base, peripheral.config.size))
            if spec.irqs:
                node.set("interrupts", spi_cells(spec.irqs))
            for d in spec.devices:
                node.child(self._spi_device_node(d))
            for name, lines in spec.gpios.items():
                gpio_cells: list[Cell] = []
                for target, line in lines:
                    gpio_cells += [self._node_ref(target), line, GPIO_ACTIVE_LOW]
                node.set(f"{name}-gpios", gpio_cells)
            self.pm.hook.cosim_device_tree(peripheral=peripheral, node=node)
            if spec.dmas:
                cells: list[Cell] = []
                for target, line in spec.dmas.values():
                    cells += [self._node_ref(target), line]
                node.set("dmas", cells)
                node.set("dma-names", list(spec.dmas))
            for key, value in spec.dt.items():
                node.set(key, value)
            if "arm,pl011" in peripheral.compatible:
                aliases[f"serial{serial_index}"] = f"/{node.full_name}"
                serial_index += 1
            nodes.append(node)
        for name, mapping in self.platform.spec.dt_nodes.items():
            nodes.append(DtNode.from_mapping(name, mapping))
        for q in self.platform.spec.qemu_devices:
            node = DtNode(q.name, q.base, {"compatible": list(q.compatible),
                                           "reg": reg_cells(q.base, q.size)})
            if q.irqs:
                node.set("interrupts", spi_cells(q.irqs))
            for key, value in q.dt.items():
                node.set(key, value)
            nodes.append(node)
        return nodes, aliases

    def _node_ref(self, peripheral: str) -> Ref:
        return Ref(f"/{peripheral}@{self.peripherals[peripheral].config.base:x}")

    def _spi_device_node(self, spec: BusDeviceSpec) -> DtNode:
        device = self.spi_devices[spec.name]
        node = DtNode(spec.name, spec.reg, {"compatible": list(device.compatible), "reg": spec.reg,
                                            "spi-max-frequency": device.max_frequency})
        device.device_tree(node)
        for key, value in spec.dt.items():
            node.set(key, value)
        return node

    def device_tree_source(self) -> str:
        nodes, aliases = self.device_tree_nodes()
        return self.engine.base_device_tree() + overlay_dts(nodes, aliases)

    def _prepare_peripherals_only(self) -> None:
        """Creates the models without a running engine (``cosim dts``)."""
        workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=WORKDIR_PARENT))
        try:
            self._build_peripherals(workdir)
        finally:
            for endpoint in self.endpoints:
                endpoint.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def start(self, boot_timeout: float = BOOT_TIMEOUT_S, extra_qemu_args: list[str] | None = None) -> None:
        sweep_stale_workdirs()
        _unwind_on_sigterm()
        _live_boards.add(self)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-",
                                             dir=WORKDIR_PARENT))
        try:
            self._start(boot_timeout, extra_qemu_args or [])
        except BaseException:
            self.stop()
            raise

    def _start(self, boot_timeout: float, extra_qemu_args: list[str]) -> None:
        assert self.workdir is not None
        workdir, machine = self.workdir, self.platform.spec.machine
        ram_file = workdir / "guest-ram"
        with ram_file.open("wb") as f:
            f.truncate(machine.memory)
        self.bus.add_memory(Memory.shared_file("ram", self.engine.ram_base, ram_file, machine.memory))
        devices = self._build_peripherals(workdir)
        dts = self.device_tree_source()
        (self.logdir / "board.dts").write_text(dts)
        dtb = workdir / "board.dtb"
        compile_dts(dts, dtb)

        listeners = {}
        for name in ("kernel", "shell"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(workdir / f"{name}.sock"))
            sock.listen(1)
            sock.settimeout(1.0)
            listeners[name] = sock
        bootargs = " ".join(filter(None, [BOOTARGS, self.platform.spec.guest.bootargs]))
        cmd = self.engine.command(ram_file=ram_file, dtb=dtb, kernel=self.artifacts.kernel,
                                  initramfs=self.artifacts.initramfs, bootargs=bootargs,
                                  kernel_console=workdir / "kernel.sock",
                                  shell_console=workdir / "shell.sock", devices=devices,
                                  native=[NativeDevice(q.model, q.base, tuple(q.irqs),
                                                       {k: str(v) for k, v in q.props.items()},
                                                       q.link_memory)
                                          for q in self.platform.spec.qemu_devices],
                                  extra_args=extra_qemu_args)
        (self.logdir / "qemu-cmdline.txt").write_text(" ".join(cmd) + "\n")
        for endpoint, name in zip(self.endpoints, self.peripherals, strict=True):
            endpoint.start(self.peripherals[name])
        self.engine.start(cmd, self.logdir / "qemu-stderr.log", self.pin_cpus)
        conns = {name: self._accept(sock, name) for name, sock in listeners.items()}
        for sock in listeners.values():
            sock.close()
        self.kernel_log = KernelLog(conns["kernel"], self.logdir / "kernel.log")
        self.console = ShellConsole(conns["shell"], self.logdir / "serial.log", self.check)
        if self.pin_cpus:  # again: the vCPU thread exists only now
            pin(self.engine.process.pid, self.pin_cpus)  # type: ignore[union-attr]
        self.console.wait_ready(boot_timeout)
        self.pm.hook.cosim_board_started(board=self)

    def _accept(self, listener: socket.socket, name: str) -> socket.socket:
        for _ in range(30):
            try:
                conn, _ = listener.accept()
                conn.settimeout(None)
                return conn
            except TimeoutError:
                self.check()
        raise BoardFailure(self._report(f"QEMU never connected its {name} console"))

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> CommandResult:
        assert self.console is not None, "the board is not started"
        result = self.console.run(command, timeout=timeout, check=check)
        self.check()
        return result

    def stop(self) -> None:
        if self.workdir is None:
            return
        with contextlib.suppress(Exception):
            self.pm.hook.cosim_board_stopping(board=self, artifacts=self.logdir)
        self.engine.stop()
        models: list[Peripheral | SpiDevice] = [*self.peripherals.values(), *self.spi_devices.values()]
        for model in models:
            model.close()  # host threads first: they may still signal through endpoints
        for endpoint in self.endpoints:
            endpoint.close()
        for model in models:
            with contextlib.suppress(Exception):  # keep what can be kept; stopping goes on
                model.save(self.logdir)
        if self.console is not None:
            self.console.close()
        if self.kernel_log is not None:
            self.kernel_log.close()
        self._write_trace()
        if self.trace.events:
            self.trace.save(self.logdir / "trace.json")
        self.bus.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None
        _live_boards.discard(self)

    def _write_trace(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)  # another session may have tidied it away
        lines = [f"{'W' if r.write else 'R'} {r.master} {r.address:#x} +{r.length}"
                 + (f" FAULT {r.fault}" if r.fault else "") for r in self.tracer.records]
        if self.tracer.dropped:
            lines.append(f"... {self.tracer.dropped} more transactions not recorded")
        accesses = ", ".join(f"{e.name}: {e.accesses}" for e in self.endpoints)
        with (self.logdir / "plugin-trace.log").open("a") as f:
            f.write(f"MMIO accesses served: {accesses}\nDMA transactions:\n")
            f.write("\n".join(lines) + "\n")

    def __enter__(self) -> Board:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def peripheral(self, name: str) -> Any:
        return self.peripherals[name]
