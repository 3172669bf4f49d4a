"""The Prometheus collector: fresh metric families from the aggregator's snapshot on every scrape."""

import platform

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from . import __version__, abi, exposition
from .aggregate import HISTOGRAMS, METRIC_LABELS

HELP = {
    "socket_errors": "Errors that socket system calls returned to applications (op: send, recv, connect, accept).",
    "socket_error_reports": "Errors the kernel recorded on an established or accepted connection "
                            "(inet_sk_error_report), attributed to its owner.",
    "tcp_resets_received": "TCP resets received, by the TCP state the connection was in when the RST arrived.",
    "tcp_resets_sent": "TCP resets sent, by the kernel's reset reason; comm is empty when no process owns the socket.",
    "tcp_fins_sent": "Orderly TCP closes by this host (FINs sent, first or in answer to the peer's).",
    "tcp_fins_received": "Orderly TCP closes by the peer: FINs received while our side was open or closing at once.",
    "sigpipe": "SIGPIPE raised by socket writes, by what it did to the process (killed, handled, ignored).",
    "connect_failures": "TCP connection attempts that failed before the handshake completed, blocking or not, "
                        "by errno; port is the port dialled.",
    "listen_drops": "Connection attempts a listening socket dropped because its accept or SYN queue was full "
                    "(its own ListenDrops), by the listening process and port.",
    "tcp_reset_idle": "Seconds the peer had been silent (no segment received) when a TCP reset arrived on a "
                      "connection, by process and service port: a long silence is an idle timeout somewhere.",
}


def exported_name(metric):
    """The name a metric is exported under (a counter's without its _total)."""
    return "errnomon_tcp_reset_idle_seconds" if metric == "tcp_reset_idle" else "errnomon_" + metric


def histogram_rows(names, rows):
    """(label names without le, [(label values, [(le, cumulative count)], sum in seconds)]) from the rows of a
    histogram metric: one row per bucket holding that bucket's own count, and le="sum" holding milliseconds."""
    at = names.index("le")
    bounds = ["%.1f" % b for b in abi.RESET_IDLE_LE] + ["+Inf"]  # the le values decode.RESET_IDLE_LE gives
    groups = {}
    for values, value in rows:
        g = groups.setdefault(tuple(values[:at]) + tuple(values[at + 1:]), {})
        g[values[at]] = g.get(values[at], 0) + value
    out = []
    for labels, per in sorted(groups.items()):
        total, buckets = 0, []
        for le in bounds:
            total += per.get(le, 0)
            buckets.append((le, total))
        out.append((list(labels), buckets, per.get("sum", 0) / 1000.0))
    return [n for n in names if n != "le"], out


class ErrnoCollector:
    def __init__(self, aggregator, status, slice_size=exposition.SLICE):
        """status: a callable returning {'attached': {signal: [(probe, bool)]}, 'drops': {metric: n},
        'missed': {probe: n}}."""
        self.aggregator = aggregator
        self.status = status
        self.slice_size = slice_size

    def describe(self):
        return []  # created at scrape time; nothing to check at registration

    def collect(self):
        """Families built as they are asked for; a metric's series in families of at most `slice_size`
        (one name, consecutive: monitor/exposition.py writes them as one), so a scrape never holds every
        sample object at once."""
        counts = {}
        for metric in METRIC_LABELS:
            names, rows = self.aggregator.rows(metric)
            counts[metric] = len(rows)
            if metric in HISTOGRAMS:
                names, groups = histogram_rows(names, rows)
                for start in range(0, max(1, len(groups)), self.slice_size):
                    family = HistogramMetricFamily(exported_name(metric), HELP[metric], labels=names)
                    for values, buckets, total in groups[start:start + self.slice_size]:
                        family.add_metric(values, buckets, total)
                    yield family
                continue
            for start in range(0, max(1, len(rows)), self.slice_size):
                family = CounterMetricFamily("errnomon_" + metric, HELP[metric], labels=names)
                for values, value in rows[start:start + self.slice_size]:
                    family.add_metric(values, value)
                yield family
            del rows
        overflow = self.aggregator.overflow_counts()

        status = self.status()
        attached = GaugeMetricFamily("errnomon_probe_attached",
                                     "The hook (tracepoint, or kind:kernel function) each signal uses: 1 if attached, "
                                     "0 for a signal the kernel offers no hook for.", labels=["signal", "probe"])
        for signal, hooks in sorted(status["attached"].items()):
            for probe, ok in hooks:
                attached.add_metric([signal, probe], 1 if ok else 0)
        yield attached

        missed = CounterMetricFamily("errnomon_probe_missed",
                                     "Runs of the BPF program on this hook that the kernel skipped because "
                                     "another BPF program was running on the CPU (bpf_prog_info.recursion_misses): "
                                     "events lost uncounted.", labels=["probe"])
        for probe, n in sorted(status.get("missed", {}).items()):
            missed.add_metric([probe], n)
        yield missed

        dropped = CounterMetricFamily("errnomon_dropped",
                                      "Counts lost because a kernel map was full (raise kernel.map_size).",
                                      labels=["reason"])
        for metric, n in sorted(status["drops"].items()):
            dropped.add_metric([metric + "_map_full"], n)
        yield dropped

        undelivered = CounterMetricFamily("errnomon_events_dropped",
                                          "Error events (GET /errors) not delivered, counted in the kernel: over "
                                          "events.rate (rate_limit) or with the ring buffer full (ring_full). "
                                          "The error counts never miss them.", labels=["reason"])
        for reason, n in sorted(status.get("event_drops", {}).items()):
            undelivered.add_metric([reason], n)
        yield undelivered

        folded = CounterMetricFamily("errnomon_series_overflow",
                                     "Errors counted into remote=\"other\" (comm=\"other\" for errnomon_sigpipe_total) "
                                     "because the metric's series budget was spent (raise series.budget or "
                                     "group remotes).", labels=["metric"])
        for metric, n in sorted(overflow.items()):
            folded.add_metric([exported_name(metric) + ("" if metric in HISTOGRAMS else "_total")], n)
        yield folded

        count = GaugeMetricFamily("errnomon_series", "Series each errnomon metric currently exports.",
                                  labels=["metric"])
        for metric, n in counts.items():
            count.add_metric([exported_name(metric) + ("" if metric in HISTOGRAMS else "_total")], n)
        yield count

        info = GaugeMetricFamily("errnomon_build_info", "errnomon version and the kernel it runs on.",
                                 labels=["version", "kernel"])
        info.add_metric([__version__, platform.release()], 1)
        yield info
