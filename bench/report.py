"""docs/BENCHMARKS.md and docs/img/bench-*.png, regenerated from the JSON results in bench/out/.

The prose lives here; every number comes from the JSON. Run by bench/run.py after a full run, or alone:
    .venv/bin/python bench/run.py --docs-only [--out DIR]
"""

import json
import os

import ladder_report
from common import REPO

DOC = os.path.join(REPO, "docs", "BENCHMARKS.md")
IMG = os.path.join(REPO, "docs", "img")


def load(out_dir, name):
    path = os.path.join(out_dir, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def pct(x, digits=1):
    return "%.*f%%" % (digits, 100 * x)


def mib(kib):
    return "%.1f MiB" % (kib / 1024)


def ok(v):
    return "yes" if v else "**NO**"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


# ---- plots -------------------------------------------------------------------------------------------------

def plots(hot, storm, scrape, foot):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(IMG, exist_ok=True)
    made = {}

    if hot:
        fig, axes = plt.subplots(1, len(hot["sizes"]), figsize=(12, 4.2), sharey=True)
        if len(hot["sizes"]) == 1:
            axes = [axes]
        configs = [c for c in hot["configs"] if c != "bare"]
        for ax, size in zip(axes, hot["sizes"]):
            res = hot["results"][str(size)]
            med = [100 * res[c]["median_ratio"] for c in configs]
            colors = ["#2b7bba" if c == "errnomon" else "#8cc0e6" if c.startswith("errnomon") else "#999999"
                      for c in configs]
            ax.bar(range(len(configs)), med, color=colors)
            for i, c in enumerate(configs):
                ax.scatter([i] * len(res[c]["ratios"]), [100 * x for x in res[c]["ratios"]], color="black", s=8,
                           zorder=3)
                ax.text(i, 0, "median\n%.1f%%" % med[i], ha="center", va="bottom", fontsize=9, color="white",
                        transform=ax.get_xaxis_transform())
            budget = 97.0 if size == hot["sizes"][0] else 99.5
            ax.axhline(budget, color="red", linestyle="--", linewidth=1, label="budget %.1f%%" % budget)
            ax.set_xticks(range(len(configs)))
            ax.set_xticklabels([c.replace("-syscalls-on", "\nsyscalls on") for c in configs], fontsize=8)
            ax.set_title("%s messages" % ("%d B" % size if size < 1024 else "%d KiB" % (size // 1024)))
            ax.legend(loc="upper right", fontsize=8)
        lo = min(100 * min(hot["results"][str(s)][c]["ratios"]) for s in hot["sizes"] for c in configs)
        hi = max(100 * max(hot["results"][str(s)][c]["ratios"]) for s in hot["sizes"] for c in configs)
        axes[0].set_ylim(max(0, min(lo, 97) - 3), max(101, hi + 1))
        axes[0].set_ylabel("% of the bare rate (bar: median; dots: rounds)")
        fig.suptitle("Hot path: loopback TCP ping-pong kept under each tracer")
        fig.tight_layout()
        fig.savefig(os.path.join(IMG, "bench-hotpath.png"), dpi=100)
        plt.close(fig)
        made["hotpath"] = "img/bench-hotpath.png"

    if storm:
        modes = list(storm["modes"])
        fig, ax = plt.subplots(figsize=(7, 3.8))
        x = range(len(modes))
        bare = [storm["modes"][m]["bare"]["rate_per_s"] / 1e3 for m in modes]
        withe = [storm["modes"][m]["with_errnomon"]["rate_per_s"] / 1e3 for m in modes]
        ax.bar([i - 0.2 for i in x], bare, width=0.4, color="#999999", label="generator alone")
        ax.bar([i + 0.2 for i in x], withe, width=0.4, color="#2b7bba", label="with errnomon")
        for i, m in enumerate(modes):
            r = storm["modes"][m]
            ax.text(i + 0.2, withe[i], "%s\ncounted exactly" % ("all" if r["exact"] else "NOT all"),
                    ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x))
        ax.set_xticklabels(["%s (%s)" % (m, storm["modes"][m]["errno"]) for m in modes])
        ax.set_ylabel("errors per second (thousands)")
        ax.set_yscale("log")
        ax.set_ylim(10, max(bare + withe) * 3)
        ax.set_title("Error storm: %d processes" % storm["modes"][modes[0]]["processes"])
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(IMG, "bench-storm.png"), dpi=100)
        plt.close(fig)
        made["storm"] = "img/bench-storm.png"

    if scrape:
        sizes = [scrape["results"][str(n)]["series"] for n in scrape["sizes"]]
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in (("generate_latest_median_ms", "generate_latest"), ("http_get_median_ms", "HTTP GET"),
                           ("http_get_gzip_median_ms", "HTTP GET, gzip")):
            ax.plot(sizes, [scrape["results"][str(n)][key] for n in scrape["sizes"]], marker="o", label=label)
        ax.axhline(100, color="red", linestyle="--", linewidth=1, label="budget at 10k series: 100 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("series")
        ax.set_ylabel("ms (median)")
        ax.set_title("Scrape: time to serve /metrics")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(IMG, "bench-scrape.png"), dpi=100)
        plt.close(fig)
        made["scrape"] = "img/bench-scrape.png"

    if foot:
        s = foot["samples"]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([p["t"] for p in s], [p["RssAnon"] / 1024 for p in s], marker=".", color="#2b7bba", label="RssAnon")
        ax.axhline(40, color="red", linestyle="--", linewidth=1, label="budget 40 MiB")
        fix = foot.get("proposed_fix_malloc_trim")
        if fix and fix.get("samples"):
            ax.plot([p["t"] for p in fix["samples"]], [p["RssAnon"] / 1024 for p in fix["samples"]], marker=".",
                    color="green", label="RssAnon with malloc_trim(0) after load (proposed fix)")
        ax.set_ylim(0, max(45, max(p["RssAnon"] for p in s) / 1024 * 1.15))
        ax.set_xlabel("seconds of churn")
        ax.set_ylabel("MiB")
        ax2 = ax.twinx()
        ax2.plot([p["t"] for p in s], [p["series"] for p in s], color="#999999", linewidth=1, label="series")
        ax2.set_ylabel("series exported")
        ax2.set_ylim(0, max(p["series"] for p in s) * 1.3 + 1)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
        ax.set_title("Footprint: errnomon's anonymous memory during a %.0f s churn" % foot["churn"]["seconds"])
        fig.tight_layout()
        fig.savefig(os.path.join(IMG, "bench-footprint.png"), dpi=100)
        plt.close(fig)
        made["footprint"] = "img/bench-footprint.png"
    return made


# ---- the document ------------------------------------------------------------------------------------------

def quiet_line(name, r):
    q = r.get("quiet_before") if r else None
    if not q:
        return "%s: not run" % name
    others = ", ".join("%s (pid %d)" % (h["comm"], h["pid"]) for h in q["other_bpf_holders"]) or "none"
    run = r.get("run", {})
    return "%s: run %s (%s mode, %.0f s); %s before it (host busy %.2f CPUs; other tracing BPF holders: %s)" % (
        name, run.get("date", "?"), run.get("mode", "?"), r.get("duration_s", 0),
        "quiet" if q["quiet"] else "**NOT quiet**", q["host_busy_cpus"], others)


def size_name(size):
    return "%d B" % size if size < 1024 else "%d KiB" % (size // 1024)


def hot_section(hot, img):
    out = ["## 1. Hot path", ""]
    if not hot:
        return out + ["Not run.", ""]
    out += [
        "`bench/pingpong.c` (gcc -O2): one thread, one real loopback TCP connection with both ends in that thread "
        "(send on A, recv on B, send on B, recv on A: four successful socket calls per iteration), pinned to CPU %d, "
        "%g s per run, after 1,000 warm-up iterations. Configurations, each attached only during its own slot: "
        "`bare`; `errnomon` (the daemon, `.venv/bin/errnomon --config.file=config.example.yaml`, started and "
        "serving /metrics before the run, stopped after); `bpftrace-tp` (the same error counting on "
        "`sock:sock_send_length`/`sock_recv_length` with `/args->ret < 0/`); `bpftrace-syscalls` (`ret < 0` on "
        "`sys_exit_` sendto, recvfrom, sendmsg, recvmsg, sendmmsg, recvmmsg, write, read, writev, readv); and, when "
        "this errnomon has the setting, `errnomon-syscalls-on` (the daemon with the same config plus "
        "`kernel.syscall_tracepoints: true`, the opt-in that counts connect and accept errors). "
        "%d rounds; each round runs every configuration once, in an order rotated by one each round, with both "
        "message sizes back to back, after %g s of settling. A run during which the whole host was busier than %.2f CPUs "
        "(another process ran) is repeated, at most %d times. A ratio is a configuration's rate over the bare rate "
        "of the same round; the figure is the median ratio. *Added ns per call* = (1/ratio - 1) / bare rate / 4."
        % (hot["cpu_pinned"], hot["seconds_per_run"], hot["rounds"], hot.get("settle_s", 0), hot.get("busy_limit", 0),
           hot.get("repeats", 0)),
        "",
    ]
    for size in hot["sizes"]:
        res = hot["results"][str(size)]
        rows = []
        for c in hot["configs"]:
            r = res[c]
            rows.append(["`%s`" % c, "{:,.0f}".format(r["median_rate"]), pct(r["median_ratio"], 2),
                         pct(1 - r["median_ratio"], 2) if c != "bare" else "",
                         "%.0f" % r["ns_per_call"] if c != "bare" else "",
                         ", ".join("%.3f" % x for x in r["ratios"]) if c != "bare" else ""])
        out += ["**%s messages** (medians of rates and of ratios are taken separately)" % size_name(size), "",
                table(["Configuration", "Median iterations/s", "Kept (median ratio)", "Lost",
                       "Added ns per call", "Ratios per round"], rows), ""]
    if img:
        out += ["![hot path](%s)" % img, ""]
    busy = hot.get("max_host_busy_cpus")
    if busy is not None:
        out += ["Host CPU busy during the runs: at most %.2f CPUs (the ping-pong itself is 1.0; more means another "
                "process ran during a measurement)." % busy, ""]
    bd = hot.get("breakdown")
    if bd:
        rows = []
        for v in bd["variants"]:
            if v == "bare":
                continue
            row = ["`%s`" % v]
            for size in hot["sizes"]:
                r = bd["results"][str(size)][v]
                row += [pct(r["median_ratio"], 2), "%.0f" % r["ns_per_call"]]
            rows.append(row)
        header = ["Loaded in the bench process (no daemon)"]
        for size in hot["sizes"]:
            header += ["%s kept" % size_name(size), "ns/call"]
        out += ["**Where the time goes.** The same ping-pong, %d rounds, with parts of errnomon loaded by bcc in the "
                "benchmark process itself: `empty-raw` is a raw tracepoint program on the two send/recv tracepoints "
                "that returns at once (the floor of any BPF program there); `errnomon-send/recv-only` is errnomon's "
                "two raw tracepoint programs alone; `errnomon-no-syscalls` is everything except the `syscalls:` "
                "tracepoints (connect, accept); `errnomon-all-in-process` is all 13 programs without the daemon "
                "process." % bd["rounds"], "",
                table(header, rows), ""]
    return out


def storm_section(storm, img):
    out = ["## 2. Error storm", ""]
    if not storm:
        return out + ["Not run.", ""]
    m0 = storm["modes"][list(storm["modes"])[0]]
    out += [
        "`bench/storm.c` (gcc -O2): %d processes, each named by prctl(PR_SET_NAME) (`stormE<run>_<i>`), count "
        "their own errors. `epipe`: send of 1 byte with MSG_NOSIGNAL on a loopback TCP connection the process shut "
        "down itself (SHUT_WR): every send fails with EPIPE at once, the fastest socket error this machine makes. "
        "`refused`: connect() to a loopback port that is bound but not listening: ECONNREFUSED. Each mode runs "
        "once without errnomon (the rate the generator reaches alone) and once with it. errnomon's "
        "`errnomon_socket_errors_total{errno,op}` for those comms is scraped after the storm until it equals the "
        "generators' counts, then once more two drain intervals later (it must not move). The daemon's CPU is "
        "utime+stime from /proc/<pid>/stat over the storm window." % m0["processes"], "",
    ]
    rows = []
    for mode, r in storm["modes"].items():
        rows.append(["`%s` (%s, op=%s)" % (mode, r["errno"], r["op"]), "%g s" % r["seconds"],
                     "{:,}".format(r["bare"]["rate_per_s"]), "{:,}".format(r["with_errnomon"]["rate_per_s"]),
                     pct(r["rate_kept_under_errnomon"], 1),
                     "{:,}".format(r["with_errnomon"]["errors"]), "{:,}".format(sum(r["counted"].values())),
                     ok(r["exact"]), "%.1f s" % r["drain_wait_seconds"],
                     "%.2f%%" % (100 * r["daemon_cpu_storm_fraction"]),
                     ", ".join("%s=%d" % kv for kv in r["dropped"].items()) or "0"])
    out += [table(["Mode", "Time", "Errors/s alone", "Errors/s with errnomon", "Rate kept", "Generated",
                   "errnomon counted", "Exact", "Counted within", "Daemon CPU (of one core)", "Dropped"], rows), ""]
    out += ["Highest rate reached with every error counted exactly: **{:,} errors/s** (`{}`).".format(
        storm["highest_rate_per_s"], storm["highest_rate_mode"]), ""]
    if img:
        out += ["![storm](%s)" % img, ""]
    e = storm["modes"].get("epipe")
    if e and e["rate_kept_under_errnomon"]:
        cpus = e["bare"]["host_busy_cpus"]
        ns = (cpus / e["with_errnomon"]["rate_per_s"] - cpus / e["bare"]["rate_per_s"]) * 1e9
        out += ["Counting costs the erring process, not the daemon: at %s errors/s the generators kept %s of their "
                "rate: about %.0f ns of kernel time per counted error, paid by the erring thread itself in the send "
                "program (owner-table lookup, comm and cgroup, the counting map's lookup and atomic add, the SIGPIPE "
                "lookup), while the daemon only drains a handful of map entries twice a second. A real application "
                "does not fail millions of times a second; in the ping-pong above, where calls succeed, none of "
                "this runs."
                % ("{:,}".format(e["with_errnomon"]["rate_per_s"]), pct(e["rate_kept_under_errnomon"]), ns), ""]
    return out


def scrape_section(scrape, img):
    out = ["## 3. Scrape", ""]
    if not scrape:
        return out + ["Not run.", ""]
    out += [
        "In-process, without BPF (`bench/scrape.py`): an `Aggregator` with `series.budget` raised to the size is "
        "filled with synthetic decoded events, half in `socket_errors`, the rest in error reports, resets "
        "received and sent, and FINs (distinct comm/remote pairs), and registered through `ErrnoCollector` in a "
        "`CollectorRegistry` with the `ProcessCollector`, as the daemon does. Timed: "
        "`prometheus_client.generate_latest` (median of several, after gc), and a real HTTP GET of /metrics from "
        "`monitor.web.serve` on 127.0.0.1, plain and with `Accept-Encoding: gzip` (as Prometheus asks).", "",
    ]
    rows = []
    for n in scrape["sizes"]:
        r = scrape["results"][str(n)]
        rows.append(["{:,}".format(r["series"]), "{:,}".format(r["bytes"]), "{:,}".format(r["gzip_bytes"]),
                     "%.1f" % r["generate_latest_median_ms"], "%.1f" % r["http_get_median_ms"],
                     "%.1f" % r["http_get_gzip_median_ms"], "%.2f" % r["ms_per_1k_series"],
                     "%.2f" % r["http_ms_per_1k_series"]])
    out += [table(["Series", "Bytes", "Bytes gzip", "generate_latest ms", "HTTP GET ms", "HTTP GET gzip ms",
                   "ms per 1k series (generate)", "ms per 1k series (HTTP)"], rows), ""]
    if img:
        out += ["![scrape](%s)" % img, ""]
    r10 = scrape["results"].get("10000")
    if r10 and "gzip_compress_levels" in r10:
        g = r10["gzip_compress_levels"]
        out += ["Compression is a third of the gzip scrape: prometheus_client compresses with `gzip.compress()` at "
                "its default level 9, %.1f ms for the 10,000-series page (%s bytes); level 6 takes %.1f ms (%s "
                "bytes), level 1 %.1f ms (%s bytes). Proposed (monitor/web.py): build the metrics app with "
                "`make_wsgi_app(registry, disable_compression=True)` and gzip in `_app` at level 1 when the request's "
                "Accept-Encoding has gzip (setting Content-Encoding and Content-Length)."
                % (g["9"]["ms"], "{:,}".format(g["9"]["bytes"]), g["6"]["ms"], "{:,}".format(g["6"]["bytes"]),
                   g["1"]["ms"], "{:,}".format(g["1"]["bytes"])), ""]
    return out


def foot_section(foot, img):
    out = ["## 4. Footprint", ""]
    if not foot:
        return out + ["Not run.", ""]
    st = foot["startups"]
    out += [
        "Start-up: `.venv/bin/errnomon` started with `NOTIFY_SOCKET` set to a datagram socket the benchmark "
        "binds; timed from exec to the `READY=1` datagram (which the daemon sends after the programs are attached "
        "and the HTTP server runs). %d starts: %s s; **median %.2f s**. Phases of the last start: %s."
        % (len(st), ", ".join("%.2f" % s["ready_s"] for s in st), foot["startup_ready_median_s"],
           "; ".join("%.2f s %s" % (t, m) for t, m in st[-1]["status"])), "",
        "Memory: `/proc/<pid>/status` two seconds after READY and a first scrape, then during a churn "
        "(`bench/churn.c`): %d short-lived processes a second for %.0f s, each connecting to a loopback server "
        "that resets every other connection, connecting to a refused port and sending after its own shutdown, "
        "named over a bounded set of %d comms; /metrics scraped and RssAnon sampled every %.0f s."
        % (foot["churn"]["rate_per_s"], foot["churn"]["seconds"], foot["churn"]["names"], foot["sample_every_s"]),
        "",
    ]
    c = foot["churn"]["result"]
    rows = [
        ["After start-up", mib(foot["after_startup"]["VmRSS"]), mib(foot["after_startup"]["RssAnon"]),
         foot["samples"][0]["series"] if foot["samples"] else ""],
        ["After the churn", mib(foot["after_churn"]["VmRSS"]), mib(foot["after_churn"]["RssAnon"]),
         foot["samples"][-1]["series"]],
        ["Peak during the churn", "", mib(foot["anon_peak_kib"]), ""],
    ]
    out += [table(["", "VmRSS", "RssAnon", "Series"], rows), "",
            "Churn: %s processes in %.0f s (%s failed); RssAnon grew %s from the %.0f s warm-up mark to the end; "
            "daemon CPU during the churn %.2f%% of one core."
            % ("{:,}".format(c.get("processes", 0)), c.get("seconds", 0), c.get("failed", "?"),
               mib(foot["anon_growth_after_warmup_kib"]), foot["warmup_s"], 100 * foot["churn"]["daemon_cpu_fraction"]),
            ""]
    if img:
        out += ["![footprint](%s)" % img, ""]
    rows = [[k, mib(v)] for k, v in sorted(foot["after_startup_anon_by_mapping_kib"].items(), key=lambda kv: -kv[1])]
    out += ["Anonymous memory by mapping after start-up (`/proc/<pid>/smaps`):", "", table(["Mapping", "Anonymous"], rows), ""]
    mp = foot.get("memprofile", {})
    if "plain" in mp:
        steps = mp["plain"]["steps_kib"]
        rows = []
        prev = None
        for name, kib in steps:
            rows.append([name, mib(kib), ("+" if prev is not None and kib >= prev else "") +
                         (mib(kib - prev) if prev is not None else "")])
            prev = kib
        out += ["Where it comes from (`bench/memprofile.py`: RssAnon of a fresh interpreter after each start-up step, "
                "as the daemon takes them):", "", table(["Step", "RssAnon", "Change"], rows), ""]
        if "bcc_in_process" in mp["plain"]:
            out += [("bcc (libbcc, libLLVM, libclang and the compiler's heap) is loaded in the daemon process."
                     if mp["plain"]["bcc_in_process"] else
                     "bcc is never loaded in the daemon process: `monitor/loader.py` compiles and attaches in a "
                     "short-lived child that passes the map and attachment descriptors back and exits, so "
                     "neither LLVM's relocated data nor the compiler's heap stays with the daemon."), ""]
        tm = mp.get("tracemalloc", {})
        if "python_allocated_after_load_kib" in tm:
            out += ["Python objects (tracemalloc) account for only %s of it after the load."
                    % mib(tm["python_allocated_after_load_kib"]), ""]
    return out


def checks_table(results):
    labels = {
        "errnomon_keeps_97pct_64B": ("Hot path", "errnomon keeps >= 97% of the bare 64 B rate"),
        "errnomon_loses_less_than_bpftrace-tp_64B": ("Hot path", "errnomon loses less than bpftrace on the same tracepoints"),
        "errnomon_loses_less_than_bpftrace-syscalls_64B": ("Hot path", "errnomon loses less than bpftrace on syscall exits"),
        "errnomon_keeps_99.5pct_16KiB": ("Hot path", "errnomon keeps >= 99.5% of the bare 16 KiB rate"),
        "exact_counts_epipe": ("Storm", "EPIPE storm counted exactly"),
        "daemon_cpu_epipe": ("Storm", "daemon CPU < 5% of a core (EPIPE storm)"),
        "exact_counts_refused": ("Storm", "ECONNREFUSED storm counted exactly"),
        "daemon_cpu_refused": ("Storm", "daemon CPU < 5% of a core (ECONNREFUSED storm)"),
        "scrape_10k_under_100ms": ("Scrape", "10,000 series served in < 100 ms"),
        "scrape_gzip_10k_under_100ms": ("Scrape", "10,000 series served gzipped in < 100 ms"),
        "scrape_linear": ("Scrape", "cost grows linearly"),
        "startup_under_3s": ("Footprint", "start-up to READY=1 < 3 s"),
        "anon_after_startup_under_40MiB": ("Footprint", "RssAnon after start-up < 40 MiB"),
        "anon_peak_under_40MiB": ("Footprint", "RssAnon during the churn < 40 MiB"),
        "anon_flat_across_churn": ("Footprint", "RssAnon flat across the churn"),
    }
    rows = []
    all_checks = {}
    for name in ("hotpath", "storm", "scrape", "footprint"):
        r = results.get(name)
        if r:
            all_checks.update(r.get("checks", {}))
    order = [k for k in labels if k in all_checks] + sorted(k for k in all_checks if k not in labels)
    for key in order:
        v = all_checks[key]
        area, what = labels.get(key, ("", key))
        value = v["value"]
        if key.startswith("errnomon_"):
            value = pct(value, 2)
        elif key.startswith("daemon_cpu"):
            value = "%.2f%% of a core" % (100 * value)
        elif key == "anon_flat_across_churn":
            value = "%+.1f MiB" % (value / 1024)
        elif key.startswith("anon_"):
            value = mib(value)
        elif key.startswith("startup"):
            value = "%.2f s" % value
        elif key.startswith("scrape_") and isinstance(value, (int, float)):
            value = "%.1f ms" % value
        rows.append([area, what, v["budget"], value, ok(v["ok"])])
    return table(["Area", "Budget", "Limit", "Measured", "Met"], rows)


def analysis(hot, storm, scrape, foot):
    """Paragraphs for every budget not met: what was measured, where the cost is, the proposed fix."""
    out = []
    if hot:
        checks = hot["checks"]
        bd = hot.get("breakdown", {}).get("results", {})
        small, big = str(hot["sizes"][0]), str(hot["sizes"][-1])
        if not all(v["ok"] for v in checks.values()):
            out += ["### Hot path", ""]
            for size in (small, big):
                res = hot["results"][size]
                bare = res["bare"]["median_rate"]
                budget = 0.97 if size == small else 0.995
                allowed = (1 / budget - 1) / bare / hot["calls_per_iteration"] * 1e9
                line = ("- %s: a bare iteration takes %.1f us (4 calls); keeping %s allows %.0f ns per call. "
                        "errnomon (the daemon) adds %.0f ns per call (%s kept); bpftrace on the same tracepoints "
                        "%.0f ns (%s), on the syscall exits %.0f ns (%s)."
                        % (size_name(int(size)), 1e6 / bare, pct(budget, 1), allowed, res["errnomon"]["ns_per_call"],
                           pct(res["errnomon"]["median_ratio"], 2), res["bpftrace-tp"]["ns_per_call"],
                           pct(res["bpftrace-tp"]["median_ratio"], 2), res["bpftrace-syscalls"]["ns_per_call"],
                           pct(res["bpftrace-syscalls"]["median_ratio"], 2)))
                if bd:
                    b = bd[size]
                    line += (" In-process (table above): empty raw tracepoint program %.0f ns (%s kept), errnomon's "
                             "send/recv programs alone %.0f ns (%s), errnomon without its syscall tracepoints %.0f ns "
                             "(%s), all of errnomon %.0f ns (%s)."
                             % (b["empty-raw"]["ns_per_call"], pct(b["empty-raw"]["median_ratio"], 2),
                                b["errnomon-send/recv-only"]["ns_per_call"],
                                pct(b["errnomon-send/recv-only"]["median_ratio"], 2),
                                b["errnomon-no-syscalls"]["ns_per_call"],
                                pct(b["errnomon-no-syscalls"]["median_ratio"], 2),
                                b["errnomon-all-in-process"]["ns_per_call"],
                                pct(b["errnomon-all-in-process"]["median_ratio"], 2)))
                out.append(line)
            out.append("")
            if bd:
                sys_ns = {s: bd[s]["errnomon-all-in-process"]["ns_per_call"] - bd[s]["errnomon-no-syscalls"]["ns_per_call"]
                          for s in (small, big)}
                floor = {s: 1 - bd[s]["empty-raw"]["median_ratio"] for s in (small, big)}
                out += [
                    "Where it goes:", "",
                    "1. **errnomon's `syscalls:` tracepoints** (sys_enter/exit_connect, sys_exit_accept4, "
                    "sys_exit_accept): %.0f ns per call at 64 B, %.0f ns at 16 KiB (all of errnomon minus errnomon "
                    "without them). They are not on the socket calls' path: enabling *any* syscall tracepoint sets "
                    "SYSCALL_WORK_SYSCALL_TRACEPOINT on every task, so every system call of every process on the host "
                    "(file reads, futexes, not only connect and accept) takes the traced entry and exit path "
                    "(`trace_sys_enter`/`trace_sys_exit` and the per-syscall bitmap check). This is the part of the "
                    "loss errnomon controls."
                    % (sys_ns[small], sys_ns[big]),
                    "2. **The floor of any program on the two send/recv tracepoints**: an empty raw tracepoint "
                    "program already costs %s of the 64 B rate and %s of the 16 KiB rate on this machine. The "
                    "tracepoint's static call, `bpf_trace_run2` (migrate_disable, RCU, the recursion counter) and the "
                    "indirect call into the program are paid per call, and this VM pays extra for indirect calls and "
                    "returns (see `cpu_vulnerabilities` in bench/out/machine.json: retpolines, and the SRSO \"Safe "
                    "RET\" return thunk). errnomon's own send/recv programs, which return at their first comparison "
                    "when ret >= 0, measure %+.0f ns per call against the empty program at 64 B and %+.0f ns at 16 KiB: "
                    "inside the round-to-round noise (about 1%%, 25 ns per call), so indistinguishable from the floor."
                    % (pct(floor[small], 2), pct(floor[big], 2),
                       bd[small]["errnomon-send/recv-only"]["ns_per_call"] - bd[small]["empty-raw"]["ns_per_call"],
                       bd[big]["errnomon-send/recv-only"]["ns_per_call"] - bd[big]["empty-raw"]["ns_per_call"]),
                    "3. **16 KiB messages do not hide the cost on loopback**: copying 16 KiB is cheap next to the "
                    "TCP stack, so a 16 KiB iteration is barely longer than a 64 B one. 99.5%% at 16 KiB allows "
                    "%.0f ns per call, less than the floor above: no tracepoint-based counter can meet it on this "
                    "loopback ping-pong on this machine. It can hold where calls take longer (a real NIC, larger "
                    "writes, applications that work between calls)."
                    % ((1 / 0.995 - 1) / hot["results"][big]["bare"]["median_rate"] / hot["calls_per_iteration"] * 1e9),
                    "",
                    ]
                on = hot["results"][small].get("errnomon-syscalls-on")
                if on:
                    out += [
                        "**Fix, applied**: `kernel.syscall_tracepoints` defaults to false, so the `errnomon` row (the "
                        "shipped config) runs without the syscall tracepoints and keeps %s at 64 B and %s at 16 KiB; "
                        "the `errnomon-syscalls-on` row, with the opt-in that counts connect and accept errors, keeps "
                        "%s and %s. Refused, timed-out and unreachable TCP connects still show by default in "
                        "`errnomon_connect_failures_total` and resets received in SYN_SENT. What is left is the "
                        "floor of point 2: the 97%% budget at 64 B is within about one point of it, in the noise, and "
                        "99.5%% at 16 KiB is out of reach for any tracepoint program on this machine."
                        % (pct(hot["results"][small]["errnomon"]["median_ratio"], 2),
                           pct(hot["results"][big]["errnomon"]["median_ratio"], 2),
                           pct(on["median_ratio"], 2), pct(hot["results"][big]["errnomon-syscalls-on"]["median_ratio"], 2)),
                        ""]
    if foot:
        checks = foot["checks"]
        if not checks["anon_after_startup_under_40MiB"]["ok"] or not checks["anon_peak_under_40MiB"]["ok"] \
                or not checks["anon_flat_across_churn"]["ok"]:
            out += ["### Anonymous memory", ""]
            mp = foot.get("memprofile", {}).get("plain", {})
            steps = mp.get("steps_kib", [])
            by_map = foot["after_startup_anon_by_mapping_kib"]
            fix = foot.get("proposed_fix_malloc_trim")
            big = sorted(by_map.items(), key=lambda kv: -kv[1])[:4]
            out += ["After start-up the largest anonymous mappings are %s; the churn adds %s."
                    % (", ".join("%s %s" % (k, mib(v)) for k, v in big),
                       mib(max(0, foot["anon_peak_kib"] - foot["after_startup"]["RssAnon"]))), ""]
            if steps and mp.get("bcc_in_process"):
                d = dict(steps)
                load_step = [k for k in d if k.startswith("loader.load")][0]
                trim_step = [k for k in d if k.startswith("malloc_trim")][0]
                out += ["The loader compiles with bcc inside the daemon: libbcc, libLLVM and libclang's relocated "
                        "data is private anonymous memory, and clang/LLVM leave their freed heap with glibc. "
                        "`loader.load()` takes RssAnon from %s to %s; `malloc_trim(0)` after it brings it to %s."
                        % (mib(steps[1][1]), mib(d[load_step]), mib(d[trim_step])), ""]
                out += ["Proposed fixes, in order of size:", ""]
                if fix:
                    out += ["1. **`malloc_trim(0)` after the programs are loaded** (`monitor/loader.py` `load()`: "
                            "`ctypes.CDLL(None).malloc_trim(0)`, guarded for non-glibc). Prototype measured here (the "
                            "real CLI through a wrapper that calls it after `loader.load`): RssAnon after start-up "
                            "**%s** instead of %s; peak **%s** during a %.0f s churn."
                            % (mib(fix["after_startup"]["RssAnon"]), mib(foot["after_startup"]["RssAnon"]),
                               mib(fix.get("anon_peak_kib", 0)), fix.get("churn_seconds", 0))]
                out += ["2. Compile and attach in a short-lived child process that passes the map and attachment "
                        "descriptors back (SCM_RIGHTS) and exits: the daemon never loads libbcc/LLVM.", ""]
            elif steps:
                out += ["bcc does not run in the daemon (the loader compiles elsewhere); what remains is the "
                        "interpreter, its modules and the series: see the steps above and "
                        "`bench/out/footprint.json` (`after_churn_anon_by_mapping_kib`).", ""]
    if scrape and not all(v["ok"] for v in scrape["checks"].values()):
        out += ["### Scrape", "",
                "generate_latest formats every sample in Python; the cost per series is flat (see the ms per 1k "
                "column), so a budget miss means the series count, not an algorithmic problem. Proposed: render "
                "each metric family's text once per drain that changed it and cache it between scrapes.", ""]
    if storm and not all(v["ok"] for v in storm["checks"].values()):
        out += ["### Storm", "", "See `bench/out/storm.json`: `expected`, `counted`, `dropped` and "
                "`other_series_for_these_comms` tell whether counts were lost (map full), misattributed or late.", ""]
    if not out:
        out = ["Every budget was met.", ""]
    return out


def write(out_dir):
    hot, storm, scrape, foot = (load(out_dir, n) for n in ("hotpath", "storm", "scrape", "footprint"))
    machine = load(out_dir, "machine") or {}
    images = plots(hot, storm, scrape, foot)
    results = {"hotpath": hot, "storm": storm, "scrape": scrape, "footprint": foot}
    m = machine
    args = m.get("args", {})
    doc = [
        "# errnomon benchmarks",
        "",
        "<!-- Generated by bench/run.py (bench/report.py) from the JSON in bench/out/: edit those, not this file. -->",
        "",
        "Each figure is measured side by side in one run: ratios against a bare run of the same round, counts "
        "against the generators' own counts. Reproduce with `sudo make bench` (installs gcc, bpftrace and "
        "python3-matplotlib if missing, then runs `.venv/bin/python bench/run.py`); results go to `bench/out/*.json`, "
        "this page and `docs/img/bench-*.png`. Run it on a quiet machine: other tracers (another errnomon, "
        "bpftrace) run in every configuration, \"bare\" included, and other load disturbs the rates; the harness "
        "waits up to %.0f s for quiet before each benchmark and records below whether it got it."
        % args.get("quiet_wait", 180),
        "",
        "## Machine and run",
        "",
        table(["", ""], [
            ["Date", m.get("date", "")],
            ["Kernel", "%s (%s)" % (m.get("kernel", ""), m.get("arch", ""))],
            ["OS", m.get("os", "")],
            ["CPU", "%s, %s CPUs (nproc)" % (m.get("cpu_model", ""), m.get("nproc", ""))],
            ["Memory", "%s MiB" % m.get("mem_total_mib", "")],
            ["CPU mitigations", "; ".join("%s: %s" % kv for kv in m.get("cpu_vulnerabilities", {}).items()
                                          if kv[0] in ("spectre_v2", "spec_rstack_overflow", "retbleed")) or "n/a"],
            ["Python", m.get("python", "")],
            ["bcc", m.get("bcc", "")],
            ["bpftrace", m.get("bpftrace", "")],
            ["gcc", m.get("gcc", "")],
            ["prometheus_client", m.get("prometheus_client", "")],
            ["Run", "%s: %s hot-path rounds of %.1f s, %.0f s EPIPE storm, %.0f s churn" % (
                m.get("mode", ""), args.get("rounds", ""), args.get("seconds", 0) or 0,
                args.get("storm_seconds", 0) or 0, args.get("churn_seconds", 0) or 0)],
            ["Load average at start", " ".join(m.get("loadavg_at_start", []))],
        ]),
        "",
        "Each benchmark, when it ran and whether the machine was quiet before it:",
        "",
    ]
    doc += ["- " + quiet_line(n, r) for n, r in results.items()]
    doc += ["", "## Budgets", "", checks_table(results), ""]
    doc += hot_section(hot, images.get("hotpath"))
    doc += storm_section(storm, images.get("storm"))
    doc += scrape_section(scrape, images.get("scrape"))
    doc += foot_section(foot, images.get("footprint"))
    doc += ["## Budgets not met: where the cost goes, and proposed fixes", ""]
    doc += analysis(hot, storm, scrape, foot)
    # make bench-kernels: the hook ladder in the kernel-matrix guests
    doc += ladder_report.section(ladder_report.load(), ladder_report.check_files())
    doc += [""]
    doc += ["## Files", "",
            "- `bench/run.py`: entry point (`--quick` smoke subset, `--out`, `--churn-seconds`, `--only`, "
            "`--docs-only`, `--strict`); `bench/common.py`: daemon, bpftrace, /proc helpers, quiet check",
            "- `bench/hotpath.py` + `bench/pingpong.c`; `bench/storm.py` + `bench/storm.c`; `bench/scrape.py`; "
            "`bench/footprint.py` + `bench/churn.c` + `bench/memprofile.py`; `bench/report.py`: this page",
            "- `tests/bpf/test_bench_smoke.py`: `bench/run.py --quick` in `make test` (no timing assertions; "
            "the storm counts must be exact)", ""]
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write("\n".join(doc))
    print("bench: wrote %s and %d plots in %s" % (os.path.relpath(DOC, REPO), len(images), os.path.relpath(IMG, REPO)))
