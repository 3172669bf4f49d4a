"""docs/BENCHMARKS.md and docs/img/bench-*.png, regenerated from the JSON results in bench/out/.

The prose lives here; every number comes from the JSON. Run by bench/run.py after a full run, or alone:
    .venv/bin/python bench/run.py --docs-only [--out DIR]
"""

import json
import os
import statistics

import conncost
import ladder
import ladder_report
from common import REPO, spread

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


def interval(d, fmt="%.1f", scale=1.0):
    """'median [low, high]' of a common.spread() record."""
    if not d or d.get("median") is None:
        return "n/a"
    return ("%s [%s, %s]" % (fmt, fmt, fmt)) % (d["median"] * scale, d["low"] * scale, d["high"] * scale)


def rounds_quiet_text(rq):
    """'7 of 9 rounds started quiet (qemu-system-x86 running before 2)' from a benchmark's rounds_quiet list."""
    rq = [q for q in (rq or []) if q is not None]
    if not rq:
        return ""
    noisy = sorted({c for q in rq for c in q.get("noisy", [])})
    text = "%d of %d rounds started on a quiet machine" % (sum(1 for q in rq if q["quiet"]), len(rq))
    if noisy:
        text += " (%s running before %d)" % (", ".join(noisy), sum(1 for q in rq if q.get("noisy")))
    return text


def over_floor_ns(res, config, calls):
    """Per-round ns per call a configuration adds over the empty programs (empty-raw) of the same round."""
    return spread([(1 / x - 1 / f) / calls * 1e9 for x, f in zip(res[config]["rates"], res["empty-raw"]["rates"])])


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


# ---- plots -------------------------------------------------------------------------------------------------

def plots(hot, storm, scrape, foot, servers=None):
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
            colors = ["#2b7bba" if c == "errnomon" else "#8cc0e6" if c.startswith("errnomon") else
                      "#e08a8a" if c == "empty-raw" else "#999999" for c in configs]
            ax.bar(range(len(configs)), med, color=colors)
            for i, c in enumerate(configs):
                ax.scatter([i] * len(res[c]["ratios"]), [100 * x for x in res[c]["ratios"]], color="black", s=8,
                           zorder=3)
                ax.text(i, 0, "median\n%.1f%%" % med[i], ha="center", va="bottom", fontsize=9, color="white",
                        transform=ax.get_xaxis_transform())
            if "empty-raw" in res:
                floor = 100 * res["empty-raw"]["median_ratio"]
                ax.axhline(floor, color="red", linestyle="--", linewidth=1,
                           label="floor: empty programs %.1f%%" % floor)
            ax.set_xticks(range(len(configs)))
            ax.set_xticklabels([c.replace("-syscalls-on", "\nsyscalls on") for c in configs], fontsize=8)
            ax.set_title("%s messages" % ("%d B" % size if size < 1024 else "%d KiB" % (size // 1024)))
            ax.legend(loc="upper right", fontsize=8)
        lo = min(100 * min(hot["results"][str(s)][c]["ratios"]) for s in hot["sizes"] for c in configs)
        hi = max(100 * max(hot["results"][str(s)][c]["ratios"]) for s in hot["sizes"] for c in configs)
        axes[0].set_ylim(max(0, lo - 3), max(101, hi + 1))
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

    if servers:
        ws = servers["workloads"]
        configs = [c for c in servers["configs"] if c != "bare"]
        colors = {"empty-raw": "#e08a8a", "errnomon": "#2b7bba", "bpftrace-tp": "#999999"}
        fig, ax = plt.subplots(figsize=(11, 4.2))
        width = 0.8 / len(configs)
        for j, c in enumerate(configs):
            xs = [i + (j - (len(configs) - 1) / 2) * width for i in range(len(ws))]
            med = [100 * servers["results"][w][c]["ratio"]["median"] for w in ws]
            ax.bar(xs, med, width=width, color=colors.get(c, "#cccccc"), label=c)
            for x, w in zip(xs, ws):
                r = servers["results"][w][c]["ratios"]
                ax.scatter([x] * len(r), [100 * v for v in r], color="black", s=6, zorder=3)
        ax.axhline(100, color="black", linewidth=0.8)
        ax.set_xticks(range(len(ws)))
        ax.set_xticklabels(ws, fontsize=8)
        lo = min(100 * v for w in ws for c in configs for v in servers["results"][w][c]["ratios"])
        hi = max(100 * v for w in ws for c in configs for v in servers["results"][w][c]["ratios"])
        ax.set_ylim(max(0, lo - 3), hi + 2)
        ax.set_ylabel("% of the bare requests/s (bar: median; dots: rounds)")
        ax.set_title("Real servers over loopback: requests/s kept under each configuration")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(IMG, "bench-servers.png"), dpi=100)
        plt.close(fig)
        made["servers"] = "img/bench-servers.png"

    cost = storm and storm.get("per_error_cost")
    if cost and cost.get("steps"):
        steps = cost.get("step_order") or list(cost["steps"])
        med = [cost["steps"][s]["program_ns"]["median"] or 0 for s in steps]
        lo = [m - (cost["steps"][s]["program_ns"]["low"] or 0) for m, s in zip(med, steps)]
        hi = [(cost["steps"][s]["program_ns"]["high"] or 0) - m for m, s in zip(med, steps)]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.barh(range(len(steps)), med, xerr=[lo, hi], color="#2b7bba", capsize=3)
        ax.set_yticks(range(len(steps)))
        ax.set_yticklabels(steps)
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("ns per error in the send program (median, interval over rounds)")
        ax.set_title("Per-error cost of each step (EPIPE storm, bpf_prog_info run time)")
        fig.tight_layout()
        fig.savefig(os.path.join(IMG, "bench-storm-cost.png"), dpi=100)
        plt.close(fig)
        made["storm_cost"] = "img/bench-storm-cost.png"

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
    noisy = ", ".join("%s (pid %d)" % (p["comm"], p["pid"]) for p in q.get("noisy_processes", [])) or "none"
    line = ("%s: run %s (%s mode, %.0f s); %s before it (host busy %.2f CPUs; other tracing BPF holders: %s; "
            "virtual machines running: %s)" % (
                name, run.get("date", "?"), run.get("mode", "?"), r.get("duration_s", 0),
                "quiet" if q["quiet"] else "**NOT quiet**", q["host_busy_cpus"], others, noisy))
    rounds = [label + rounds_quiet_text(x) for label, x in (
        ("", r.get("rounds_quiet")), ("breakdown: ", r.get("breakdown", {}).get("rounds_quiet")),
        ("per-error cost: ", (r.get("per_error_cost") or {}).get("rounds_quiet"))) if rounds_quiet_text(x)]
    if rounds:
        line += "; " + "; ".join(rounds)
    return line


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
        "`bare`; `empty-raw` (the floor: a raw tracepoint program that returns at once on each tracepoint errnomon "
        "attaches, loaded by bcc in the benchmark process: what the kernel's dispatch to any program there costs); "
        "`errnomon` (the daemon, `.venv/bin/errnomon --config.file=config.example.yaml`, started and "
        "serving /metrics before the run, stopped after); `bpftrace-tp` (the same error counting on "
        "`sock:sock_send_length`/`sock_recv_length` with `/args->ret < 0/`); `bpftrace-syscalls` (`ret < 0` on "
        "`sys_exit_` sendto, recvfrom, sendmsg, recvmsg, sendmmsg, recvmmsg, write, read, writev, readv); and, when "
        "this errnomon has the setting, `errnomon-syscalls-on` (the daemon with the same config plus "
        "`kernel.syscall_tracepoints: true`, the opt-in that counts connect and accept errors). "
        "%d rounds; each round runs every configuration once, in an order rotated by one each round, with both "
        "message sizes back to back, after %g s of settling. A run during which the whole host was busier than %.2f CPUs "
        "(another process ran) is repeated, at most %d times. A ratio is a configuration's rate over the bare rate "
        "of the same round; the figure is the median ratio. *Added ns per call* = (1/ratio - 1) / bare rate / 4. "
        "*Over the floor* is computed round by round, (1/rate - 1/floor rate) / 4, and given as the median with "
        "a distribution-free interval for it in brackets (order statistics of the rounds: 96%% with 9 rounds, 98%% "
        "with 7; below 6 rounds, the whole range)."
        % (hot["cpu_pinned"], hot["seconds_per_run"], hot["rounds"], hot.get("settle_s", 0), hot.get("busy_limit", 0),
           hot.get("repeats", 0)),
        "",
    ]
    for size in hot["sizes"]:
        res = hot["results"][str(size)]
        rows = []
        for c in hot["configs"]:
            r = res[c]
            floor = ("%s ns" % interval(over_floor_ns(res, c, hot["calls_per_iteration"]), "%+.1f")
                     if "empty-raw" in res and c not in ("bare", "empty-raw") else "")
            rows.append(["`%s`" % c, "{:,.0f}".format(r["median_rate"]), pct(r["median_ratio"], 2),
                         pct(1 - r["median_ratio"], 2) if c != "bare" else "",
                         "%.0f" % r["ns_per_call"] if c != "bare" else "", floor,
                         ", ".join("%.3f" % x for x in r["ratios"]) if c != "bare" else ""])
        out += ["**%s messages** (medians of rates and of ratios are taken separately)" % size_name(size), "",
                table(["Configuration", "Median iterations/s", "Kept (median ratio)", "Lost",
                       "Added ns per call", "Over the floor per call", "Ratios per round"], rows), ""]
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
                "benchmark process itself, built with the flags the loader gives them on this kernel: `empty-raw` "
                "is the floor above; `errnomon-send/recv-only` is errnomon's two send/recv programs alone; "
                "`errnomon-no-syscalls` is every default program (what the daemon attaches); "
                "`errnomon-all-in-process` adds the opt-in `syscalls:` tracepoints (connect, accept)."
                % bd["rounds"], "",
                table(header, rows), ""]
    return out


HELD = "errnomon-held"  # bench/servers.py: the daemon stopped with SIGSTOP, its programs attached


def servers_section(sv, img):
    out = ["## 2. Real servers over loopback", ""]
    if not sv:
        return out + ["Not run.", ""]
    v = sv.get("versions", {})
    n = sv["redis_requests_per_test"]
    out += [
        "`bench/servers.py`: %s and %s started once, each pinned to CPU %d (`taskset`); the load generators pinned "
        "to CPU %d, so server and client never share a core. `nginx`: one worker, logs off, `sendfile on`, a %d-byte "
        "static file; %s with one thread and %d keep-alive connections for %g s per run. `redis`: no persistence; "
        "%s with %d clients, SET then GET, pipelining off (`-P 1`, %s requests per test) and on (`-P 16`, %s "
        "requests per test), counts calibrated once to last about %g s. Traffic to 127.0.0.1 only (ports %s). "
        "Configurations: `bare`; `empty-raw` (the floor, as in the hot path); `errnomon` (the daemon, shipped "
        "config); `errnomon-held` (the same daemon stopped with SIGSTOP once started: its programs attached and "
        "counting, its process not running, so the hooks without the daemon's own drains and polls; in runs that "
        "have it); `bpftrace-tp` (the same error counting on the same send/recv tracepoints). %d rounds, each "
        "configuration once per round in an order rotated by one, every workload back to back in its slot. Each "
        "figure is the median of per-round ratios to the same round's bare rate, with its interval in brackets "
        "(as in the hot path); *errnomon - floor* is errnomon's ratio minus the floor's, round by round, in points "
        "of the bare rate (negative: errnomon lost more)."
        % (v.get("nginx", "nginx"), v.get("redis", "redis"), sv["server_cpu"], sv["client_cpu"], sv["body_bytes"],
           v.get("wrk", "wrk"), sv["connections"], sv["seconds_per_run"], "redis-benchmark", sv["connections"],
           "{:,}".format(n.get("1", 0)), "{:,}".format(n.get("16", 0)), sv["seconds_per_run"],
           ", ".join(str(p) for p in sv["ports"].values()), sv["rounds"]), ""]
    rows = []
    held = HELD in sv["configs"]
    for w in sv["workloads"]:
        r = sv["results"][w]
        rows.append(["`%s`" % w, "{:,.0f}".format(r["bare"]["median_rate"]),
                     interval(r["empty-raw"]["ratio"], "%.1f%%", 100), interval(r["errnomon"]["ratio"], "%.1f%%", 100)]
                    + ([interval(r[HELD]["ratio"], "%.1f%%", 100)] if held else [])
                    + [interval(r["bpftrace-tp"]["ratio"], "%.1f%%", 100),
                       interval(r["errnomon"]["minus_floor"], "%+.1f", 100)]
                    + ([interval(r[HELD]["minus_floor"], "%+.1f", 100),
                        interval(r["errnomon"]["minus_held"], "%+.1f", 100)] if held else [])
                    + [interval(r["errnomon"]["ahead_of_bpftrace"], "%+.1f%%", 100)])
    out += [table(["Workload", "Bare requests/s (median)", "empty-raw kept", "errnomon kept"]
                  + (["errnomon-held kept"] if held else []) + ["bpftrace-tp kept", "errnomon - floor (points)"]
                  + (["held - floor (points)", "errnomon - held (points)"] if held else [])
                  + ["errnomon over bpftrace-tp"], rows), ""]
    if img:
        out += ["![servers](%s)" % img, ""]
    if sv.get("runs"):
        dist = sv.get("rounds_disturbed", [])
        out += ["Runs during which a virtual machine (qemu) was running: %d of %d. Rounds run: %d; with a virtual "
                "machine running during them: %d; counted in the figures above: %d%s." % (
                    sv["runs_with_noisy_processes"], sv["runs"], len(dist), sum(1 for d in dist if d), sv["rounds"],
                    " (too few undisturbed rounds: every round is counted, disturbed ones included)"
                    if sum(1 for d in dist if d) and sv["rounds"] == len(dist) else
                    " (the undisturbed ones)" if sum(1 for d in dist if d) else ""), ""]
    calls = sv.get("calls") or {}
    if calls:
        rows = []
        for name, c in calls.items():
            for role in ("server", "client"):
                x = c[role]
                rows.append(["`%s`" % name, "`%s`" % x["comm"], "%.2f" % x["socket_calls_per_request"],
                             "%.3f" % x["eagain_per_request"], "%.3f" % x["other_errors_per_request"],
                             "%.2f" % x["syscalls_per_request"],
                             ", ".join("%s %s" % (k, "{:,}".format(val)) for k, val in x["by_outcome"].items())])
        out += ["**Socket calls per request**, counted once with nothing timed (`bench/servers.py` "
                "`calls_program()`: bpftrace on `sock_send_length`/`sock_recv_length` by comm and outcome, and on "
                "`raw_syscalls:sys_enter` by comm) while each workload ran once; per request served (redis: SET and "
                "GET together). Every socket call runs a program on those tracepoints; only a negative return takes "
                "errnomon's error path, and EAGAIN is dropped there after one settings lookup.", "",
                table(["Workload", "Process", "Socket calls", "EAGAIN", "Other errors", "System calls",
                       "All calls by outcome"], rows), ""]
    return out


def storm_section(storm, img, cost_img=None):
    out = ["## 3. Error storm", ""]
    if not storm:
        return out + ["Not run.", ""]
    m0 = storm["modes"][list(storm["modes"])[0]]
    out += [
        "`bench/storm.c` (gcc -O2): %d processes, each named by prctl(PR_SET_NAME) (`stormE<run>_<i>`), count "
        "their own errors. `epipe`: send of 1 byte with MSG_NOSIGNAL on a loopback TCP connection the process shut "
        "down itself (SHUT_WR): every send fails with EPIPE at once, the fastest socket error this machine makes. "
        "`refused`: connect() to a loopback port that is bound but not listening: ECONNREFUSED. Each mode runs "
        "once without errnomon (the rate the generator reaches alone) and once with it; the EPIPE storm with two "
        "daemons in turn against the same bare run: error events on (`epipe`: the shipped config, events.rate "
        "1000, with events.keep raised so that the whole storm's events stay in memory to be counted) and off "
        "(`epipe_events_off`: `events: {enabled: false}`). errnomon's "
        "`errnomon_socket_errors_total{errno,op}` for those comms is scraped after the storm until it equals the "
        "generators' counts, then once more two drain intervals later (it must not move). The daemon's CPU is "
        "utime+stime from /proc/<pid>/stat over the storm window." % m0["processes"], "",
    ]
    rows = []
    for mode, r in storm["modes"].items():
        events = r.get("events")
        rows.append(["`%s` (%s, op=%s%s)" % (mode, r["errno"], r["op"],
                                             "; events %s" % events if events in ("on", "off") else ""),
                     "%g s" % r["seconds"],
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
    out += events_accounting(storm)
    if img:
        out += ["![storm](%s)" % img, ""]
    e = storm["modes"].get("epipe")
    if e and e["rate_kept_under_errnomon"]:
        ns = storm_ns_per_error(e, e["with_errnomon"], e["bare"])
        out += ["Counting costs the erring process, not the daemon: at %s errors/s the generators kept %s of their "
                "rate (from this one pair of runs, about %.0f ns of kernel time per counted error; the breakdown "
                "below measures it in rounds), paid by the erring thread itself in the send program, while the "
                "daemon only drains a handful of map entries twice a second. A real application does not fail "
                "millions of times a second; in the ping-pong above, where calls succeed, none of this runs."
                % ("{:,}".format(e["with_errnomon"]["rate_per_s"]), pct(e["rate_kept_under_errnomon"]), ns), ""]
    out += cost_section(storm.get("per_error_cost"), cost_img)
    return out


def storm_ns_per_error(mode, run, than):
    """Kernel time per error of one storm run over another's, from their rates (the bare run's CPUs busy)."""
    cpus = mode["bare"]["host_busy_cpus"]
    return (cpus / run["rate_per_s"] - cpus / than["rate_per_s"]) * 1e9


def events_accounting(storm):
    """The events-on storm's events: kept by the daemon for the storm's comms + refused in the kernel == errors."""
    rows = []
    for mode, r in storm["modes"].items():
        a = r.get("events_accounted")
        if not a:
            continue
        rows.append(["`%s`" % mode, "{:,}".format(a["generated"]), "{:,}".format(a["kept"]),
                     "{:,}".format(a["dropped"].get("rate_limit", 0)), "{:,}".format(a["dropped"].get("ring_full", 0)),
                     "{:,}".format(a["kept"] + a["dropped_total"]), ok(a["ok"]), "{:,}".format(a["kept_other"])])
    if not rows:
        return []
    off = storm["modes"].get("epipe_events_off")
    on = storm["modes"].get("epipe")
    out = ["With events on, every error of the storm is an event kept or an event refused: the events the daemon "
           "kept for the generators' comms (`GET /errors?after=<seq before the storm>`), and the growth of "
           "`errnomon_events_dropped_total{reason}` over the storm and the drain wait (the kernel counts every "
           "event it refused, whoever's: events of other processes in the window are in the last column, and "
           "any of theirs refused would show as a surplus).", "",
           table(["Storm", "Errors generated", "Events kept (storm's comms)", "Refused: rate_limit",
                  "Refused: ring_full", "Kept + refused", "Every event accounted for",
                  "Other processes' events kept"], rows), ""]
    if on and off and on["rate_kept_under_errnomon"] and off["rate_kept_under_errnomon"]:
        ns = storm_ns_per_error(on, on["with_errnomon"], off["with_errnomon"])
        out += ["Events on against off, in this one pair of runs: the generators kept %s of the bare rate with "
                "events on and %s with them off (about %+.0f ns of kernel time per error for the events, nearly "
                "all of it the rate limit's refusal); the daemon used %.2f%% and %.2f%% of a core. The breakdown "
                "below measures the event's cost in rounds (`error event`)."
                % (pct(on["rate_kept_under_errnomon"]), pct(off["rate_kept_under_errnomon"]), ns,
                   100 * on["daemon_cpu_storm_fraction"], 100 * off["daemon_cpu_storm_fraction"]), ""]
    return out


def cost_section(cost, img):
    if not cost:
        return []
    out = ["### Per-error cost, step by step", "",
           "The EPIPE storm (%d processes, one per CPU) under errnomon's programs loaded by bcc in the benchmark "
           "process from a bench-only copy of `bpf/errnomon.bpf.c` (`bench/storm.py` `guarded_source()`: made at run "
           "time, each step of the send program's error path, `io_error`, put under `#ifdef`), compiled whole "
           "(`errnomon`), with one step compiled out (`no ...`), with all of them out (`filter only`: the errno "
           "filter, the family check and the zeroed key remain), and beside the empty programs and bare. %d rounds, "
           "configurations rotated. Two measures per configuration and round: host CPU time per error from the "
           "generators' rate (%g s: everything an error costs, the tracepoint's dispatch and cache effects included; "
           "noisy), and the send program's own `run_time_ns / run_cnt` from `bpf_prog_info` in a second run of %g s "
           "with the kernel's run-time statistics on (`BPF_ENABLE_STATS`: on while the benchmark holds its "
           "descriptor, off when it closes it; kernel.bpf_stats_enabled is never written). The statistics add "
           "their own clock reads to every run: compare the rows with each other and with `empty-raw`, not with "
           "zero."
           % (cost["processes"], cost["rounds"], cost["seconds"], cost["stats_seconds"]), ""]
    rows = []
    for c in cost["configs"]:
        r = cost["results"][c]
        rows.append(["`%s`" % c, "{:,.0f}".format(median_of(r["rates"])),
                     interval(r.get("program_ns"), "%.1f") if "program_ns" in r else "",
                     interval(r["host_ns_over_bare"], "%+.0f") if c != "bare" else ""])
    out += [table(["Configuration", "Errors/s (median)", "Send program ns per run", "Host ns per error over bare"],
                  rows), ""]
    rows = [[step, "`-D%s`" % cost["steps"][step]["flag"], interval(cost["steps"][step]["program_ns"], "%+.1f"),
             interval(cost["steps"][step]["host_ns"], "%+.0f")] for step in cost.get("step_order") or cost["steps"]]
    out += ["What each step costs (errnomon minus errnomon without the step, round by round):", "",
            table(["Step", "Compiled out by", "Program ns per error", "Host ns per error"], rows), ""]
    if img:
        out += ["![per-error cost](%s)" % img, ""]
    return out


def http_loop_seconds():
    """How often the daemon's HTTP event loop wakes when nothing happens (monitor/web.py)."""
    from common import monitor_module
    return monitor_module("web").LOOP_TIMEOUT


def median_of(values):
    from common import median
    return median(values) or 0


def scrape_section(scrape, img):
    out = ["## 4. Scrape", ""]
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
        level = scrape.get("gzip_level")
        out += ["Compression, measured on the 10,000-series page alone: `gzip.compress()` at level 9 (what "
                "prometheus_client uses) takes %.1f ms (%s bytes), level 6 %.1f ms (%s bytes), level 1 %.1f ms (%s "
                "bytes). %s"
                % (g["9"]["ms"], "{:,}".format(g["9"]["bytes"]), g["6"]["ms"], "{:,}".format(g["6"]["bytes"]),
                   g["1"]["ms"], "{:,}".format(g["1"]["bytes"]),
                   "errnomon gzips at level %d (`monitor/web.py` GZIP_LEVEL; the gzipped HTTP GET above is at that "
                   "level): the gzipped 10,000-series scrape costs %.1f ms more than the plain one." % (
                       level, r10["http_get_gzip_median_ms"] - r10["http_get_median_ms"])
                   if level else ""), ""]
    return out


def foot_section(foot, img):
    out = ["## 5. Footprint", ""]
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
    idle = foot.get("idle")
    if idle:
        out += ["Idle, before the churn (nothing counted, nobody scraping, %.0f s; `/proc/<pid>/task/*/schedstat` "
                "and voluntary context switches): the daemon used %.2f%% of one core and woke %.1f times a second, "
                "its main thread %.2f%% and %.1f times (the drain loop sleeps while nothing is counted: what wakes "
                "it is the listener poll every 5 s; the HTTP server's loop looks every %d s)."
                % (idle["seconds"], 100 * idle["cpu_fraction"], idle["wakeups_per_s"],
                   100 * idle["main_cpu_fraction"], idle["main_wakeups_per_s"], http_loop_seconds()), ""]
    wake = foot.get("wake_cost")
    if wake:
        out += ["What this machine charges any thread for a wake-up, doing nothing else (`bench/wake.c`: "
                "`nanosleep`, then `CLOCK_THREAD_CPUTIME_ID`; median): %s; a Python thread returning from "
                "`select()` after %g ms, %.0f us. The longer the sleep, the more a wake-up costs on this machine "
                "(see its memory monitors in the machine table)."
                % (", ".join("%.0f us after %g ms" % (w["cpu_us_median"], w["sleep_us"] / 1000) for w in wake["c"]),
                   wake["python_select"]["sleep_us"] / 1000, wake["python_select"]["cpu_us_median"])]
        if idle and idle["main_wakeups_per_s"]:
            out[-1] += " The idle daemon's main thread spent %.1f ms of CPU per wake-up (its CPU over its wake-ups above)" % (
                1000 * idle["main_cpu_fraction"] / idle["main_wakeups_per_s"])
            if "listen_poll_hot_ms" in foot:
                out[-1] += (": the listener poll, done cold after a 5 s sleep, against %.1f ms for the same poll "
                            "repeated back to back (`listen_poll_hot_ms`)" % foot["listen_poll_hot_ms"])
            out[-1] += "."
        out += [""]
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


def busy_section(busy):
    out = ["## 6. Busy node: idle cost against the host's processes and network namespaces", ""]
    if not busy:
        return out + ["Not run.", ""]
    out += ["Each configuration gets a fresh daemon (the shipped config), %.0f s to settle (its start-up scan and "
            "first polls), then %.0f s of idle measurement: nothing counted, nobody scraping. CPU from the "
            "process's CPU-time clock (all threads, including the short-lived one that reads other namespaces), "
            "wake-ups from voluntary context switches. %d rounds, the configurations alternating; medians. The "
            "crowds are `bench/sleepers.c`: processes in `pause()`, or one process per network namespace holding "
            "a listener, as a node's pods do." % (busy["settle"], busy["seconds"], busy["rounds"]), ""]
    rows = [[r["config"], "%.3f%%" % (100 * r["cpu_fraction_median"]), "%+.3f" % (100 * r["over_idle_host"]),
             "%.2f" % r["wakeups_per_s_median"]] for r in busy["table"]]
    out += [table(["Host", "Daemon CPU (of a core)", "Over the idle host (points)", "Wake-ups/s"], rows), ""]
    out += ["Namespaces opened after the daemon started hold listeners the programs follow in the kernel: their "
            "drops are read by one BPF program run per 12 listeners each poll, and nothing enters them. Namespaces "
            "opened before it hold listeners older than errnomon: found once at start-up with sock_diag and handed "
            "to the programs by a BPF tcp iterator run once in each namespace, then read like the others (on a "
            "kernel or bcc without the tcp iterator they are read every 5 s with a sock_diag socket kept in each "
            "namespace, about 0.2 ms a namespace, until they close).", ""]
    return out


def memory_section(mem):
    out = ["## 7. Memory against series", ""]
    if not mem:
        return out + ["Not run.", ""]
    runs = [r for r in mem["runs"] if "failed" not in r]
    out += ["`bench/memory.py`: the daemon (shipped config, `series.budget` raised above the peers) in its own memory "
            "cgroup with a 1 GiB limit; N refused connects from N loopback peers, which make 2N series "
            "(errnomon_connect_failures_total and errnomon_tcp_resets_received_total in SYN_SENT, one per peer); then "
            "%d scrapes. RssAnon from `/proc/<pid>/status`; the cgroup's usage and peak include the page cache it "
            "read (Python, bcc's LLVM) and the BPF maps the loader created (kernel memory, charged to the cgroup)."
            % (len(runs[0]["scrapes"]) if runs else 0), ""]
    if runs:
        def span(values, fmt="%.1f"):
            lo, hi = min(values), max(values)
            return (fmt % lo) if lo == hi else (fmt + "-" + fmt) % (lo, hi)
        head = [""] + ["%s series" % format(r["series"], ",") for r in runs]
        rows = [["RssAnon at ready"] + ["%.1f MiB" % r["ready"]["rss_anon_mib"] for r in runs],
                ["RssAnon counted, before a scrape"] + ["%.1f MiB" % r["counted"]["rss_anon_mib"] for r in runs],
                ["RssAnon after each scrape"] + [span([s["rss_anon_mib"] for s in r["scrapes"]]) + " MiB" for r in runs],
                ["cgroup usage at ready"] + ["%.1f MiB" % r["ready"]["usage_mib"] for r in runs],
                ["cgroup usage after each scrape"] + [span([s["usage_mib"] for s in r["scrapes"]]) + " MiB" for r in runs],
                ["cgroup peak (start-up: the compile)"] + ["%.1f MiB" % r["ready"]["peak_mib"] for r in runs],
                ["scrape"] + ["%.1f MB, %s s" % (r["scrapes"][0]["bytes"] / 1e6, span([s["seconds"] for s in r["scrapes"]],
                                                                                     "%.2f")) for r in runs],
                ["every refused connect counted"] + [("yes (%d)" % r["refused"]) if r["exact"] else "**no**"
                                                     for r in runs]]
        out += [table(head, rows), ""]
        last, first = runs[-1], runs[0]
        per_series = 1024 * (last["counted"]["rss_anon_mib"] - last["ready"]["rss_anon_mib"]) / last["series"]
        scrape_extra = 1024 * (max(s["rss_anon_mib"] for s in last["scrapes"]) - last["counted"]["rss_anon_mib"]) \
            / last["series"]
        out += ["The bound, from the largest run: **RssAnon = %.0f MiB + %.2f KiB per series kept, plus up to %.2f KiB "
                "per series while a scrape is written** (the largest metric's rows copied, one slice of 1,000 samples, "
                "a 64 KiB piece of body; past 1 MiB unread, waitress spools to a temporary file). Series are at most "
                "`series.budget` x 1.1 per metric, nine metrics, and every label is bounded in length (comm 16 bytes, "
                "an address, a port, a unit or pod name): the budget bounds bytes, not only series. The kernel's "
                "share is fixed at start: 136 bytes per `kernel.max_sockets` entry (8.5 MiB at 65,536) and the "
                "counting maps." % (first["ready"]["rss_anon_mib"], per_series, scrape_extra), ""]
    small = mem.get("small_limit")
    if small:
        out += ["Start-up under a %s limit: %s (cgroup peak %.1f MiB)." % (
            small["limit"], ("**failed**, " + small["failed"]) if "failed" in small else "served",
            small.get("peak_mib") or small.get("ready", {}).get("peak_mib", 0)), ""]
    out += ["The start-up peak is bcc's compile: the loader's child runs clang/LLVM in process (70 MiB of anonymous "
            "memory for errnomon's programs compiled alone, 54 MiB for an empty program: clang and the headers), "
            "touching 84 MiB of libLLVM and libclang code throughout. A 64 MiB limit kills it; the daemon's own "
            "steady state is far under that peak. Compiling ahead of time (a cached object loaded without bcc) "
            "would remove it; not done.", ""]
    return out


CHECK_LABELS = {
    "exact_counts_epipe": "EPIPE storm counted exactly",
    "daemon_cpu_epipe": "daemon CPU < 5% of a core (EPIPE storm)",
    "events_accounted_epipe": "every error event of the EPIPE storm kept or counted as dropped",
    "exact_counts_epipe_events_off": "EPIPE storm counted exactly, events off",
    "daemon_cpu_epipe_events_off": "daemon CPU < 5% of a core (EPIPE storm, events off)",
    "exact_counts_refused": "ECONNREFUSED storm counted exactly",
    "daemon_cpu_refused": "daemon CPU < 5% of a core (ECONNREFUSED storm)",
    "scrape_10k_under_100ms": "10,000 series served in < 100 ms",
    "scrape_gzip_10k_under_100ms": "10,000 series served gzipped in < 100 ms",
    "scrape_linear": "cost grows linearly",
    "startup_under_3s": "start-up to READY=1 < 3 s",
    "anon_after_startup_under_40MiB": "RssAnon after start-up < 40 MiB",
    "anon_peak_under_40MiB": "RssAnon during the churn < 40 MiB",
    "anon_flat_across_churn": "RssAnon flat across the churn",
    "exact": "every refused connect counted at 20,000 and 60,000 series",
    "startup_peak_within_30pct": "start-up peak within 30% of the steady state",
    "alive_under_64M": "starts and serves under a 64 MiB memory limit",
}
AREAS = (("hotpath", "Hot path"), ("servers", "Servers"), ("storm", "Storm"), ("scrape", "Scrape"),
         ("footprint", "Footprint"), ("busy", "Busy node"), ("memory", "Memory"))


def check_label(bench, key):
    if key in CHECK_LABELS:
        return CHECK_LABELS[key]
    for prefix, what in (("errnomon_within_noise_of_floor_", "errnomon's cost within noise of the floor's, %s"),
                         ("errnomon_ahead_of_", "errnomon ahead of %s")):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if prefix == "errnomon_ahead_of_" and bench == "hotpath":
                other, _, size = rest.rpartition("_")
                rest = "%s, %s" % (other, size)
            elif prefix == "errnomon_ahead_of_":
                rest = "bpftrace-tp, " + rest[len("bpftrace_"):]
            return what % rest
    return key


def check_value(bench, key, v):
    value = v["value"]
    if value is None:
        return "n/a"
    if isinstance(value, str):  # already said in words
        return value
    if key.startswith("errnomon_within_noise_of_floor_"):
        if bench == "hotpath":
            return "%+.1f ns per call [%+.1f, %+.1f]" % (value, v["low"], v["high"])
        return "%+.2f points [%+.2f, %+.2f]" % (100 * value, 100 * v["low"], 100 * v["high"])
    if key.startswith("errnomon_ahead_of_"):
        return "%+.2f%% [%+.2f%%, %+.2f%%]" % (100 * value, 100 * v["low"], 100 * v["high"])
    if key.startswith("daemon_cpu"):
        return "%.2f%% of a core" % (100 * value)
    if key == "anon_flat_across_churn":
        return "%+.1f MiB" % (value / 1024)
    if key.startswith("anon_"):
        return mib(value)
    if key.startswith("startup"):
        return "%.2f s" % value
    if key.startswith("scrape_") and isinstance(value, (int, float)):
        return "%.1f ms" % value
    return value


def checks_table(results):
    rows = []
    for bench, area in AREAS:
        r = results.get(bench)
        if not r:
            continue
        checks = r.get("checks", {})
        # side-by-side checks by message size or workload as measured, the floor's before bpftrace's
        cases = [size_name(x).replace(" ", "") for x in r.get("sizes", [])] + list(r.get("workloads", []))
        rest = sorted((k for k in checks if k not in CHECK_LABELS), key=lambda k: (
            min([i for i, c in enumerate(cases) if k.endswith("_" + c)] or [len(cases)]),
            0 if "within_noise" in k else 1, k))
        order = [k for k in CHECK_LABELS if k in checks] + rest
        for key in order:
            v = checks[key]
            met = ok(v["ok"])
            if not v["ok"] and v.get("low") is not None and v.get("high") is not None and v["low"] <= 0 <= v["high"]:
                met = "**not resolved** (interval spans 0)"
            rows.append([area, check_label(bench, key), v["budget"], check_value(bench, key, v), met])
    return table(["Area", "Budget", "Limit", "Measured (median [interval])", "Met"], rows)


def analysis(hot, storm, scrape, foot, servers=None):
    """Where the cost goes: the hot path against the floor, the servers, and paragraphs for every budget not met."""
    out = []
    if hot:
        out += ["### Hot path: errnomon against the floor", ""]
        bd = hot.get("breakdown", {}).get("results", {})
        calls = hot["calls_per_iteration"]
        for size in hot["sizes"]:
            res = hot["results"][str(size)]
            if "empty-raw" not in res:
                continue
            d = res["errnomon"]["over_floor"]
            met = hot["checks"].get("errnomon_within_noise_of_floor_%s" % size_name(size).replace(" ", ""), {})
            line = ("- %s: a bare iteration takes %.2f us (4 calls). The empty programs cost %.0f ns per call "
                    "(%s kept); errnomon adds %s ns per call over them, %s; bpftrace on the same tracepoints %s ns"
                    % (size_name(size), 1e6 / res["bare"]["median_rate"], res["empty-raw"]["ns_per_call"],
                       pct(res["empty-raw"]["median_ratio"], 2), interval(d, "%+.1f"),
                       "indistinguishable from the floor at %d rounds" % hot["rounds"] if met.get("ok") else
                       "**measurably above the floor**", interval(over_floor_ns(res, "bpftrace-tp", calls), "%+.1f")))
            if "errnomon-syscalls-on" in res:
                line += ", errnomon with the opt-in syscall tracepoints %s ns" % interval(
                    over_floor_ns(res, "errnomon-syscalls-on", calls), "%+.1f")
            out.append(line + ".")
        out.append("")
        if bd:
            small, big = str(hot["sizes"][0]), str(hot["sizes"][-1])
            sys_ns = {s: bd[s]["errnomon-all-in-process"]["ns_per_call"] - bd[s]["errnomon-no-syscalls"]["ns_per_call"]
                      for s in (small, big)}
            out += [
                "On a call that succeeds errnomon's send/recv programs load the return value, test its sign and "
                "branch to `return 0` (`bpftool prog dump xlated`: five instructions before the branch), so what "
                "errnomon costs there is the kernel's dispatch to a program, which the floor measures. In-process (table "
                "above), errnomon's two send/recv programs alone measure %+.0f ns per call against the empty programs "
                "at %s and %+.0f ns at %s; the opt-in `syscalls:` tracepoints add %.0f and %.0f ns per call: any "
                "syscall tracepoint sets SYSCALL_WORK_SYSCALL_TRACEPOINT on every task, so every system call on the "
                "host takes the traced path, which is why `kernel.syscall_tracepoints` is off by default."
                % (bd[small]["errnomon-send/recv-only"]["ns_per_call"] - bd[small]["empty-raw"]["ns_per_call"],
                   size_name(int(small)),
                   bd[big]["errnomon-send/recv-only"]["ns_per_call"] - bd[big]["empty-raw"]["ns_per_call"],
                   size_name(int(big)), sys_ns[small], sys_ns[big]), ""]
        out += ["The old budgets (97% of the bare 64 B rate, 99.5% at 16 KiB) are withdrawn: they sat at or below "
                "the floor, the cost of any program on those two tracepoints on this kind of VM (the CPU mitigations "
                "in the table above make every indirect call and return dear). The budget is now relative: within "
                "noise of the floor, and ahead of bpftrace.", ""]
    cost = storm and storm.get("per_error_cost")
    if cost and cost.get("steps"):
        res = cost["results"]
        steps = sorted(cost["steps"].items(), key=lambda kv: -(kv[1]["program_ns"]["median"] or 0))
        full = res["errnomon"]["program_ns"]["median"]
        empty = res["empty-raw"]["program_ns"]["median"]
        only = res["filter only"]["program_ns"]["median"]
        out += ["### Per-error cost", "",
                "errnomon's send program spends %.1f ns per EPIPE it counts, against %.1f ns for the empty program "
                "under the same statistics: %.1f ns of its own work per error. The steps, largest first (the send "
                "program's time per error, median [interval]; then the host CPU per error, noisier): %s. With every step compiled out, %.1f ns "
                "remain (the errno filter, the family read, zeroing the key)."
                % (full, empty, full - empty, "; ".join(
                    "%s %s ns (host %s ns)" % (step, interval(v["program_ns"], "%+.1f"), interval(v["host_ns"], "%+.0f"))
                    for step, v in steps), only), ""]
        out += ["What each step is for, and whether it can go: the map update is the count itself (a hash lookup "
                "of the 56-byte key and an atomic add; a per-CPU map would drop the atomic but makes every drain "
                "sum over CPUs); comm and cgroup label the process that saw the error, and the owner's copies "
                "can be stale (exec, prctl, cgroup moves); the owner lookup gives the remote address and service "
                "port; the sendfile check keeps a failing sendfile chunk after bytes were sent from being counted; "
                "the SIGPIPE lookup runs for EPIPE only; the error event (events on, as shipped) is, for nearly "
                "every error of a storm, the rate limit refusing it (the settings lookup, the clock, the token "
                "bucket, a per-CPU drop count), and `events: {enabled: false}` leaves one settings lookup of it. "
                "No step is dead weight on this path. The one redundant "
                "copy is gone: `io_error` took the owner's tgid, cgroup and comm into the key and "
                "`key_from_current` overwrote all three right after; it now takes only the peer from the owner "
                "(`peer_from_owner`: port, family, remote), two 8-byte and one 16-byte copy fewer per error.", ""]
    if servers:
        unmet = [w for w in servers["workloads"]
                 if not servers["checks"]["errnomon_within_noise_of_floor_%s" % w]["ok"]]
        behind = [w for w in servers["workloads"] if not servers["checks"]["errnomon_ahead_of_bpftrace_%s" % w]["ok"]]
        out += ["### Real servers", ""]
        out += ["- errnomon's loss is within noise of the floor's in %d of %d workloads%s." % (
            len(servers["workloads"]) - len(unmet), len(servers["workloads"]),
            "; not in %s" % ", ".join("`%s` (%s points)" % (w, interval(
                servers["results"][w]["errnomon"]["minus_floor"], "%+.2f", 100)) for w in unmet) if unmet else "")]
        def resolved(d):
            return "" if d["low"] > 0 or d["high"] < 0 else ", the interval spans 0: not resolved"
        out += ["- errnomon keeps more than bpftrace (median of per-round ratios) in %d of %d workloads%s." % (
            len(servers["workloads"]) - len(behind), len(servers["workloads"]),
            "; not in %s" % ", ".join("`%s` (%s%s)" % (w, interval(
                servers["results"][w]["errnomon"]["ahead_of_bpftrace"], "%+.2f%%", 100),
                resolved(servers["results"][w]["errnomon"]["ahead_of_bpftrace"])) for w in behind)
            if behind else "")]
        if HELD in servers["configs"]:
            out += ["- errnomon's loss over the floor, split (points of the bare rate, median [interval]): the hooks "
                    "alone (`errnomon-held` - floor) and the running daemon beyond them (`errnomon` - "
                    "`errnomon-held`): %s." % "; ".join(
                        "`%s` %s and %s" % (w, interval(servers["results"][w][HELD]["minus_floor"], "%+.2f", 100),
                                            interval(servers["results"][w]["errnomon"]["minus_held"], "%+.2f", 100))
                        for w in servers["workloads"])]
            hooks = {w: spread([h / b - 1 for h, b in zip(servers["results"][w][HELD]["rates"],
                                                          servers["results"][w]["bpftrace-tp"]["rates"])])
                     for w in servers["workloads"]}
            out += ["- The hooks alone against bpftrace (`errnomon-held` over `bpftrace-tp`, median of per-round "
                    "ratios [interval]): %s. bpftrace's process sleeps until it exits and prints its maps once; "
                    "errnomon's daemon drains and exports while it runs, and it counts the workloads' connection "
                    "closes (FINs, resets), which bpftrace's program does not: where errnomon keeps less than "
                    "bpftrace, compare this line with the running daemon's CPU below." % "; ".join(
                        "`%s` %s" % (w, interval(hooks[w], "%+.2f%%", 100)) for w in servers["workloads"])]
        faster = [w for w in servers["workloads"] if (servers["results"][w]["bpftrace-tp"]["ratio"]["low"] or 0) > 1]
        if faster:
            out += ["- bpftrace-tp served more requests than bare in %s (the interval of its median above 100%%): "
                    "running its programs cannot make a server faster, so in those workloads something other "
                    "than the cost of the hooks moves the rates of a configuration (the comparison with it says "
                    "little there)." % ", ".join("`%s` (%s)" % (w, interval(
                        servers["results"][w]["bpftrace-tp"]["ratio"], "%.1f%%", 100)) for w in faster)]
        cpu = servers.get("daemon_cpu") or []
        if cpu:
            fr = sorted(100 * c["cpu_fraction"] for c in cpu)
            share = statistics.median(fr)  # the daemon's CPU share in its slots, % of one core
            wk = sorted(c["wakeups_per_s"] for c in cpu)
            mw = sorted(c["main_wakeups_per_s"] for c in cpu)
            metrics = sorted({m for c in cpu for m in c.get("counted", {})})
            counted = "; ".join("`%s` %s" % (m, "{:,.0f}".format(statistics.median([c.get("counted", {}).get(m, 0) for c in cpu])))
                                for m in metrics) or "nothing"
            out += ["- The running daemon's own CPU during its slots (`/proc/<pid>/task/*/schedstat`, %d slots of "
                    "about %.0f s): median %.2f%% of one core [%.2f%%, %.2f%%]; its threads woke %.1f times a "
                    "second [%.1f, %.1f], the main thread (drains, and the listener poll every 5 s) %.1f [%.1f, "
                    "%.1f]; the HTTP server's loop looks every %d s. What it counted for the servers and load "
                    "generators in a slot (median of the slots): %s. Those are the workloads' own connections "
                    "opening and closing; the drain loop runs after each such burst and sleeps between." % (
                        len(cpu), statistics.median([c["seconds"] for c in cpu]), share, fr[0], fr[-1], statistics.median(wk),
                        wk[0], wk[-1], statistics.median(mw), mw[0], mw[-1], http_loop_seconds(), counted)]
            if HELD in servers["configs"]:
                # both CPUs are busy (server on one, load generator on the other): whatever the daemon runs comes
                # out of one of them, so its CPU share predicts its loss beyond the held daemon
                held = [servers["results"][w]["errnomon"]["minus_held"] for w in servers["workloads"]]
                out += ["- The running daemon's loss beyond its hooks against its own CPU: server and load generator "
                        "each keep one of the two CPUs busy, so any time the daemon runs is taken from one of "
                        "them, and a loss about its CPU share (%.2f%% of one core) is expected. Measured "
                        "(`errnomon` - `errnomon-held`, median of the workloads' medians): %+.2f points, the "
                        "workloads from %+.2f to %+.2f; %d of %d intervals contain minus the daemon's CPU share."
                        % (share, 100 * statistics.median([h["median"] for h in held]),
                           100 * min(h["median"] for h in held), 100 * max(h["median"] for h in held),
                           sum(1 for h in held if h["low"] <= -share / 100 <= h["high"]), len(held))]
        behind_resolved = [w for w in behind if servers["checks"]["errnomon_ahead_of_bpftrace_%s" % w]["high"] < 0]
        if behind_resolved and HELD in servers["configs"] and cpu:
            hooks_behind = [w for w in behind_resolved if hooks[w]["high"] < 0]
            split = "; ".join(
                "`%s` %s, of which the hooks against bpftrace %s and the running daemon beyond its hooks %s points" % (
                    w, interval(servers["results"][w]["errnomon"]["ahead_of_bpftrace"], "%+.2f%%", 100),
                    interval(hooks[w], "%+.2f%%", 100), interval(servers["results"][w]["errnomon"]["minus_held"], "%+.2f", 100))
                for w in behind_resolved)
            out += ["- Where errnomon keeps less than bpftrace with the interval clear of 0, it splits as: %s. %s; the "
                    "part beyond them is the running daemon, whose CPU share (%.2f%% of one core, above) is the cost "
                    "of draining and exporting what bpftrace's program does not count." % (
                        split, "The hooks alone are behind bpftrace in %s" % ", ".join("`%s`" % w for w in hooks_behind)
                        if hooks_behind else "The hooks alone do not resolve against bpftrace there", share)]
        floor_ns = hot and "empty-raw" in hot["results"][str(hot["sizes"][0])] and \
            hot["results"][str(hot["sizes"][0])]["empty-raw"]["ns_per_call"]
        calls = servers.get("calls") or {}
        unresolved = [w for w in behind if servers["checks"]["errnomon_ahead_of_bpftrace_%s" % w]["high"] >= 0]
        h64 = hot and hot["results"].get(str(hot["sizes"][0]))
        if unresolved and h64 and "bpftrace-tp" in h64 and calls:
            # per round: bpftrace-tp's ns per call less errnomon's (the floor cancels out)
            d_ns = statistics.median((1 / b - 1 / e) / hot["calls_per_iteration"] * 1e9 for b, e in zip(
                h64["bpftrace-tp"]["rates"], h64["errnomon"]["rates"]))
            parts = []
            for w in unresolved:
                c = calls.get("nginx" if w == "nginx" else "redis-P%s" % w.rsplit("-P", 1)[1])
                if not c:
                    continue
                ratios = [e / b - 1 for e, b in zip(servers["results"][w]["errnomon"]["rates"],
                                                    servers["results"][w]["bpftrace-tp"]["rates"])]
                sd = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
                d = c["server"]["socket_calls_per_request"] * d_ns * servers["results"][w]["bare"]["median_rate"] / 1e9
                n = int((1.96 * sd / d) ** 2) if d > 0 else None
                per_round = servers.get("duration_s", 0) / max(1, servers.get("rounds_run", 1))
                parts.append("`%s`: %.2f%% predicted, a per-round standard deviation of %.1f%%, so about %s rounds%s"
                             % (w, 100 * d, 100 * sd, "{:,}".format(n) if n is not None else "no number of",
                                " (%.1f h at this run's %.0f s a round)" % (n * per_round / 3600, per_round)
                                if n is not None and per_round else ""))
            if parts:
                out += ["- Why errnomon against bpftrace is not resolved there: the hot path measures what separates "
                        "them, %+.1f ns per call at 64 B (bpftrace-tp's cost over the floor less errnomon's, "
                        "median of the rounds). At these servers' socket calls per request and bare rates that predicts a "
                        "difference in the server's core as below; resolving it needs a 95%% interval of the mean "
                        "clear of 0, about (1.96 x sd / difference)^2 rounds (more for the median's): %s. The hot "
                        "path is where that difference is measured." % (d_ns, "; ".join(parts))]
        if floor_ns and calls:
            parts = []
            for w in servers["workloads"]:
                name = "nginx" if w == "nginx" else "redis-P%s" % w.rsplit("-P", 1)[1]
                c = calls.get(name)
                if not c:
                    continue
                rate = servers["results"][w]["bare"]["median_rate"]
                parts.append("`%s` %.2f%% of the server's core and %.2f%% of the client's" % (
                    w, 100 * c["server"]["socket_calls_per_request"] * floor_ns * rate / 1e9,
                    100 * c["client"]["socket_calls_per_request"] * floor_ns * rate / 1e9))
            total = sum(v for c in calls.values() for role in ("server", "client")
                        for v in c[role]["by_outcome"].values())
            errors = {kind: sum(v for c in calls.values() for role in ("server", "client")
                                for k, v in c[role]["by_outcome"].items() if k.endswith(kind))
                      for kind in ("EAGAIN", "other error")}
            out += ["- What the floor predicts: socket calls per request (table above) x the hot path's floor at "
                    "64 B (%.0f ns per call) x the bare requests/s: %s. Of the %s socket calls counted, %s returned "
                    "EAGAIN (dropped by errnomon after its errno test and a settings lookup) and %s another error "
                    "(the only ones that take errnomon's counting path)%s." % (
                        floor_ns, "; ".join(parts), "{:,}".format(total), "{:,}".format(errors["EAGAIN"]),
                        "{:,}".format(errors["other error"]),
                        ": on these servers errnomon's own work is next to nothing beside the floor"
                        if total and (errors["EAGAIN"] + errors["other error"]) < 1e-3 * total else "")]
        noisy = servers.get("runs_with_noisy_processes", 0)
        if noisy:
            out += ["- %d of %d runs had a virtual machine running beside them: their rates are disturbed, and "
                    "the intervals are wide accordingly." % (noisy, servers["runs"])]
        out.append("")
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


def run_row(results):
    """What each benchmark ran, from its own JSON (benchmarks may come from separate `--only` runs)."""
    hot, sv, storm, foot = (results.get(n) for n in ("hotpath", "servers", "storm", "footprint"))
    parts = []
    if hot:
        parts.append("%s: %d hot-path rounds of %g s" % (hot.get("run", {}).get("mode", "?"), hot["rounds"],
                                                           hot["seconds_per_run"]))
    if sv:
        parts.append("%d server rounds counted of %d run, %g s per test" % (
            sv["rounds"], sv.get("rounds_run", sv["rounds"]), sv["seconds_per_run"]))
    if storm:
        parts.append("%g s EPIPE storm" % storm["modes"]["epipe"]["seconds"])
        if storm.get("per_error_cost"):
            parts.append("%d per-error cost rounds" % storm["per_error_cost"]["rounds"])
    if foot:
        parts.append("%.0f s churn" % foot["churn"]["seconds"])
    return ", ".join(parts)


def write(out_dir):
    hot, servers, storm, scrape, foot, busy, mem = (load(out_dir, n) for n in (
        "hotpath", "servers", "storm", "scrape", "footprint", "busy", "memory"))
    machine = load(out_dir, "machine") or {}
    images = plots(hot, storm, scrape, foot, servers)
    results = {"hotpath": hot, "servers": servers, "storm": storm, "scrape": scrape, "footprint": foot,
               "busy": busy, "memory": mem}
    m = machine
    args = m.get("args", {})
    doc = [
        "# errnomon benchmarks",
        "",
        "<!-- Generated by bench/run.py (bench/report.py) from the JSON in bench/out/: edit those, not this file. -->",
        "",
        "Each figure is measured side by side in one run: ratios against a bare run of the same round, counts "
        "against the generators' own counts. Reproduce with `sudo make bench` (installs gcc, bpftrace, "
        "python3-matplotlib, nginx, wrk and redis if missing, then runs `.venv/bin/python bench/run.py`); results go "
        "to `bench/out/*.json`, this page and `docs/img/bench-*.png`. Run it on a quiet machine: other tracers "
        "(another errnomon, bpftrace) run in every configuration, \"bare\" included, and other load (a virtual "
        "machine above all) disturbs the rates; by default the harness waits up to 180 s for quiet (no other "
        "tracer, no qemu-system process, host under 0.3 CPUs busy) before each benchmark and up to 120 s before "
        "each round of the side-by-side ones (`--quiet-wait`, `--round-quiet-wait`, `--quiet-budget`), and records "
        "below whether it got it.",
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
            ["Memory monitors (DAMON)", "; ".join(
                "kdamond %s: %s, sampled every %s ms%s" % (
                    d["state"], d["operations"], "%g" % (int(d["sample_us"]) / 1000) if d["sample_us"].isdigit()
                    else "?", ", schemes: " + ", ".join(d["actions"]) if d["actions"] else "")
                for d in m["damon"]) or "none" if "damon" in m else "not recorded"],
            ["Python", m.get("python", "")],
            ["bcc", m.get("bcc", "")],
            ["bpftrace", m.get("bpftrace", "")],
            ["gcc", m.get("gcc", "")],
            ["prometheus_client", m.get("prometheus_client", "")],
            ["Run", run_row(results)],
            ["Servers", ", ".join(v for v in (servers or {}).get("versions", {}).values() if v) or "not run"],
            ["Load average at start", " ".join(m.get("loadavg_at_start", []))],
        ]),
        "",
        "Each benchmark, when it ran and whether the machine was quiet before it:",
        "",
    ]
    doc += ["- " + quiet_line(n, r) for n, r in results.items()]
    noisy = [n for n, r in results.items() if r and not r.get("quiet_before", {}).get("quiet", True)]
    if noisy:
        doc += ["", "**Measured on a busy machine.** %s ran while the machine was not quiet (see above: virtual "
                "machines or other tracers running, the host busy). Their rates and times are disturbed and the "
                "intervals wide; a budget met or missed here says little until `make bench` runs again on a quiet "
                "machine. Counts (storm exactness) and memory are not affected the same way."
                % ", ".join(noisy)]
    doc += ["", "## Budgets", "", checks_table(results), ""]
    doc += hot_section(hot, images.get("hotpath"))
    doc += servers_section(servers, images.get("servers"))
    doc += storm_section(storm, images.get("storm"), images.get("storm_cost"))
    doc += scrape_section(scrape, images.get("scrape"))
    doc += foot_section(foot, images.get("footprint"))
    doc += busy_section(busy)
    doc += memory_section(mem)
    doc += ["## Where the cost goes, budgets not met, and proposed fixes", ""]
    doc += analysis(hot, storm, scrape, foot, servers)
    # make bench-kernels: the hook ladder in the kernel-matrix guests
    doc += ladder_report.section(ladder_report.load(), ladder_report.check_files())
    doc += [""]
    # bench/conncost.py: per connection, and the TTL kprobes, in the same guests
    doc += conncost.render(ladder.load_results(conncost.OUT_JSON)).split("\n") + [""]
    doc += ["## Files", "",
            "- `bench/run.py`: entry point (`--quick` smoke subset, `--out`, `--churn-seconds`, `--only`, "
            "`--docs-only`, `--strict`, rounds and seconds of each part: `--help`); `bench/common.py`: daemon, "
            "bpftrace, the floor's empty programs, BPF run-time statistics, /proc helpers, quiet checks, spread",
            "- `bench/hotpath.py` + `bench/pingpong.c`; `bench/servers.py` (nginx/wrk, redis/redis-benchmark); "
            "`bench/storm.py` + `bench/storm.c` (with the per-error cost breakdown); `bench/scrape.py`; "
            "`bench/footprint.py` + `bench/churn.c` + `bench/wake.c` + `bench/memprofile.py`; `bench/busy.py` + "
            "`bench/sleepers.c`; `bench/report.py`: this page",
            "- `bench/conncost.py` + `bench/connloop.c` (root, the kernel-matrix guests): per-connection cost and "
            "the TTL kprobes' share",
            "- `tests/bpf/test_bench_smoke.py`: `bench/run.py --quick` in `make test` (no timing assertions; "
            "the storm counts must be exact)", ""]
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write("\n".join(doc))
    print("bench: wrote %s and %d plots in %s" % (os.path.relpath(DOC, REPO), len(images), os.path.relpath(IMG, REPO)))
