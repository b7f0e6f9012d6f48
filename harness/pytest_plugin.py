"""pytest plugin: booted boards as fixtures, guest failures as test failures, logs kept.

Installed with cosim (entry point ``pytest11``), so it works in any repository::

    def test_uart(board):                       # a fresh board for this test
        assert "ttyAMA1" in board.run("ls /dev").output

    @pytest.mark.cosim_expect("DMA-API")        # a test that provokes DMA-API warnings
    def test_bad_unmap(board): ...

    @pytest.mark.cosim_guest(files={"image.bin": "/tmp/image.bin"}, packages=["mtd-utils"])
    def test_flashcp(board): ...                # this test's board gets these too

    @pytest.mark.cosim_cache("emulate")         # DMA data as a non-coherent SoC gives it
    @pytest.mark.cosim_expect("cache")          # cache-model reports expected, not failures
    def test_my_driver_on_silicon(board): ...

Fixtures: ``board`` (per test), ``module_board``, ``session_board`` (shared: boot once), ``console``
(the per-test board's command runner), ``cosim_board_factory`` (boards of your own platform,
plugins, build or guest additions), ``cosim_module_board_factory`` (the same, shared by a
module) and ``model_bench`` (no board: a ``cosim.testing.ModelBench`` for a model's unit tests).
Options: ``--cosim-platform``, ``--cosim-artifacts``, ``--cosim-keep-artifacts``, ``--cosim-cache``,
``--cosim-time``; a project names its own board once with the ini option ``cosim_platform`` (in
``[tool.pytest.ini_options]``, a path relative to that file, or a platform name), which
``--cosim-platform`` overrides.
Each test's logs (serial, kernel log, QEMU stderr, plugin trace, DTS, cache-model reports) are
named in its failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .board import Board
from .build import Artifacts, build_all
from .guestimage import GuestAdditions, build_for
from .platform import GuestKernel, load_platform
from .pluginmanager import create_plugin_manager
from .testing import ModelBench

LOGS_KEY = pytest.StashKey[list[Path]]()
SESSION_LOGS_KEY = pytest.StashKey[list[Path]]()  # the log folders this session made


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cosim")
    group.addoption("--cosim-platform", default=None,
                    help="platform name (platforms/NAME.yaml) or YAML file to boot (default: the "
                         "cosim_platform ini option, else virt)")
    parser.addini("cosim_platform", "the platform a project's boards boot unless a test names "
                  "one: a name, or a YAML file relative to this ini file (default: virt)", default="virt")
    group.addoption("--cosim-artifacts", default="cosim-artifacts", type=Path,
                    help="folder for per-test logs (default: ./cosim-artifacts)")
    group.addoption("--cosim-cache", choices=["off", "report", "emulate"], default=None,
                    help="the cache model's mode for every board a test does not set "
                         "(default: each platform's machine.cache)")
    group.addoption("--cosim-time", choices=["wall", "virtual"], default=None,
                    help="the guest's clock for every board (default: each platform's machine.time)")
    group.addoption("--cosim-keep-artifacts", action="store_true",
                    help="keep the logs of passing tests too (failing tests' logs are always kept)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cosim_expect(*categories): kernel-log categories the test "
                            "expects, e.g. 'DMA-API', instead of failing on them")
    config.addinivalue_line("markers", "cosim_guest(modules=, programs=, packages=, files=, "
                            "overlay=): what the test's board gets beside its platform's guest "
                            "content (an initramfs layer appended at boot; paths relative to the "
                            "test's folder)")
    config.addinivalue_line("markers", "cosim_cache(mode): the cache model's mode for the test's "
                            "board: 'report', 'emulate' or 'off' (default: the platform's)")
    config.addinivalue_line("markers", "integration: boots the real guest in QEMU")


def default_platform(config: pytest.Config) -> str:
    """``--cosim-platform``, else the ini option ``cosim_platform`` (a file relative to the ini
    file that sets it), else virt."""
    chosen = config.getoption("--cosim-platform")
    if chosen:
        return str(chosen)
    named = str(config.getini("cosim_platform"))
    if config.inipath is not None and named.endswith((".yaml", ".yml")):
        return str((config.inipath.parent / named).resolve())
    return named


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120]


@pytest.fixture(scope="session")
def cosim_artifacts(pytestconfig: pytest.Config) -> Artifacts:
    """QEMU, kernel and initramfs, built if the cache lacks them."""
    return build_all()


class _BoardMaker:
    def __init__(self, config: pytest.Config, artifacts: Artifacts, logdir: Path, folder: Path,
                 label: str):
        self.config, self.artifacts, self.logdir = config, artifacts, logdir
        self.folder, self.label = folder, label  # where a test's guest additions are relative to
        self.boards: list[Board] = []

    def __call__(self, platform: str | Path | None = None, plugins: tuple[object, ...] = (),
                 start: bool = True, artifacts: Artifacts | None = None,
                 guest: dict[str, Any] | None = None, cache: str | None = None,
                 time: str | None = None) -> Board:
        name = platform or default_platform(self.config)
        logdir = self.logdir if not self.boards else self.logdir / f"board{len(self.boards)}"
        pm = create_plugin_manager(plugins) if plugins else None
        loaded = load_platform(name)
        if artifacts is None and loaded.spec.guest.kernel == GuestKernel():
            artifacts = self.artifacts  # the session's build serves every platform that keeps our kernel
        additions = []
        if guest:
            origin = GuestAdditions(self.folder, self.label)
            additions.append((origin.content(guest), origin))
        board = Board(loaded, build_for(loaded, additions, artifacts=artifacts), logdir, pm=pm,
                      cache=cache or self.config.getoption("--cosim-cache"),
                      time=time or self.config.getoption("--cosim-time"))
        self.boards.append(board)
        if start:
            board.start()
        return board

    def stop_all(self) -> None:
        for board in self.boards:
            board.stop()


def _logdir(request: pytest.FixtureRequest, name: str) -> Path:
    root: Path = request.config.getoption("--cosim-artifacts")
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # parallel sessions must not share folders
    logdir = (root / _safe_name(f"{name}-{worker}" if worker else name)).resolve()
    shutil.rmtree(logdir, ignore_errors=True)
    request.config.stash.setdefault(SESSION_LOGS_KEY, []).append(logdir)
    return logdir


def _maker(request: pytest.FixtureRequest, artifacts: Artifacts, name: str) -> Iterator[_BoardMaker]:
    maker = _BoardMaker(request.config, artifacts, _logdir(request, name), request.path.parent,
                        request.node.nodeid)
    try:
        yield maker
    finally:
        maker.stop_all()


@pytest.fixture
def cosim_board_factory(request: pytest.FixtureRequest,
                        cosim_artifacts: Artifacts) -> Iterator[Callable[..., Board]]:
    """Makes boards: ``cosim_board_factory(platform=None, plugins=(), start=True, artifacts=None,
    guest=None, cache=None, time=None)`` (``artifacts``: another build, e.g.
    ``build_all(kernel_patches=())``; ``time``: "wall" or "virtual" for this board)."""
    yield from _maker(request, cosim_artifacts, request.node.nodeid)


@pytest.fixture(scope="module")
def cosim_module_board_factory(request: pytest.FixtureRequest,
                               cosim_artifacts: Artifacts) -> Iterator[Callable[..., Board]]:
    """``cosim_board_factory`` for boards a whole module shares (its own platform, say)."""
    yield from _maker(request, cosim_artifacts, request.node.nodeid + "-module-factory")


@pytest.fixture
def model_bench() -> Iterator[ModelBench]:
    """An in-memory bus with guest RAM, a clock the test moves and IRQ sinks, for a model's unit
    tests (``cosim.testing.ModelBench``); its models are closed after the test."""
    bench = ModelBench()
    yield bench
    bench.close()


@pytest.fixture
def board(request: pytest.FixtureRequest, cosim_board_factory: Callable[..., Board]) -> Board:
    marker = request.node.get_closest_marker("cosim_guest")
    cache = request.node.get_closest_marker("cosim_cache")
    return cosim_board_factory(guest=marker.kwargs if marker else None,
                               cache=cache.args[0] if cache else None)


@pytest.fixture
def console(board: Board) -> Callable[..., Any]:
    """``console(cmd, timeout=60, check=True)`` runs a guest command on the per-test board."""
    return board.run


@pytest.fixture(scope="module")
def module_board(request: pytest.FixtureRequest, cosim_artifacts: Artifacts) -> Iterator[Board]:
    for maker in _maker(request, cosim_artifacts, request.node.nodeid + "-module"):
        yield maker()


@pytest.fixture(scope="session")
def session_board(request: pytest.FixtureRequest, cosim_artifacts: Artifacts) -> Iterator[Board]:
    for maker in _maker(request, cosim_artifacts, "session"):
        yield maker()


def _boards_of(item: pytest.Item) -> list[Board]:
    funcargs = getattr(item, "funcargs", {})
    boards = [funcargs[name] for name in ("board", "module_board", "session_board") if name in funcargs]
    for name in ("cosim_board_factory", "cosim_module_board_factory"):
        factory = funcargs.get(name)
        if isinstance(factory, _BoardMaker):
            boards += factory.boards
    return [b for b in boards if isinstance(b, Board)]


class UnmodelledAccessWarning(UserWarning):
    """A driver touched registers or bits the models do not model: the test passed, but what it
    exercised may differ from the hardware."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    boards = _boards_of(item)
    expected = [c for m in item.iter_markers("cosim_expect") for c in m.args]
    contexts = [b.expect(*expected) for b in boards if b.kernel_log is not None]
    noted = {id(b): dict(b.assembly.notes.counts) for b in boards}
    for ctx in contexts:
        ctx.__enter__()
    try:
        result = yield
        for b in boards:  # what happened after the test's last guest command counts too
            if b.workdir is not None and b.failure is None:
                b.check()
        return result
    finally:
        for ctx in reversed(contexts):
            ctx.__exit__(None, None, None)
        for b in boards:
            _warn_unmodelled(b, noted[id(b)])


def _warn_unmodelled(board: Board, before: dict[tuple[str, str, int], int]) -> None:
    new = {key: count - before.get(key, 0) for key, count in board.assembly.notes.counts.items()
           if count > before.get(key, 0)}
    if new:
        listing = "; ".join(f"{model}: {kind} at {offset:#x} x{count}"
                            for (model, kind, offset), count in sorted(new.items())[:5])
        more = f" and {len(new) - 5} more" if len(new) > 5 else ""
        warnings.warn(UnmodelledAccessWarning(
            f"drivers touched what the models do not model: {listing}{more} "
            f"(all in {board.logdir}/plugin-trace.log)"), stacklevel=1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    dirs = item.stash.setdefault(LOGS_KEY, [])
    dirs.extend(b.logdir for b in _boards_of(item) if b.logdir not in dirs)
    if dirs and report.failed:
        listing = "\n".join(str(d) for d in dirs)
        report.sections.append(("cosim logs", listing))
        for d in dirs:
            item.user_properties.append(("cosim_logs", str(d)))
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that passed leaves no logs of its own behind unless asked to; a failing run keeps
    them all.  Only this session's folders go: another session may be writing beside them."""
    if session.config.getoption("--cosim-keep-artifacts", default=True):
        return
    if session.testsfailed or exitstatus not in (0, 5):
        return
    for logdir in session.config.stash.get(SESSION_LOGS_KEY, []):
        shutil.rmtree(logdir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the folder itself, if nothing else is in it
        session.config.getoption("--cosim-artifacts").rmdir()
