"""Audio through the DesignWare I2S with cyclic DMA on the Python PL330: the upstream dwc-i2s
driver with the generic dmaengine PCM, a simple-audio-card and the AK4554 codec; our pcmtest
plays a generated tone and records, the host checks the wire sample by sample."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import wave
from pathlib import Path

import pytest

from .conftest import virt_with

RATE = 48_000
PERIOD = 512  # pcmtest's period
PLAYBACK = "/dev/snd/pcmC0D0p"
CAPTURE = "/dev/snd/pcmC0D0c"


def tone(freq: int, frames: int) -> list[tuple[int, int]]:
    """What pcmtest plays: left a sine, right its negation."""
    out = []
    for n in range(frames):
        s = round(12000 * math.sin(2 * math.pi * freq * n / RATE))
        out.append((s, -s))
    return out


def frames_of(data: bytes) -> list[tuple[int, int]]:
    return list(struct.iter_unpack("<hh", data))


def dominant_frequency(samples: list[int], low: int, high: int) -> int:
    """The strongest frequency in 1 Hz steps within [low, high] (Goertzel)."""
    def power(freq: int) -> float:
        w = 2 * math.cos(2 * math.pi * freq / RATE)
        s1 = s2 = 0.0
        for x in samples:
            s1, s2 = x + w * s1 - s2, s1
        return s1 * s1 + s2 * s2 - w * s1 * s2
    return max(range(low, high + 1), key=power)


def adma_interrupts(board) -> int:
    line = next(ln for ln in board.run("cat /proc/interrupts").output.splitlines()
                if "c090000.adma" in ln)
    return int(line.split()[1])  # the first adma line: the event (period) interrupt


def start_of(played: list[tuple[int, int]], expected: list[tuple[int, int]]) -> int:
    """Where ``expected`` begins on the wire (after silence from before the stream)."""
    first = expected[1]
    return played.index(first) - 1


@pytest.fixture(scope="module")
def artifacts_dir(pytestconfig) -> Path:
    folder = pytestconfig.getoption("--cosim-artifacts") / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_sound_card_probes_with_dma(module_board):
    assert "cosim-i2s" in module_board.run("cat /proc/asound/cards").output
    assert module_board.run(f"ls {PLAYBACK} {CAPTURE}").status == 0


def test_playback_of_a_tone_reaches_the_wire_exactly(module_board, artifacts_dir):
    i2s = module_board.peripherals["i2s0"]
    frames = RATE  # one second
    irqs_before, wire_before, underruns_before = adma_interrupts(module_board), len(i2s.played), i2s.underruns
    out = module_board.run(f"pcmtest play {PLAYBACK} {RATE} 1000 {frames}", timeout=30).output
    assert f"played {frames} frames at {RATE} Hz, xruns 0" in out
    played = frames_of(bytes(i2s.played[wire_before:]))
    expected = tone(1000, frames)
    start = start_of(played, expected)
    assert played[start:start + frames] == expected  # no dropout, no repeated period, L/R order
    assert i2s.underruns == underruns_before  # the FIFO never ran dry during the stream
    # one period interrupt per period the DMA completed, and none more
    assert adma_interrupts(module_board) - irqs_before == math.ceil(frames / PERIOD)
    # the timeline shows the I2S's requests and the adma's period transfers together
    assert module_board.trace.on_track("adma request line 1")
    assert any(e["name"] == "transfer" for channel in range(8)
               for e in module_board.trace.on_track(f"adma channel {channel}"))
    left = [sample for sample, _ in played[start:start + 4800]]
    assert dominant_frequency(left, 900, 1100) == 1000
    (artifacts_dir / "playback-1kHz.wav").write_bytes(i2s.wav())  # a person can listen to it
    with wave.open(str(artifacts_dir / "playback-1kHz.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE)


def test_an_underrun_recovers_as_on_hardware(module_board):
    """The player stalls longer than its buffer: ALSA finds the DMA past the last valid frame,
    stops the stream (EPIPE), the player prepares it again and goes on, losing nothing."""
    i2s = module_board.peripherals["i2s0"]
    wire_before, switches_before = len(i2s.played), len(i2s.tx_switches)
    frames, stall_at, stall_ms = RATE, 5 * PERIOD, 500  # the stall outlasts the 43 ms ring
    out = module_board.run(f"pcmtest play {PLAYBACK} {RATE} 1000 {frames} {stall_at} {stall_ms}",
                           timeout=30).output
    switches = i2s.tx_switches[switches_before:]
    assert "xrun: underrun" in out and "xruns 1" in out, (out, switches)
    # on the wire: transmit on, off at the underrun, on again after the stall, off at the end
    assert [on for on, _, _ in switches] == [True, False, True, False], switches
    (_, stopped_at, stopped), (_, _, restarted) = switches[1:3]
    assert restarted - stopped > stall_ms * 1e6 / 2  # guest ns
    played = frames_of(bytes(i2s.played[wire_before:]))
    expected = tone(1000, frames)
    start = start_of(played, expected)
    ring = 4 * PERIOD
    # all well until the last period before the stall ...
    assert played[start:start + stall_at - PERIOD] == expected[:stall_at - PERIOD]
    # ... then, until ALSA noticed and stopped it, the cyclic DMA went on through the ring: each
    # frame is the one written there or, once those ran out, the ring's old content a buffer back
    stale_end = stopped_at - wire_before // 4
    assert stale_end - (start + stall_at) <= 2 * PERIOD
    for i in range(start + stall_at - PERIOD, stale_end):
        n = i - start
        assert played[i] in ((expected[n] if n < stall_at else None), played[i - ring]), i
    # after the restart the tone goes on where it stopped: the refused write was written again
    assert played[stale_end:stale_end + frames - stall_at] == expected[stall_at:]


@pytest.fixture
def capture_board(cosim_board_factory, tmp_path):
    """A board whose I2S receives a host WAV file."""
    source = tmp_path / "in.wav"
    with wave.open(str(source), "wb") as w:  # 440 Hz left, 660 Hz right, 2 s
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(
            struct.pack("<hh", round(9000 * math.sin(2 * math.pi * 440 * n / RATE)),
                        round(9000 * math.sin(2 * math.pi * 660 * n / RATE))) for n in range(2 * RATE)))
    platform = virt_with(tmp_path, "i2s0", lambda i2s: i2s.update(properties={"capture_wav": str(source)}))
    board = cosim_board_factory(platform=platform)
    with wave.open(str(source)) as w:
        board.capture_source = w.readframes(w.getnframes())
    return board


def test_capture_records_the_host_wav(capture_board):
    frames = RATE // 2
    out = capture_board.run(f"pcmtest record {CAPTURE} {RATE} {frames} /tmp/rec", timeout=30).output
    assert f"recorded {frames} frames at {RATE} Hz, xruns 0" in out
    recorded = capture_board.run("md5sum /tmp/rec").output.split()[0]
    # the recording is the source from its first frame, nothing dropped or repeated
    expected = capture_board.capture_source[:4 * frames]
    if recorded != hashlib.md5(expected).hexdigest():
        got = base64.b64decode(capture_board.run("base64 /tmp/rec", timeout=60).output)
        first = next(i for i in range(0, len(expected), 4) if got[i:i + 4] != expected[i:i + 4])
        pytest.fail(f"the recording differs from frame {first // 4} on "
                    f"(overruns {capture_board.peripherals['i2s0'].overruns})")
    assert capture_board.peripherals["i2s0"].overruns == 0


def test_an_overrun_recovers_as_on_hardware(capture_board):
    i2s = capture_board.peripherals["i2s0"]
    frames = RATE // 2
    out = capture_board.run(f"pcmtest record {CAPTURE} {RATE} {frames} /tmp/rec 4096 500",
                            timeout=30).output
    assert "xrun: overrun" in out and re.search(r"xruns 1\b", out)
    # the controller's FIFO never overflowed: the cyclic DMA drained it the whole time, as
    # hardware does; the frames lost are ALSA's, overwritten in its ring
    assert i2s.overruns == 0
