"""The shell console: commands, status, output, timeouts, and no kernel noise in the output."""

from __future__ import annotations

import pytest

from cosim.console import CommandFailed, CommandTimeout


def test_output_and_status(module_board):
    result = module_board.run("echo out; echo err >&2; false", check=False)
    assert result.output == "out\nerr"
    assert result.status == 1
    with pytest.raises(CommandFailed, match="status 7"):
        module_board.run("sh -c 'exit 7'")


def test_output_without_trailing_newline_and_empty_output(module_board):
    assert module_board.run("printf abc").output == "abc"
    assert module_board.run("true").output == ""
    assert module_board.run("printf 'a\\n\\n'").output == "a\n"


def test_quoting_survives_transport(module_board):
    text = "it's \"quoted\" $HOME `x` \\ ünïcode * ?"
    assert module_board.run(f"cat <<'EOF'\n{text}\nEOF").output == text


def test_state_persists_between_commands(module_board):
    module_board.run("cd /sys/kernel; export COSIM_X=42")
    assert module_board.run("pwd; echo $COSIM_X").output == "/sys/kernel\n42"
    module_board.run("cd /")


def test_kernel_messages_never_interleave_with_command_output(module_board):
    result = module_board.run(
        "for i in $(seq 300); do echo kernel-noise-$i > /dev/kmsg; echo line-$i; done")
    assert result.output.splitlines() == [f"line-{i}" for i in range(1, 301)]
    module_board.kernel_log.settle()
    assert "kernel-noise-300" in module_board.kernel_log.text()


def test_timeout_interrupts_the_command_and_the_console_lives_on(module_board):
    # A loop, not a sleep: under virtual time an idle guest's 300 s pass in a moment.
    with pytest.raises(CommandTimeout, match="timed out after 1 s"):
        module_board.run("echo started; sh -c 'while :; do :; done'", timeout=1)
    # Only an interrupted loop lets the next command run within its deadline.
    assert module_board.run("echo alive", timeout=10).output == "alive"


def test_guest_sees_the_peripherals_device_tree(module_board):
    out = module_board.run("cat /proc/device-tree/uart1@c000000/compatible | tr '\\0' ' '; echo;"
                           "cat /proc/device-tree/dmacopy@c010000/compatible").output
    assert out.splitlines()[0].strip() == "arm,pl011 arm,primecell"
    assert out.splitlines()[1].rstrip("\0") == "cosim,dma-copy"


def test_exit_ends_the_shell_not_the_guest(module_board):
    result = module_board.run("echo bye; exit 3", check=False)
    assert (result.output, result.status) == ("bye", 3)
    assert module_board.run("echo still here").output == "still here"


def test_the_agents_state_is_out_of_a_commands_reach(module_board):
    # Ordinary shell that once overwrote the agent's own variables: the end marker then carried
    # the wrong id and the harness waited for the whole timeout.
    assert module_board.run("set -- a b c; echo $#", timeout=10).output == "3"
    assert module_board.run("shift; IFS=,; line=x; rc=9; echo done", timeout=10).output == "done"
    assert module_board.run("PATH=/nowhere; echo still", timeout=10).output == "still"
    module_board.run("PATH=/usr/bin:/usr/sbin:/bin:/sbin; unset IFS")
    assert module_board.run("echo $(echo a b | tr ' ' '-')").output == "a-b"
