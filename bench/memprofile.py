"""Where errnomon's anonymous memory goes: RssAnon of a fresh interpreter after each start-up step.

Run by bench/footprint.py with the project venv's python as root:
    python bench/memprofile.py [--tracemalloc]
Prints one JSON object. Steps: the interpreter alone; the daemon's pure-Python modules and their
dependencies; loader.load() as the daemon calls it (whether it compiles with bcc in this process or elsewhere
is recorded); malloc_trim(0) after it; and the anonymous memory per mapping before and after. With --tracemalloc, the bytes the
Python allocator holds after the load (how much of the total is Python objects).
"""

import ctypes
import json
import logging
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def rss_anon_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def anon_by_mapping():
    out = {}
    name = None
    with open("/proc/self/smaps") as f:
        for line in f:
            m = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
            if m:
                name = os.path.basename(m.group(1)) if m.group(1) else "[anon]"
                continue
            if line.startswith("Anonymous:"):
                out[name] = out.get(name, 0) + int(line.split()[1])
    return dict(sorted(((k, v) for k, v in out.items() if v >= 64), key=lambda kv: -kv[1]))


def main():
    trace = "--tracemalloc" in sys.argv
    if trace:
        import tracemalloc
        tracemalloc.start()
    logging.disable(logging.WARNING)
    steps = [("interpreter", rss_anon_kib())]
    import prometheus_client  # noqa: F401
    import yaml  # noqa: F401
    from monitor import aggregate, collector, config, daemon, decode, drain, web  # noqa: F401
    steps.append(("daemon modules + prometheus_client + yaml", rss_anon_kib()))
    before_load = anon_by_mapping()
    from monitor import loader
    programs = loader.load(loader.preflight(), 16384, 65536)
    # whether the loader compiled in this process (bcc, LLVM and the compiler heap stay) or elsewhere
    in_process = "bcc" in sys.modules
    steps.append(("loader.load(): compile + attach%s" % (" (bcc in this process)" if in_process
                                                           else " (bcc not in this process)"), rss_anon_kib()))
    out = {"steps_kib": steps, "bcc_in_process": in_process}
    if trace:
        import tracemalloc
        cur, peak = tracemalloc.get_traced_memory()
        out["python_allocated_after_load_kib"] = cur // 1024
        out["python_allocated_peak_kib"] = peak // 1024
        top = tracemalloc.take_snapshot().statistics("filename")[:8]
        out["python_top_files_kib"] = [(str(s.traceback[0].filename), s.size // 1024) for s in top]
    after_load = anon_by_mapping()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    steps.append(("malloc_trim(0) after the load", rss_anon_kib()))
    out["anon_by_mapping_before_load_kib"] = before_load
    out["anon_by_mapping_after_load_kib"] = after_load
    out["anon_by_mapping_after_trim_kib"] = anon_by_mapping()
    programs.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
