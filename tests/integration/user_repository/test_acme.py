import acme_plugin
import pytest


@pytest.fixture
def acme(cosim_board_factory):
    return cosim_board_factory("acme.yaml", plugins=(acme_plugin,))


def test_guest_reads_our_model(acme):
    assert acme.run("devmem 0x0c000000 32").output == "0x0000002A"
    assert acme.run("cat /proc/device-tree/answer@c000000/compatible").output.rstrip("\0") == "acme,answer"


def test_our_driver_copies_through_the_pl330(acme):
    assert "acme_dma: copying with dma0chan" in acme.kernel_log.text()  # loaded at boot
    assert acme.run("cat /sys/module/acme_dma/parameters/seed").output == "51"
    out = acme.run("acme-dma-test 1 64 4093 65536 1048576").output
    assert out == "acme-dma-test: 5 copies verified, 0 failed"
    # each copy was a transfer of the Python PL330, on the board's timeline
    copied = [e["args"]["length"] for channel in range(8)
              for e in acme.trace.on_track(f"dma channel {channel}")]
    assert sorted(copied) == [1, 64, 4093, 65536, 1048576]
    assert acme.run("cat /etc/acme/calibration.txt").output == "acme calibration table v1"


def test_a_failing_copy_is_reported(acme):
    result = acme.run("acme-dma-test 0", check=False)
    assert result.status == 1 and "Invalid argument" in result.output


@pytest.mark.cosim_guest(files={"data/calibration.txt": "/tmp/extra.txt"})
def test_default_board_with_this_tests_additions(board):
    assert board.run("uname -m").output == "aarch64"
    assert board.run("cat /tmp/extra.txt").output == "acme calibration table v1"
