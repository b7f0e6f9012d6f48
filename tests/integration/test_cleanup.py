"""Nothing is left behind: no QEMU, no socket, no guest-RAM file — also on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cosim.hygiene import WORKDIR_PARENT


def qemu_children(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent), "-f", "qemu-system-aarch64"],
                         capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def workdirs_of(pid: int) -> list[Path]:
    return list(WORKDIR_PARENT.glob(f"cosim-{pid}-*"))


def test_stop_removes_process_and_files(cosim_board_factory):
    board = cosim_board_factory()
    workdir, pid = board.workdir, board.engine.process.pid
    assert (workdir / "guest-ram").exists() and (workdir / "uart1.sock").exists()
    board.stop()
    assert not workdir.exists()
    assert board.engine.process.poll() is not None
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


SCRIPT = textwrap.dedent("""
    import faulthandler, signal, sys, time
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it hangs, if it does
    # Ctrl-C as in a terminal: a session started in the background (`cmd &` without job control)
    # hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from pathlib import Path
    from cosim.board import Board
    from cosim.build import build_all
    from cosim.platform import load_platform
    # wall time: the guest's 600 s of sleep must last while the harness is interrupted
    board = Board(load_platform("virt"), build_all(), Path(sys.argv[1]), time="wall")
    board.start()
    print("booted", board.workdir, flush=True)
    board.run("sleep 600", timeout=900)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_harness_leaves_nothing(tmp_path, sig):
    with subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "logs")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("booted"), line + proc.stdout.read()
            qemu = qemu_children(proc.pid)
            assert len(qemu) == 1
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)
                time.sleep(2)
                proc.kill()
                pytest.fail(f"the harness did not exit within 30 s of signal {sig}; its threads:\n"
                            + proc.stdout.read()[-8000:])
        finally:
            if proc.poll() is None:
                proc.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{qemu[0]}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{qemu[0]}").exists(), "QEMU outlived the harness"
    if sig == signal.SIGKILL:
        # A killed harness cannot clean up; the next board sweeps its folder.
        from cosim.hygiene import sweep_stale_workdirs
        sweep_stale_workdirs()
    assert workdirs_of(proc.pid) == []


SLOW_TEST = """
from pathlib import Path


def test_sleeps(board):
    Path("booted").write_text("yes")
    board.run("sleep 600", timeout=900)


def test_never_reached(board):
    Path("second").write_text("yes")
"""


def test_sigterm_ends_a_pytest_session_and_leaves_nothing(tmp_path):
    (tmp_path / "test_slow.py").write_text(SLOW_TEST)
    # wall time: under virtual time the guest's idle minutes pass at once, and the session with them
    with subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--cosim-time", "wall"],
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            deadline = time.monotonic() + 120
            while not (tmp_path / "booted").exists():
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
            [qemu] = qemu_children(proc.pid)
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=60)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "KeyboardInterrupt" in output
    assert not (tmp_path / "second").exists()  # the session ended; it did not go on
    assert not Path(f"/proc/{qemu}").exists() or "zombie" in Path(f"/proc/{qemu}/status").read_text()
    assert workdirs_of(proc.pid) == []


PASSING_TEST = """
def test_boots(board):
    assert board.run("true").status == 0
"""


def test_a_passing_session_removes_only_its_own_logs(tmp_path):
    artifacts = tmp_path / "artifacts"
    (artifacts / "another-session").mkdir(parents=True)
    (tmp_path / "test_ok.py").write_text(PASSING_TEST)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--cosim-artifacts={artifacts}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert [p.name for p in artifacts.iterdir()] == ["another-session"]
