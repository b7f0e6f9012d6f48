"""Slave DMA through the Python PL330's request lines: the upstream pl330 driver's slave-sg and
cyclic paths, driven by our guest driver for the dma-fifo test peripheral."""

from __future__ import annotations

import re

import pytest

CONTROL = "/sys/kernel/debug/cosim-dma-fifo/c030000.fifo/control"


def pattern(seed: int, length: int) -> bytes:
    return bytes((seed + 7 * i) & 0xFF for i in range(length))


def result(board) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", board.run(f"cat {CONTROL}").output))


def requests_on(board, line: int) -> int:
    events = board.trace.chrome_json()["traceEvents"]
    tracks = {e["args"]["name"]: e["tid"] for e in events if e["ph"] == "M"}
    tid = tracks.get(f"pdma request line {line}")
    return sum(1 for e in events if e["ph"] == "i" and e["tid"] == tid)


@pytest.mark.parametrize("length,pieces", [(16, 1), (4096, 5), (65536, 16)])
def test_slave_sg_to_the_device(module_board, length, pieces):
    fifo = module_board.peripheral("fifo")
    requests = requests_on(module_board, 7)
    module_board.run(f"echo 'tx {length} {pieces} {length % 251}' > {CONTROL}", timeout=120)
    assert result(module_board)["status"] == "0"
    assert fifo.take_from_guest(length, timeout=5) == pattern(length % 251, length)
    assert requests_on(module_board, 7) > requests  # the "tx" request line carried it


@pytest.mark.parametrize("length,pieces", [(16, 1), (4096, 7), (65536, 16)])
def test_slave_sg_from_the_device(module_board, length, pieces):
    seed = length % 241
    module_board.peripheral("fifo").send_to_guest(pattern(seed, length))
    module_board.run(f"echo 'rx {length} {pieces} {seed}' > {CONTROL}", timeout=120)
    got = result(module_board)
    assert (got["status"], got["mismatches"], got["channel"]) == ("0", "0", "dma1chan6")


def test_cyclic_reception_calls_back_once_per_period(module_board):
    period, periods = 1024, 12
    module_board.peripheral("fifo").send_to_guest(pattern(1, period * periods))
    module_board.run(f"echo 'cyclic {period} {periods}' > {CONTROL}", timeout=120)
    got = result(module_board)
    assert int(got["periods"]) == periods  # all the data, one callback per period, no more


def test_wrong_access_width_fails_the_test_naming_the_bug(cosim_board_factory):
    from cosim.board import BoardFailure

    board = cosim_board_factory()
    with pytest.raises(BoardFailure) as info:
        board.run(f"echo 'txw 1 64 1 5' > {CONTROL}", timeout=60)
    message = str(info.value)
    assert "DMA width mismatch: pdma wrote 1-byte beats at 0xc030000" in message
    assert "32-bit entries" in message and "addr_width" in message


def test_wrong_access_width_garbles_data_as_the_hardware_would(module_board):
    fifo = module_board.peripheral("fifo")
    with module_board.expect(width_mismatches=1):
        module_board.run(f"echo 'txw 1 64 1 5' > {CONTROL}")
    got = fifo.take_from_guest(4 * 64, timeout=5)
    # every 1-byte beat became a whole 32-bit FIFO entry
    assert got[::4] == pattern(5, 64) and got[1::4] + got[2::4] + got[3::4] == bytes(3 * 64)
