"""What a user sees when a guest command fails in their test: the command, its status and its
output at their own line, not cosim's frames."""

from __future__ import annotations

from cosim.build import cache_root

pytest_plugins = ["pytester"]
CACHE = str(cache_root())  # read before pytester gives the inner run a HOME of its own


def test_a_failed_guest_command_shows_the_command_and_not_cosims_frames(pytester, monkeypatch):
    monkeypatch.setenv("COSIM_CACHE", CACHE)
    pytester.makepyfile(test_user="""
        def test_missing_file(board):
            board.run("cat /no-such-file")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tb=long")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "guest command failed with status 1: cat /no-such-file" in out
    assert "cat: can't open '/no-such-file': No such file or directory" in out
    assert 'board.run("cat /no-such-file")' in out  # the user's line
    for frame in ("board.py", "console.py", "watch.py"):
        assert f"{frame}:" not in out, out
