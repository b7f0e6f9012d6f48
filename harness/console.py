"""The guest's consoles, kept apart so kernel messages never break command output.

* The **shell console** is a virtio console (hvc0) on which the guest runs ``cosim-agent``: each
  command arrives base64-encoded with an id and comes back framed by markers carrying its exit
  status, so neither echo, prompts nor quoting can confuse the harness.
* The **kernel console** is the machine's UART (ttyAMA0): :class:`KernelLog` reads it on a thread,
  keeps it in a file and watches it for panics, oopses and DMA-API warnings.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import select
import socket
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pexpect
from pexpect import fdpexpect

from .clock import IdleHold

READY_BANNER = b"cosim-agent: ready"
POLL_S = 0.2
CLOSE_SETTLE_S = 2.0  # how long a closed console waits for the watchdog to name why

# What makes a test fail at once, with the kernel log (cf. QEMU's wait_for_console_pattern).
FATAL_PATTERNS = {
    "kernel panic": re.compile(r"Kernel panic - not syncing"),
    "oops": re.compile(r"Internal error: Oops|\bOops\b"),
    "kernel BUG": re.compile(r"\bBUG:|kernel BUG at "),
    "bad access": re.compile(r"Unable to handle kernel"),
    "warning": re.compile(r"WARNING: CPU: \d+ PID: \d+"),
    "boot module": re.compile(r"cosim-init: cannot load module"),  # a guest section's load:
    # every DMA-API line but the two it prints at boot
    "DMA-API": re.compile(r"DMA-API: (?!preallocated \d+ debug entries|debugging enabled by kernel)"),
}
# Categories a test can declare it expects (pytest: @pytest.mark.cosim_expect("DMA-API")).
EXPECTABLE = {"DMA-API", "warning"}


@dataclass(frozen=True)
class CommandResult:
    """A guest command's ``command``, its ``output`` (stdout and stderr, as the shell printed
    them) and its exit ``status``."""

    command: str
    output: str
    status: int


class CommandFailed(AssertionError):
    """A guest command exited with a status other than 0: the message gives the command, the
    status and the output; ``result`` is the CommandResult."""

    def __init__(self, result: CommandResult):
        self.result = result
        super().__init__(f"guest command failed with status {result.status}: {result.command}\n"
                         f"{result.output}")


class CommandTimeout(AssertionError):
    """A guest command (or the boot) did not finish in time; the message has what it printed."""


@dataclass(frozen=True)
class KernelEvent:
    category: str
    line: str


class KernelLog:
    """Reads the kernel console into a file; notes fatal events as they appear."""

    def __init__(self, conn: socket.socket, path: Path):
        self.conn, self.path = conn, path
        self.events: list[KernelEvent] = []
        self.expected: set[str] = set()
        self.lines_seen = 0
        self._lock = threading.Lock()
        self._file = path.open("ab", buffering=0)
        self._thread = threading.Thread(target=self._run, name="cosim-kernel-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self.conn.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            self._file.write(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._scan(raw.decode(errors="replace").rstrip("\r"))
        self._file.close()

    def _scan(self, line: str) -> None:
        with self._lock:
            self.lines_seen += 1
            for category, pattern in FATAL_PATTERNS.items():
                if pattern.search(line):
                    self.events.append(KernelEvent(category, line))
                    break

    def unexpected(self) -> list[KernelEvent]:
        with self._lock:
            return [e for e in self.events if e.category not in self.expected]

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def settle(self, quiet_s: float = 0.3, limit_s: float = 2.0) -> None:
        """Waits until the log has been quiet for ``quiet_s``: a panic's trace is still arriving."""
        deadline = time.monotonic() + limit_s
        seen = -1
        while time.monotonic() < deadline and seen != self.lines_seen:
            seen = self.lines_seen
            time.sleep(quiet_s)

    def close(self) -> None:
        self._thread.join(timeout=2)
        self.conn.close()


class ShellConsole:
    """Runs commands through cosim-agent on the guest's shell console."""

    def __init__(self, conn: socket.socket, log_path: Path, watchdog: Callable[[], None]):
        self.conn = conn
        self.watchdog = watchdog
        self._log = log_path.open("ab", buffering=0)
        self.spawn = fdpexpect.fdspawn(conn.fileno(), logfile=self._log, timeout=POLL_S)
        self._ids = itertools.count(1)
        self.idle_hold: IdleHold | None = None  # under virtual time: released while a command runs

    def _expect(self, pattern: bytes | re.Pattern[bytes], timeout: float, what: str) -> re.Match[bytes]:
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        deadline = time.monotonic() + timeout
        while True:
            self.watchdog()
            try:
                self.spawn.expect(pattern, timeout=POLL_S)
                match = self.spawn.match
                assert isinstance(match, re.Match)
                return match
            except pexpect.TIMEOUT:
                if time.monotonic() > deadline:
                    raise CommandTimeout(f"timed out after {timeout:g} s waiting for {what}") from None
            except (pexpect.EOF, OSError):
                # The console closes as QEMU dies, a moment before its exit status can be read:
                # give the watchdog that moment to report the cause rather than the symptom.
                settle = time.monotonic() + CLOSE_SETTLE_S
                while time.monotonic() < settle:
                    self.watchdog()
                    time.sleep(0.02)
                raise CommandTimeout(f"the shell console closed while waiting for {what}") from None

    def wait_ready(self, timeout: float) -> None:
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        self._expect(re.escape(READY_BANNER), timeout, "the guest shell (cosim-agent)")

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> CommandResult:
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        if self.idle_hold is None:
            return self._run(command, timeout, check)
        self.idle_hold.release()  # before the command's bytes: their arrival wakes QEMU
        try:
            return self._run(command, timeout, check)
        finally:
            self.idle_hold.hold()

    def _run(self, command: str, timeout: float, check: bool) -> CommandResult:
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        cid = next(self._ids)
        encoded = base64.b64encode(command.encode()).decode()
        try:
            self.spawn.send(f"cosim-run {cid} {encoded}\n".encode())
        except OSError:
            self.watchdog()
            raise
        self._expect(re.compile(rb"@@cosim-begin %d@@\r?\n" % cid), timeout, f"`{command}` to start")
        try:
            match = self._expect(re.compile(rb"@@cosim-end %d (\d+)( restart)?@@" % cid), timeout,
                                 f"`{command}` to finish")
        except CommandTimeout as e:
            partial = (self.spawn.before or b"").decode(errors="replace")
            self.spawn.send(b"\x03")  # SIGINT to the command; the agent survives it
            raise CommandTimeout(f"{e}\npartial output:\n{partial}") from None
        output = (self.spawn.before or b"").decode(errors="replace").replace("\r\n", "\n")
        if match.group(2):  # the command ended the agent's shell: wait for the next agent
            self.wait_ready(timeout)
        # Drop the newline the agent adds before the end marker, then the output's own last one.
        output = output.removesuffix("\n").removesuffix("\n")
        result = CommandResult(command, output, int(match.group(1)))
        if check and result.status != 0:
            raise CommandFailed(result)
        return result

    def interact(self, escape: bytes = b"\x1d") -> None:
        """Relays the user's terminal to an interactive guest shell until ``escape`` (Ctrl-]);
        the watchdog keeps running, so a panic still ends the session with its log."""
        if self.idle_hold is not None:
            self.idle_hold.release()  # a person at the shell: the guest's time runs
        self.spawn.send(b"cosim-interactive\n")
        stdin = sys.stdin.fileno()
        saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
        if saved is not None:
            tty.setraw(stdin)
        try:
            while True:
                self.watchdog()
                ready, _, _ = select.select([stdin, self.conn], [], [], POLL_S)
                if self.conn in ready:
                    data = self.conn.recv(65536)
                    if not data:
                        return
                    os.write(sys.stdout.fileno(), data)
                if stdin in ready:
                    data = os.read(stdin, 1024)
                    if not data or escape in data:
                        return
                    self.conn.sendall(data)
        finally:
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)

    def close(self) -> None:
        self._log.close()
        self.conn.close()


class ConsoleNotConnected(RuntimeError):
    pass


class Consoles:
    """The guest's two consoles as sockets in the board's private folder, for QEMU to connect to:
    the kernel console (``kernel.sock``) and the shell console (``shell.sock``)."""

    ACCEPT_ATTEMPTS = 30  # one a second

    def __init__(self, workdir: Path, logdir: Path):
        self.logdir = logdir
        self.kernel_socket, self.shell_socket = workdir / "kernel.sock", workdir / "shell.sock"
        self._listeners: dict[str, socket.socket] = {}
        for name, path in (("kernel", self.kernel_socket), ("shell", self.shell_socket)):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            sock.listen(1)
            sock.settimeout(1.0)
            self._listeners[name] = sock
        self.kernel_log: KernelLog | None = None
        self.shell: ShellConsole | None = None

    def connect(self, watchdog: Callable[[], None]) -> tuple[KernelLog, ShellConsole]:
        """Takes QEMU's connections (calling ``watchdog`` while it waits); raises
        ConsoleNotConnected if QEMU never connects one."""
        conns = {name: self._accept(sock, name, watchdog) for name, sock in self._listeners.items()}
        self._close_listeners()
        self.kernel_log = KernelLog(conns["kernel"], self.logdir / "kernel.log")
        self.shell = ShellConsole(conns["shell"], self.logdir / "serial.log", watchdog)
        return self.kernel_log, self.shell

    def _accept(self, listener: socket.socket, name: str, watchdog: Callable[[], None]) -> socket.socket:
        for _ in range(self.ACCEPT_ATTEMPTS):
            try:
                conn, _ = listener.accept()
                conn.settimeout(None)
                return conn
            except TimeoutError:
                watchdog()
        raise ConsoleNotConnected(f"QEMU never connected its {name} console")

    def _close_listeners(self) -> None:
        for sock in self._listeners.values():
            sock.close()
        self._listeners.clear()

    def close(self) -> None:
        self._close_listeners()
        if self.shell is not None:
            self.shell.close()
        if self.kernel_log is not None:
            self.kernel_log.close()
