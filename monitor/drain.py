"""Move counts out of the kernel's counts map without losing an increment.

Keys carry a generation. The programs write the generation held in the settings map; each drain first
reads and deletes every key of the other generation, which no program has written for a whole drain
interval, then flips the generation. A count is therefore read exactly once, at most two intervals after
it happened.

Every count of a generation starts by making its key, and the programs put a byte on the `wakeups` ring
each time they make one. Each drain empties the ring before it reads the map. When it found the ring empty,
no key was made in the generation the programs wrote since the last drain, and the one they write from now
on will announce its first key on the ring: nothing is left to drain until the ring has data, so the daemon
sleeps (asleep) until it does. After that wake-up, two drains an interval apart read both generations, as
ever: the first at once when the generation it reads has been idle for an interval since the last flip (as it
has after a sleep that long), so a burst of errors wakes the loop twice, not three times.
"""

import time

from . import abi
from .bpfmap import HashMap, WakeRing


class Drain:
    def __init__(self, programs, count_flags=0):
        self.programs = programs
        self.map = HashMap(programs.counts_fd, abi.ctypes.sizeof(abi.Key))
        self.ring = WakeRing(programs.wakeups_fd)
        self.gen = 0
        self.count_flags = count_flags
        self.asleep = False  # no drain is due until the ring has data
        programs.write_settings(self.gen, count_flags)
        self.flipped = time.monotonic()  # the last flip: the idle generation has not been written since

    def set_count_flags(self, count_flags):
        self.count_flags = count_flags
        self.programs.write_settings(self.gen, count_flags)

    def woken(self, interval):
        """The ring has data: drain on the schedule again (the next drain empties the ring). Returns when the
        next drain may run: once the idle generation has been idle for an interval since the last flip, at
        once after a sleep that long."""
        self.asleep = False
        return max(time.monotonic(), self.flipped + interval)

    def __call__(self):
        """One drain: returns [(Key, count)] for the idle generation, then makes it the active one."""
        made = self.ring.pending()  # keys made since the last drain: in the active generation, or stragglers
        self.ring.discard()         # in the idle one (read below); a key made from here on puts a byte again
        idle = 1 - self.gen
        entries = [(raw, value) for raw, value in self.map.items() if raw[abi.GEN_OFFSET] == idle]
        self.map.delete([raw for raw, _ in entries])
        self.gen = idle
        self.programs.write_settings(self.gen, self.count_flags)
        self.flipped = time.monotonic()
        self.asleep = not made
        return [(abi.Key.from_buffer_copy(raw), value) for raw, value in entries]
