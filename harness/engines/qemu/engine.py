"""The QEMU engine: turns a platform into a QEMU command line and runs it.

It knows QEMU only; peripherals reach it as bridge sockets and device-tree text, never as plugins.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...build import cache_root, digest
from ...devicetree import dtb_to_dts
from ...platform import Machine, MachineLayout

PR_SET_PDEATHSIG = 1
_DEVICES: dict[tuple[str, int], set[str]] = {}  # device names of each QEMU binary

# QEMU virt leaves its platform-bus window and its SPIs free when no dynamic sysbus device is used:
# the bridge maps peripherals there.
PERIPHERAL_WINDOW = (0x0C000000, 0x0E000000)
PERIPHERAL_SPIS = range(112, 176)
RAM_BASE = 0x40000000


class EngineError(RuntimeError):
    pass


@dataclass(frozen=True)
class NativeDevice:
    """One of QEMU's own sysbus models, put on the board by cosim-sysbus-host."""

    model: str
    base: int
    spis: tuple[int, ...]
    props: dict[str, str]
    link_memory: bool


@dataclass(frozen=True)
class BridgedDevice:
    name: str
    socket: Path
    base: int
    size: int
    spis: tuple[int, ...]
    index: int = 0  # the peripheral's number on the board, which its bridge's changes name
    posted: tuple[int, ...] = ()  # offsets whose writes the vCPU does not wait for
    ring: Path | None = None  # the board's posted-write ring, for a bridge with posted registers


@dataclass(frozen=True)
class CacheDevice:
    """The CPU side of the cache model (cosim-cache) and its state file."""

    state: Path
    mode: int


def _die_with_parent() -> None:
    """In the child before exec: QEMU gets SIGKILL if the harness dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def default_pinning() -> set[int]:
    """QEMU and the bridge threads share one core (wake-ups across cores cost ~70 us on these
    VMs; see the README's numbers).  COSIM_PIN=off disables it, COSIM_PIN=3 picks core 3."""
    setting = os.environ.get("COSIM_PIN", "auto")
    if setting == "off":
        return set()
    if setting == "auto":
        return {max(os.sched_getaffinity(0))}
    return {int(cpu) for cpu in setting.split(",")}


class QemuEngine:
    name = "qemu"
    # virt numbers its own UART serial0 in /aliases
    layout = MachineLayout("QEMU virt", PERIPHERAL_WINDOW, PERIPHERAL_SPIS, RAM_BASE, {"serial": 1},
                           "/apb-pclk")

    def __init__(self, binary: Path, machine: Machine):
        self.binary, self.machine = binary, machine
        self.process: subprocess.Popen[bytes] | None = None

    def machine_args(self) -> list[str]:
        m = self.machine
        return ["-M", f"virt,gic-version={m.gic},memory-backend=ram", "-cpu", m.cpu,
                "-smp", str(m.cpus), "-m", f"{m.memory // (1 << 20)}M"]

    def has_device(self, name: str) -> bool:
        """Whether this QEMU binary was built with the device ``name``."""
        key = (str(self.binary), self.binary.stat().st_mtime_ns)
        if key not in _DEVICES:
            proc = subprocess.run([str(self.binary), "-device", "help"], capture_output=True,
                                  text=True, timeout=60)
            _DEVICES[key] = set(re.findall(r'name "([^"]+)"', proc.stdout))
        return name in _DEVICES[key]

    def base_device_tree(self) -> str:
        """The machine's own device tree (as DTS), dumped by QEMU once and cached."""
        key = digest([str(self.binary), str(self.binary.stat().st_mtime_ns), *self.machine_args()])
        cached = cache_root() / "dtb" / f"virt-{key}.dts"
        if not cached.exists():
            cached.parent.mkdir(exist_ok=True)
            dtb = cached.with_suffix(".dtb")
            args = self.machine_args()
            args[1] += f",dumpdtb={dtb}"
            ram = f"memory-backend-ram,id=ram,size={self.machine.memory}"
            proc = subprocess.run([str(self.binary), *args, "-object", ram, "-nodefaults",
                                   "-display", "none"], capture_output=True, text=True, timeout=60)
            if proc.returncode != 0 or not dtb.exists():
                raise EngineError(f"QEMU could not dump the virt device tree: {proc.stderr.strip()}")
            cached.write_text(dtb_to_dts(dtb))
            dtb.unlink()
        return cached.read_text()

    def command(self, *, ram_file: Path, dtb: Path, kernel: Path, initramfs: Path, bootargs: str,
                kernel_console: Path, shell_console: Path, devices: list[BridgedDevice],
                native: list[NativeDevice], extra_args: list[str],
                host_folder: Path | None = None, cache: CacheDevice | None = None,
                idle_hold: Path | None = None) -> list[str]:
        ram = (f"memory-backend-file,id=ram,size={self.machine.memory},mem-path={ram_file},"
               "share=on")
        cmd = [str(self.binary), *self.machine_args(), "-object", ram,
               "-nodefaults", "-display", "none", "-no-reboot", "-nic", "none",
               "-chardev", f"socket,id=kcon,path={kernel_console}", "-serial", "chardev:kcon",
               "-device", "virtio-serial-device",
               "-chardev", f"socket,id=shell,path={shell_console}",
               "-device", "virtconsole,chardev=shell",
               "-kernel", str(kernel), "-initrd", str(initramfs), "-dtb", str(dtb),
               "-append", bootargs]
        if host_folder is not None:  # the guest's init mounts it by this tag
            folder = str(host_folder).replace(",", ",,")  # QEMU's escape for a comma in a value
            cmd += ["-fsdev", f"local,id=hostfs,path={folder},security_model=none,multidevs=remap",
                    "-device", "virtio-9p-device,fsdev=hostfs,mount_tag=cosim-host"]
        if idle_hold is not None:  # virtual time: 1 ns per instruction, idle time skipped
            cmd += ["-icount", "shift=0,sleep=off,align=off", "-device", f"cosim-clock,control={idle_hold}"]
        if cache is not None:
            cmd += ["-device", f"cosim-cache,state={cache.state},mode={cache.mode},"
                               f"ram-base={RAM_BASE:#x},ram-size={self.machine.memory:#x}"]
        for d in devices:
            irqs = ":".join(str(s) for s in d.spis)
            posted = ":".join(f"{o:#x}" for o in d.posted)
            ring = f",posted-ring={d.ring}" if d.posted and d.ring is not None else ""
            cmd += ["-device", f"cosim-bridge,name={d.name},index={d.index},socket={d.socket},"
                               f"base={d.base:#x},size={d.size:#x},irqs={irqs},posted={posted}{ring}"]
        for n in native:
            props = ",,".join(f"{k}={v}" for k, v in n.props.items())  # ",," escapes a comma
            irqs = ":".join(str(s) for s in n.spis)
            cmd += ["-device", f"cosim-sysbus-host,model={n.model},base={n.base:#x},irqs={irqs},"
                               f"props={props},link-memory={'on' if n.link_memory else 'off'}"]
        return cmd + extra_args

    def start(self, cmd: list[str], stderr_log: Path, cpus: set[int] | None = None) -> None:
        with stderr_log.open("wb") as err:
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
                preexec_fn=_die_with_parent)
        if cpus:
            pin(self.process.pid, cpus)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def pin(pid: int, cpus: set[int]) -> None:
    """Pins every thread of a process (QEMU starts its vCPU threads a little later: call again)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)
