"""arm,pl031: ARM's PrimeCell real-time clock (TRM DDI 0224), as Linux's rtc-pl031 drives it.

Register map (32-bit registers)::

    0x000 RTCDR    RO  the counter: seconds, counting at 1 Hz from what RTCLR loaded
    0x004 RTCMR    RW  match: when the counter reaches it, the interrupt's raw status is set
    0x008 RTCLR    RW  load: a write loads the counter
    0x00C RTCCR    RW  bit 0 RTCStart: once set, it stays set (a write of 0 does nothing)
    0x010 RTCIMSC  RW  bit 0: the match interrupt reaches the interrupt line
    0x014 RTCRIS   RO  bit 0: the counter reached the match value
    0x018 RTCMIS   RO  RTCRIS & RTCIMSC
    0x01C RTCICR   WO  bit 0: clears RTCRIS

The counter runs on the guest's clock (a model never reads the host's): it starts at the
``start`` property (seconds, default 0) when the guest boots.
"""

from __future__ import annotations

from cosim.api import Field, Peripheral, Register, Timer, hookimpl

SECOND_NS = 1_000_000_000


class Pl031(Peripheral):
    compatible = ("arm,pl031",)
    primecell_id = 0x00041031  # part 0x031, designer ARM (0x41), revision 0: rtc-pl031's "arm" entry
    irq_names = ("rtc",)

    RTCDR = Register(0x000, access="ro", on_read="counter")
    RTCMR = Register(0x004, on_write="match_written")
    RTCLR = Register(0x008, on_write="load")
    RTCCR = Register(0x00C, fields=[Field("START", 0)], on_write="control_written")
    RTCIMSC = Register(0x010, fields=[Field("AI", 0)], on_write="update_interrupt")
    RTCRIS = Register(0x014, access="ro", fields=[Field("AI", 0)])
    RTCMIS = Register(0x018, access="ro", on_read="masked_status")
    RTCICR = Register(0x01C, access="wo", on_write="clear_interrupt")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.loaded, self.loaded_at = int(self.properties.get("start", 0)), 0  # seconds, guest ns
        self.match_timer: Timer | None = None

    def counter(self) -> int:
        return (self.loaded + (self.now() - self.loaded_at) // SECOND_NS) & 0xFFFFFFFF

    def load(self, value: int) -> None:
        self.loaded, self.loaded_at = value, self.now()
        self._schedule_match()

    def match_written(self, _value: int) -> None:
        self._schedule_match()

    def control_written(self, _value: int) -> None:
        self.regs.RTCCR.START = 1  # RTCStart cannot be cleared once set

    def _schedule_match(self) -> None:
        """The next time the counter equals RTCMR (it wraps after 2**32 seconds)."""
        seconds = (self.regs.RTCMR.value - self.counter()) & 0xFFFFFFFF
        when = self.loaded_at + ((self.counter() - self.loaded) & 0xFFFFFFFF) * SECOND_NS
        self.match_timer = self.reschedule(self.match_timer, when + seconds * SECOND_NS, self._matched)

    def _matched(self) -> None:
        self.regs.RTCRIS.AI = 1
        self.update_interrupt()

    def masked_status(self) -> int:
        return self.regs.RTCRIS.value & self.regs.RTCIMSC.value

    def clear_interrupt(self, value: int) -> None:
        if value & 1:
            self.regs.RTCRIS.AI = 0
        self.update_interrupt()

    def update_interrupt(self, _value: int = 0) -> None:
        self.irq("rtc").set(bool(self.masked_status()))


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"pl031": Pl031}
