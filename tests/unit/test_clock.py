"""Work scheduled on the guest's clock: order, cancelling, and a model that never lets time move."""

from __future__ import annotations

import threading

import pytest

from cosim.clock import ClockError, ManualClock, Timer, Timers
from cosim.peripheral import Peripheral
from cosim.testing import ModelBench
from cosim.trace import EventTrace


def test_work_runs_in_time_order_across_models_each_at_its_time():
    clock = ManualClock()
    a, b = Timers(threading.RLock()), Timers(threading.RLock())
    clock.attach(a)
    clock.attach(b)
    ran: list[tuple[str, int]] = []
    a.add(300, lambda: ran.append(("a", clock.now_ns)))
    b.add(100, lambda: ran.append(("b", clock.now_ns)))
    a.add(200, lambda: b.add(clock.now_ns + 50, lambda: ran.append(("b2", clock.now_ns))))
    clock.advance(1_000)
    assert ran == [("b", 100), ("b2", 250), ("a", 300)] and clock.now_ns == 1_000


def test_cancelled_work_does_not_run_and_moves_the_deadline():
    timers = Timers(threading.RLock())
    first = timers.add(10, lambda: pytest.fail("cancelled"))
    timers.add(20, lambda: None)
    first.cancel()
    assert timers.next_deadline() == 20


def test_earlier_work_tells_the_bridge():
    timers = Timers(threading.RLock())
    told: list[int] = []
    timers.on_earlier = lambda: told.append(1)
    timers.add(100, lambda: None)
    timers.add(200, lambda: None)  # later than what QEMU knows: no need
    timers.add(50, lambda: None)
    assert len(told) == 2


def test_a_model_rescheduling_itself_at_the_same_time_is_an_error():
    timers = Timers(threading.RLock())

    def again() -> None:
        timers.add(0, again)

    timers.add(0, again)
    with pytest.raises(ClockError, match="keeps scheduling work at the current time"):
        timers.run_due(ManualClock(), 0)


def test_run_until_idle_gives_up_on_work_that_never_ends():
    clock = ManualClock()
    timers = Timers(threading.RLock())
    clock.attach(timers)

    def tick() -> None:
        timers.add(clock.now_ns + 1_000, tick)

    timers.add(0, tick)
    with pytest.raises(ClockError, match="still scheduled"):
        clock.run_until_idle(limit_ns=1_000_000)


def test_a_timeline_on_the_guests_clock_has_the_guests_times():
    clock = ManualClock()
    trace = EventTrace(clock=clock)
    clock.advance(2_000_000)
    start = trace.now()
    clock.advance(500_000)
    trace.span("dma channel 0", "transfer", start, trace.now())
    [event] = trace.on_track("dma channel 0")
    assert (event["ts"], event["dur"]) == (2000.0, 500.0)  # microseconds of guest time
    assert trace.chrome_json()["otherData"]["cosim_clock"] == "guest"
    assert EventTrace().chrome_json()["otherData"]["cosim_clock"] == "host"


def test_work_that_ran_is_no_longer_pending():
    clock = ManualClock()
    timers = Timers(threading.RLock())
    clock.attach(timers)
    timer = timers.add(100, lambda: None)
    clock.advance(100)
    assert not timer.pending


class Ticker(Peripheral):
    """A model with one next event, as the UART, SPI and I2S models keep theirs."""

    compatible = ("test,ticker",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.event: Timer | None = None
        self.ticks: list[int] = []

    def tick(self) -> None:
        self.ticks.append(self.now())


def test_rescheduling_a_models_next_event_keeps_one_timer():
    bench = ModelBench()
    ticker = bench.add(Ticker, "ticker", base=0x1000, size=0x100)
    ticker.event = ticker.reschedule(None, 300, ticker.tick)
    first = ticker.event
    assert ticker.reschedule(first, 300, ticker.tick) is first  # pending there already
    ticker.event = ticker.reschedule(first, 200, ticker.tick)
    assert not first.pending
    bench.clock.advance(250)
    assert ticker.ticks == [200]
    ran = ticker.event
    ticker.event = ticker.reschedule(ran, 200, ticker.tick)
    assert ticker.event is not ran and ticker.event.pending  # it ran: a new one
    ticker.event = ticker.reschedule(ticker.event, None, ticker.tick)  # none after all
    bench.clock.advance(1_000)
    assert ticker.ticks == [200] and ticker.event is None
