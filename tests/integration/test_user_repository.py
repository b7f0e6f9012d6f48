"""The pytest plugin from a user's own repository: their platform file, their plugin, our fixtures."""

from __future__ import annotations

import subprocess
import sys
import textwrap

USER_PLUGIN = '''
from cosim.api import Peripheral, Register, hookimpl


class Answer(Peripheral):
    compatible = ("acme,answer",)
    VALUE = Register(0x0, access="ro", reset=42)


@hookimpl
def cosim_peripheral_types():
    return {"acme-answer": Answer}
'''

USER_PLATFORM = '''
name: acme-board
peripherals:
  - name: answer
    plugin: acme-answer
    base: 0x0c000000
'''

USER_TEST = '''
import acme_plugin


def test_guest_reads_our_model(cosim_board_factory):
    board = cosim_board_factory("acme.yaml", plugins=(acme_plugin,))
    assert board.run("devmem 0x0c000000 32").output == "0x0000002A"
    assert board.run("cat /proc/device-tree/answer@c000000/compatible").output.rstrip("\\0") == "acme,answer"


def test_default_board_is_there_too(board):
    assert board.run("uname -m").output == "aarch64"
'''


def test_fixtures_work_in_a_users_repository(tmp_path):
    (tmp_path / "acme_plugin.py").write_text(USER_PLUGIN)
    (tmp_path / "acme.yaml").write_text(USER_PLATFORM)
    (tmp_path / "test_acme.py").write_text(textwrap.dedent(USER_TEST))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={tmp_path / 'junit.xml'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
    assert 'tests="2"' in (tmp_path / "junit.xml").read_text()
