"""Move counts out of the kernel's counts map without losing an increment.

Keys carry a generation. The programs write the generation held in the settings map; each drain first
reads and deletes every key of the other generation, which no program has written for a whole drain
interval, then flips the generation. A count is therefore read exactly once, at most two intervals after
it happened.

Every count of a generation starts by making its key, so while nothing is counted the daemon need not wake
at all. After two drains in a row found nothing, the settings ask the programs to put a byte on the
`wakeups` ring for every key they make (settings.wake); one drain later every key still in the map was made
under that request, and the daemon sleeps (asleep) until the ring has news. A busy host pays nothing for
it: the byte is written only when a key is made while the daemon is quiet.
"""

from . import abi
from .bpfmap import HashMap, WakeRing

QUIET_TO_ASK = 2    # empty drains in a row before the programs are asked to wake the daemon
QUIET_TO_SLEEP = 3  # and before it may sleep: the drain after asking read the last generation made unasked


class Drain:
    def __init__(self, programs, count_flags=0):
        self.programs = programs
        self.map = HashMap(programs.counts_fd, abi.ctypes.sizeof(abi.Key))
        self.ring = WakeRing(programs.wakeups_fd)
        self.gen = 0
        self.quiet = 0  # drains in a row that found nothing, since the ring last had news
        self.count_flags = count_flags
        self._write()

    def _write(self):
        self.programs.write_settings(self.gen, self.count_flags, wake=self.quiet >= QUIET_TO_ASK)

    def set_count_flags(self, count_flags):
        self.count_flags = count_flags
        self._write()

    @property
    def asleep(self):
        """True when no drain is due until the ring has news: every key in the map, and every key made from
        now on, was made while the programs were asked to wake the daemon."""
        return self.quiet >= QUIET_TO_SLEEP

    def woken(self):
        """The ring had news (a key was made): empty it and drain on the schedule again."""
        self.ring.discard()
        if self.quiet:
            self.quiet = 0
            self._write()  # stop the programs writing to the ring while drains run anyway

    def __call__(self):
        """One drain: returns [(Key, count)] for the idle generation, then makes it the active one."""
        idle = 1 - self.gen
        entries = [(raw, value) for raw, value in self.map.items() if raw[abi.GEN_OFFSET] == idle]
        self.map.delete([raw for raw, _ in entries])
        self.quiet = 0 if entries else self.quiet + 1
        self.gen = idle
        self._write()
        return [(abi.Key.from_buffer_copy(raw), value) for raw, value in entries]
