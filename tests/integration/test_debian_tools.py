"""Upstream user-space tools as Debian ships them (bookworm arm64, through a board's guest
packages), run unmodified against the Python models: alsa-utils on the DesignWare I2S, mtd-utils
on the SPI NOR flash, spi-tools on spidev, and i2c-tools, memtester and stress-ng."""

from __future__ import annotations

import math
import os
import struct
import wave

import pytest

from .conftest import virt_with
from .test_i2s import RATE, adma_interrupts, dominant_frequency, frames_of, start_of, tone

PACKAGES = ["alsa-utils", "mtd-utils", "spi-tools", "i2c-tools", "memtester", "stress-ng"]
CAPTURE_FRAMES = 2 * RATE


def write_wav(path, frames: list[tuple[int, int]]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(struct.pack("<hh", *f) for f in frames))


@pytest.fixture(scope="module")
def tools_board(cosim_module_board_factory, tmp_path_factory):
    """The default board with the tools installed and a host WAV on the I2S's receive wire
    (440 Hz left, 660 Hz right)."""
    folder = tmp_path_factory.mktemp("tools")
    source = folder / "capture.wav"
    write_wav(source, [(round(9000 * math.sin(2 * math.pi * 440 * n / RATE)),
                        round(9000 * math.sin(2 * math.pi * 660 * n / RATE)))
                       for n in range(CAPTURE_FRAMES)])
    platform = virt_with(folder, "i2s0", lambda i2s: i2s.update(properties={"capture_wav": str(source)}))
    board = cosim_module_board_factory(platform, guest={"packages": PACKAGES})
    with wave.open(str(source)) as w:
        board.capture_source = w.readframes(w.getnframes())
    return board


def test_the_tools_run_as_debian_ships_them(tools_board):
    run = tools_board.run
    assert run("aplay --version").output.startswith("aplay: version 1.2.8")
    assert "card 0: cosimi2s" in run("aplay -l").output
    info = run("mtd_debug info /dev/mtd0").output
    assert "mtd.size = 1048576 (1M)" in info and "mtd.erasesize = 65536 (64K)" in info
    spi = run("spi-config -d /dev/spidev0.0 -q").output
    assert "/dev/spidev0.0: mode=0, lsb=0, bits=8" in spi
    run("i2cdetect -l")  # no I2C bus on this board: lists none, exits 0
    assert "Done." in run("memtester 256K 1", timeout=300).output
    stress = run("stress-ng --cpu 1 --timeout 2s --metrics-brief 2>&1", timeout=120).output
    assert "successful run completed" in stress, stress


def test_flash_erase_and_flashcp_round_trip(tools_board):
    flash = tools_board.spi_devices["flash"]
    image = os.urandom(64 << 10)
    (tools_board.host_folder / "image.bin").write_bytes(image)  # through the 9p host folder
    tools_board.run("flash_erase /dev/mtd0 0 2", timeout=120)
    assert bytes(flash.array[:128 << 10]) == b"\xff" * (128 << 10)
    out = tools_board.run("flashcp -v /mnt/host/image.bin /dev/mtd0", timeout=600).output
    assert "Verifying data" in out
    assert bytes(flash.array[:64 << 10]) == image  # the model's array holds what flashcp wrote
    tools_board.run("mtd_debug read /dev/mtd0 0 65536 /mnt/host/back.bin", timeout=300)
    assert (tools_board.host_folder / "back.bin").read_bytes() == image


def test_aplay_plays_a_wav_onto_the_wire_exactly(tools_board):
    i2s = tools_board.peripherals["i2s0"]
    frames = RATE
    write_wav(tools_board.host_folder / "tone.wav", tone(1000, frames))
    irqs_before, wire_before, underruns_before = adma_interrupts(tools_board), len(i2s.played), i2s.underruns
    out = tools_board.run("aplay -v -D hw:0,0 --period-size=2048 --buffer-size=8192 "
                          "/mnt/host/tone.wav 2>&1", timeout=60).output
    period = int(out.split("period_size  : ")[1].split()[0])
    played = frames_of(bytes(i2s.played[wire_before:]))
    expected = tone(1000, frames)
    start = start_of(played, expected)
    assert played[start:start + frames] == expected  # no dropout, no repeated period, L/R order
    assert i2s.underruns == underruns_before
    # aplay writes whole periods (the last padded with silence): one interrupt for each
    assert adma_interrupts(tools_board) - irqs_before == math.ceil(frames / period)


def test_arecord_records_the_host_wav(tools_board):
    frames = RATE // 2
    tools_board.run(f"arecord -D hw:0,0 -f S16_LE -r {RATE} -c 2 -s {frames} /mnt/host/rec.wav",
                    timeout=60)
    with wave.open(str(tools_board.host_folder / "rec.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, RATE, frames)
        recorded = w.readframes(frames)
    # the recording is the host's WAV from its first frame on: nothing dropped or repeated
    assert recorded == tools_board.capture_source[:4 * frames]
    assert tools_board.peripherals["i2s0"].overruns == 0


def test_speaker_test_plays_its_sine_on_each_channel(tools_board):
    i2s = tools_board.peripherals["i2s0"]
    wire_before = len(i2s.played)
    out = tools_board.run(f"speaker-test -D hw:0,0 -c 2 -r {RATE} -F S16_LE -t sine -f 440 -l 1 2>&1",
                          timeout=120).output
    assert "0 - Front Left" in out and "1 - Front Right" in out
    played = frames_of(bytes(i2s.played[wire_before:]))
    window = RATE // 5
    # speaker-test sounds one channel at a time, the other silent: 440 Hz on each in turn
    for sounding, silent in ((0, 1), (1, 0)):
        start = next(i for i, frame in enumerate(played) if frame[sounding] and not frame[silent])
        part = played[start:start + window]
        assert len(part) == window and not any(frame[silent] for frame in part)
        assert dominant_frequency([frame[sounding] for frame in part], 400, 480) == 440
