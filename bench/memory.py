"""Memory against series: the daemon in its own memory cgroup, N refused connects from N loopback peers
(two series each: connect_failures and tcp_resets_received in SYN_SENT), then repeated scrapes.

    sudo .venv/bin/python bench/memory.py [--peers 30000] [--scrapes 6] [--limit 1G]
    (make bench: bench/run.py --only memory runs run(): 10,000 and 30,000 peers, then a start under 64 MiB)

Prints one JSON object: RssAnon of the daemon and the cgroup's usage at ready, after the peers were counted
(before any scrape) and after each scrape; the cgroup's peak (start-up included: the loader's compiler child
is in the cgroup too); whether every refused connect was counted (the scrape's own sum against the
connects this script saw refused). cgroup v1 (memory.limit_in_bytes) or v2 (memory.max).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOSED = 9  # the discard port: nothing listens on it


class Cgroup:
    def __init__(self, name, limit):
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        self.path = os.path.join("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory", name)
        self.files = ("memory.max", "memory.current", "memory.peak") if v2 else \
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.max_usage_in_bytes")
        os.makedirs(self.path, exist_ok=True)
        self._write(self.files[0], str(limit))

    def _write(self, name, text):
        with open(os.path.join(self.path, name), "w") as f:
            f.write(text)

    def _mib(self, name):
        with open(os.path.join(self.path, name)) as f:
            return round(int(f.read()) / 2 ** 20, 1)

    def usage(self):
        return {"usage_mib": self._mib(self.files[1]), "peak_mib": self._mib(self.files[2])}

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


def rss_anon_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return round(int(line.split()[1]) / 1024, 1)


def scrape(url):
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read().decode()
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                  if line.startswith("errnomon_connect_failures_total{") and 'remote="127.1.' in line)
    return {"bytes": len(body), "seconds": round(time.monotonic() - t0, 2), "counted": counted}


def measure(peers, scrapes=6, limit="1G", work=None):
    """One daemon in a fresh cgroup: memory at ready, after `peers` refused connects, after each scrape."""
    work = work or tempfile.mkdtemp(prefix="errnomon-memory.")
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "config.yaml")
    with open(config, "w") as f:
        f.write("series:\n  budget: %d\n" % (peers + 1000))
    cg = Cgroup("errnomon-bench-memory", limit)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(work, "daemon-%d-%s.log" % (peers, limit)), "w+")
    daemon = subprocess.Popen(
        ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh", cg.path, sys.executable, "-m",
         "monitor.cli", "--config.file=" + config, "--web.listen-address=127.0.0.1:%d" % port],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d/metrics" % port
    result = {"peers": peers, "series": 2 * peers, "limit": limit}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    lines = log.read().strip().splitlines()
                    result["failed"] = "exited %s before serving: %s" % (daemon.poll(), lines[-1] if lines else "")
                    result["peak_mib"] = cg.usage()["peak_mib"]
                    return result
                time.sleep(0.1)
        result["ready"] = dict(cg.usage(), rss_anon_mib=rss_anon_mib(daemon.pid))
        refused = 0
        for i in range(peers):
            with socket.socket() as s:
                try:
                    s.connect(("127.1.%d.%d" % (i // 250, 1 + i % 250), CLOSED))
                except ConnectionRefusedError:
                    refused += 1
            if i % 2000 == 1999:
                time.sleep(0.6)  # under kernel.map_size (16384) distinct keys per drain
        time.sleep(3)
        result["refused"] = refused
        result["counted"] = dict(cg.usage(), rss_anon_mib=rss_anon_mib(daemon.pid))
        result["scrapes"] = []
        for _ in range(scrapes):
            s = scrape(url)
            result["scrapes"].append(dict(s, rss_anon_mib=rss_anon_mib(daemon.pid), **cg.usage()))
        result["exact"] = all(s["counted"] == refused for s in result["scrapes"])
        result["alive"] = daemon.poll() is None
        return result
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        cg.remove()


def run(out_dir, peers=(10000, 30000), scrapes=6, small_limit="64M"):
    """make bench's memory part: one daemon per peer count, then one start under `small_limit` (None: not tried)."""
    work = os.path.join(out_dir, "memory")
    runs = [measure(n, scrapes, work=work) for n in peers]
    small = measure(0, 0, small_limit, work=work) if small_limit else None
    ok = [r for r in runs if "failed" not in r]
    checks = {"exact": {"value": "%d of %d runs" % (sum(r.get("exact", False) for r in runs), len(runs)),
                        "budget": "every refused connect counted", "ok": bool(ok) and all(r["exact"] for r in ok)
                        and len(ok) == len(runs)}}
    if ok:
        steady = max(s["usage_mib"] for s in ok[-1]["scrapes"])
        peak = max(r["ready"]["peak_mib"] for r in ok)
        checks["startup_peak_within_30pct"] = {
            "value": "%.0f MiB at start-up, %.0f MiB steady (%d series)" % (peak, steady, ok[-1]["series"]),
            "budget": "<= 1.3 x steady", "ok": peak <= 1.3 * steady}
    if small:
        failed = small.get("failed")
        checks["alive_under_%s" % small_limit] = {
            "value": "did not start: %s" % failed.split("errnomon: error: ")[-1].split(",")[0] if failed else "served",
                                                  "budget": "starts and serves", "ok": "failed" not in small}
    return {"runs": runs, "small_limit": small, "checks": checks}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=int, default=30000)
    p.add_argument("--scrapes", type=int, default=6)
    p.add_argument("--limit", default="1G", help="the cgroup's memory limit (bytes, or with K/M/G on cgroup v1)")
    a = p.parse_args()
    if not 0 <= a.peers <= 250 * 250:
        p.error("--peers must be 0 to 62500 (peers are 127.1.x.y)")
    return measure(a.peers, a.scrapes, a.limit)


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
