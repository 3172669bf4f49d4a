"""3. Scrape: time to render /metrics with 1,000, 10,000 and 100,000 series, in-process, without BPF.

An Aggregator (series budget raised to the size) is filled with synthetic decoded events spread over the five
labelled metrics the way a busy host would (mostly socket_errors), and registered through ErrnoCollector into a
CollectorRegistry with the ProcessCollector, as the daemon does. Timed: prometheus_client.generate_latest, and a
real HTTP GET served by monitor/web.serve on 127.0.0.1 (plain, and with Accept-Encoding: gzip as Prometheus
sends it; gzipped by monitor/web.py at web.GZIP_LEVEL). Median of several. What gzip.compress costs at levels 9, 6
and 1 on the same page is timed alone.
"""

import gc
import gzip
import ipaddress
import os
import sys
import time
import urllib.request

from common import REPO, free_port, log, median

sys.path.insert(0, REPO)

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest  # noqa: E402

from monitor import config as config_mod, web  # noqa: E402
from monitor.aggregate import Aggregator  # noqa: E402
from monitor.collector import ErrnoCollector  # noqa: E402
from monitor.decode import Event  # noqa: E402
from monitor.loader import SIGNALS, bare, hook_label  # noqa: E402

BUDGET_MS_10K = 100.0
SHARE = (("socket_errors", 0.5), ("socket_error_reports", 0.2), ("tcp_resets_received", 0.1),
         ("tcp_resets_sent", 0.1), ("tcp_fins_sent", 0.1))
ERRNOS = ("ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNREFUSED", "EHOSTUNREACH")
OPS = ("send", "recv", "connect", "accept")
STATES = ("ESTABLISHED", "SYN_SENT", "CLOSE_WAIT", "FIN_WAIT1")
REASONS = ("NO_SOCKET", "TCP_ABORT_ON_CLOSE", "NOT_SPECIFIED")


def events(n):
    """n distinct label sets, shared out over the metrics by SHARE: each a distinct (comm, remote) pair."""
    out = []
    i = 0
    for metric, share in SHARE:
        count = int(n * share) if metric != SHARE[-1][0] else n - len(out)
        for _ in range(count):
            remote = ipaddress.IPv4Address(0x0A000000 + i)  # 10.0.0.0/8: labels only, no traffic
            comm = "app-%03d" % (i % 500)
            out.append((Event(metric=metric, errno=ERRNOS[i % 5] if "error" in metric else None,
                              op=OPS[i % 4] if metric == "socket_errors" else None, comm=comm, remote=remote,
                              port=(443, 80, 5432, 6379, 8080)[i % 5],
                              state=STATES[i % 4] if metric == "tcp_resets_received" else None,
                              reason=REASONS[i % 3] if metric == "tcp_resets_sent" else None,
                              action=None, pid=1000 + i, cgroup=0), 1 + i % 7))
            i += 1
    return out


def build(n):
    agg = Aggregator(config_mod.parse("series: {budget: %d}\nremote: {groups: [{name: loopback, cidrs: "
                                      "[127.0.0.0/8]}]}" % max(n, 1)))
    agg.add(events(n))
    attached = {s.name: [(hook_label(s.rungs[0].kind, bare(t)), True) for t in s.rungs[0].targets] for s in SIGNALS}
    status = {"attached": attached, "drops": {m: 0 for m, _ in SHARE + (("sigpipe", 0),)}}
    registry = CollectorRegistry()
    registry.register(ErrnoCollector(agg, lambda: status))
    ProcessCollector(registry=registry)
    series = sum(len(t) for t in agg.series.values())
    return registry, series


def timed(fn, reps):
    times = []
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def get(url, gzip=False):
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def run(sizes=(1000, 10000, 100000), reps=7, http_reps=5):
    results = {}
    for n in sizes:
        registry, series = build(n)
        body = generate_latest(registry)
        r = max(3, reps if n < 100000 else (reps + 1) // 2)
        gen = timed(lambda: generate_latest(registry), r)
        port = free_port()
        httpd = web.serve("127.0.0.1:%d" % port, "/metrics", registry)
        url = "http://127.0.0.1:%d/metrics" % port
        try:
            get(url)  # connect path warm
            plain = timed(lambda: get(url), http_reps)
            gz_body = get(url, gzip=True)
            gz = timed(lambda: get(url, gzip=True), http_reps)
        finally:
            httpd.shutdown()
            httpd.server_close()
        ms = median(gen) * 1000
        # prometheus_client gzips with gzip.compress() at its default level, 9; what lower levels would cost
        gz_levels = {}
        for level in (9, 6, 1):
            t = timed(lambda: gzip.compress(body, compresslevel=level), 3)
            gz_levels[str(level)] = {"ms": round(median(t) * 1000, 3),
                                     "bytes": len(gzip.compress(body, compresslevel=level))}
        results[str(n)] = {
            "gzip_compress_levels": gz_levels,
            "series": series,
            "bytes": len(body),
            "gzip_bytes": len(gz_body),
            "generate_latest_ms": [round(t * 1000, 3) for t in gen],
            "generate_latest_median_ms": round(ms, 3),
            "http_get_median_ms": round(median(plain) * 1000, 3),
            "http_get_gzip_median_ms": round(median(gz) * 1000, 3),
            "ms_per_1k_series": round(ms / (series / 1000), 4),
            "http_ms_per_1k_series": round(median(plain) * 1000 / (series / 1000), 4),
        }
        log("scrape %6d series: generate_latest %.1f ms, HTTP GET %.1f ms (gzip %.1f ms), %.3f ms per 1k series"
            % (series, ms, median(plain) * 1000, median(gz) * 1000, ms / (series / 1000)))
        del registry
        gc.collect()

    checks = {}
    if "10000" in results:
        v = results["10000"]["http_get_median_ms"]
        checks["scrape_10k_under_100ms"] = {"value": v, "budget": "< %.0f ms (HTTP GET)" % BUDGET_MS_10K,
                                            "ok": v < BUDGET_MS_10K}
        v = results["10000"]["http_get_gzip_median_ms"]
        checks["scrape_gzip_10k_under_100ms"] = {"value": v, "budget": "< %.0f ms (HTTP GET, gzip)" % BUDGET_MS_10K,
                                                 "ok": v < BUDGET_MS_10K}
    keys = [str(n) for n in sizes]
    if len(keys) >= 2:
        a, b = results[keys[-2]]["ms_per_1k_series"], results[keys[-1]]["ms_per_1k_series"]
        checks["scrape_linear"] = {
            "value": "%.3f -> %.3f ms per 1k series (%s -> %s series)" % (a, b, keys[-2], keys[-1]),
            "budget": "per-1k cost at the largest size within 1.5x of the next smaller", "ok": b <= 1.5 * a}
    return {"sizes": list(sizes), "results": results, "python": sys.version.split()[0], "pid": os.getpid(),
            "gzip_level": getattr(web, "GZIP_LEVEL", 9), "checks": checks}
