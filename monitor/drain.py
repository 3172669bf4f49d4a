"""Move counts out of the kernel's counts map without losing an increment.

Keys carry a generation. The programs write the generation held in the settings map; each drain first
reads and deletes every key of the other generation, which no program has written for a whole drain
interval, then flips the generation. A count is therefore read exactly once, at most two intervals after
it happened.
"""

from . import abi
from .bpfmap import HashMap


class Drain:
    def __init__(self, programs, count_flags=0):
        self.programs = programs
        self.map = HashMap(programs.counts_fd, abi.ctypes.sizeof(abi.Key))
        self.gen = 0
        self.count_flags = count_flags
        programs.write_settings(self.gen, count_flags)

    def set_count_flags(self, count_flags):
        self.count_flags = count_flags
        self.programs.write_settings(self.gen, count_flags)

    def __call__(self):
        """One drain: returns [(Key, count)] for the idle generation, then makes it the active one."""
        idle = 1 - self.gen
        entries = [(raw, value) for raw, value in self.map.items() if raw[abi.GEN_OFFSET] == idle]
        self.map.delete([raw for raw, _ in entries])
        self.gen = idle
        self.programs.write_settings(self.gen, self.count_flags)
        return [(abi.Key.from_buffer_copy(raw), value) for raw, value in entries]
