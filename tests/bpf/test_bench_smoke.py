"""Smoke run of the benchmark harness: `bench/run.py --quick` completes and writes the expected JSON.

Tiny durations and one round: no timing is asserted (the machine may be busy). The one exact assertion is the
error storm's: errnomon's counts for the generators' comms equal the generators' own counts. The docs are not
regenerated (--quick). Needs root; bench/setup.sh (what `make bench` runs first) installs what the benchmarks need
beyond `make test`'s packages (wrk, matplotlib) and the test fails, rather than skips, if it cannot.
"""

import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "BENCHMARKS.md")


def test_bench_quick(tmp_path, monkeypatch):
    assert os.geteuid() == 0, "the benchmark smoke run needs root: run 'sudo make test'"
    setup = subprocess.run(["bash", os.path.join(REPO, "bench", "setup.sh")], capture_output=True, text=True,
                           timeout=900, stdin=subprocess.DEVNULL)
    assert setup.returncode == 0, "bench/setup.sh failed:\n%s%s" % (setup.stdout, setup.stderr)
    for tool in ("gcc", "bpftrace", "nginx", "wrk", "redis-server", "redis-benchmark"):
        assert shutil.which(tool), "%s is missing: 'make bench' (bench/setup.sh) installs it" % tool
    doc_mtime = os.path.getmtime(DOC) if os.path.exists(DOC) else None
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", "run.py"), "--quick", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, "bench/run.py --quick failed (%d):\n%s\n%s" % (r.returncode, r.stdout[-4000:],
                                                                           r.stderr[-4000:])

    def load(name):
        with open(out / (name + ".json")) as f:
            return json.load(f)

    machine = load("machine")
    for key in ("kernel", "cpu_model", "nproc", "mem_total_mib", "python", "bcc"):
        assert key in machine, key
    summary = load("summary")
    assert summary["failed"] == []
    assert set(summary["benchmarks"]) == {"hotpath", "servers", "storm", "scrape", "footprint", "busy",
                                         "memory"}

    hot = load("hotpath")
    for size in ("64", "16384"):
        for config in ("bare", "empty-raw", "errnomon", "bpftrace-tp", "bpftrace-syscalls"):
            res = hot["results"][size][config]
            assert res["rates"] and all(x > 0 for x in res["rates"]), (size, config)
            assert "median_ratio" in res and "ns_per_call" in res
        assert len(hot["results"][size]["errnomon"]["ns_per_call_over_floor"]) == 1
    assert {"errnomon_within_noise_of_floor_64B", "errnomon_within_noise_of_floor_16KiB"} <= set(hot["checks"])

    servers = load("servers")
    assert servers["workloads"] == ["nginx", "redis-set-P1", "redis-get-P1", "redis-set-P16", "redis-get-P16"]
    for w in servers["workloads"]:
        for config in ("bare", "empty-raw", "errnomon", "bpftrace-tp"):
            rates = servers["results"][w][config]["rates"]
            assert len(rates) == 1 and rates[0] > 0, (w, config)
        assert "errnomon_within_noise_of_floor_%s" % w in servers["checks"]
    for name, server in (("nginx", "nginx"), ("redis-P1", "redis-server"), ("redis-P16", "redis-server")):
        c = servers["calls"][name]
        assert c["requests"] > 0 and c["server"]["comm"] == server
        assert c["server"]["socket_calls_per_request"] > 0, c  # every request is read and answered on a socket

    storm = load("storm")
    for mode in ("epipe", "epipe_events_off", "refused"):
        m = storm["modes"][mode]
        gen = m["with_errnomon"]
        assert gen["errors"] > 0 and gen["unexpected"] == 0, (mode, gen)
        assert m["counted"] == m["expected"], "%s storm: errnomon counted %s, the generators %s" % (
            mode, m["counted"], m["expected"])
        assert sum(m["counted"].values()) == gen["errors"]
        assert m["exact"] is True
        for key in ("daemon_cpu_storm_fraction", "rate_kept_under_errnomon", "dropped"):
            assert key in m, key
    assert storm["modes"]["epipe"]["events"] == "on" and storm["modes"]["epipe_events_off"]["events"] == "off"
    assert storm["modes"]["epipe_events_off"]["bare"] == storm["modes"]["epipe"]["bare"]  # side by side, one bare run
    # every error of the events-on storm is an event the daemon kept or one the kernel counted as refused
    ev = storm["modes"]["epipe"]["events_accounted"]
    assert ev["log_complete"] and ev["kept_wrong_errno"] == 0, ev
    assert ev["kept"] + ev["dropped_total"] == storm["modes"]["epipe"]["with_errnomon"]["errors"], ev
    assert ev["kept"] > 0 and ev["rate_limited"] > 0, ev  # a storm outruns events.rate: both branches ran
    assert storm["checks"]["events_accounted_epipe"]["ok"]
    assert storm["highest_rate_per_s"] > 0
    cost = storm["per_error_cost"]
    for config in cost["configs"]:
        assert cost["results"][config]["rates"][0] > 0, config
        if config != "bare":
            assert cost["results"][config]["program_ns_per_run"][0] > 0, config  # the kernel counted its runs
    assert set(cost["steps"]) == {"owner lookup", "comm and cgroup", "sendfile check", "map update", "SIGPIPE lookup",
                                  "error event"}

    scrape = load("scrape")
    for n in ("1000", "10000"):
        res = scrape["results"][n]
        assert res["series"] >= int(n)
        for key in ("generate_latest_median_ms", "http_get_median_ms", "http_get_gzip_median_ms", "ms_per_1k_series"):
            assert res[key] > 0, (n, key)

    foot = load("footprint")
    assert foot["startups"] and foot["startups"][0]["ready_s"] > 0
    assert any(line == "READY=1" for _, line in foot["startups"][0]["status"])
    assert foot["after_startup"]["RssAnon"] > 0 and foot["after_churn"]["RssAnon"] > 0
    assert len(foot["samples"]) >= 2
    assert foot["churn"]["result"].get("processes", 0) > 0, foot["churn"]

    assert foot["idle"]["seconds"] > 0 and foot["idle"]["cpu_fraction"] >= 0, foot["idle"]
    wake = foot["wake_cost"]
    assert [w["sleep_us"] for w in wake["c"]] == [1000, 100000, 500000], wake
    assert all(w["n"] >= 2 and w["cpu_us_median"] > 0 for w in wake["c"]) and wake["python_select"]["cpu_us_median"] > 0
    assert foot["listen_poll_hot_ms"] > 0
    assert isinstance(load("machine")["damon"], list)
    assert len(servers["daemon_cpu"]) == 1 and "counted" in servers["daemon_cpu"][0], servers["daemon_cpu"]

    busy = load("busy")
    assert [r["config"] for r in busy["table"]] == ["idle host", "+50 processes", "+5 netns, before", "+5 netns, after"]
    # an idle daemon may not wake at all in a 2 s window: its CPU can be exactly 0
    assert all(len(r["samples"]) == 1 and r["samples"][0]["seconds"] >= 2.0 and r["cpu_fraction_median"] >= 0
               for r in busy["table"]), busy["table"]
    assert set(busy["checks"]) == {"idle CPU over the idle host, " + c
                                   for c in ("+50 processes", "+5 netns, before", "+5 netns, after")}

    memory = load("memory")
    (run,) = memory["runs"]
    # exact: the daemon's sum over 300 peers against the connects the benchmark saw refused
    assert run["refused"] == 300 and run["exact"] and run["alive"], run
    assert len(run["scrapes"]) == 2 and all(s["rss_anon_mib"] > 0 and s["peak_mib"] > 0 for s in run["scrapes"])
    assert memory["small_limit"] is None and memory["checks"]["exact"]["ok"]

    # --quick leaves the docs alone
    assert (os.path.getmtime(DOC) if os.path.exists(DOC) else None) == doc_mtime

    # the page renders from these results (written elsewhere): every section, no exception
    monkeypatch.syspath_prepend(os.path.join(REPO, "bench"))
    import report
    monkeypatch.setattr(report, "DOC", str(tmp_path / "BENCHMARKS.md"))
    monkeypatch.setattr(report, "IMG", str(tmp_path / "img"))
    report.write(str(out))
    page = (tmp_path / "BENCHMARKS.md").read_text()
    for heading in ("## Budgets", "## 1. Hot path", "## 2. Real servers over loopback", "## 3. Error storm",
                    "## 4. Scrape", "## 5. Footprint", "### Real servers"):
        assert heading in page, heading
    assert "The running daemon's own CPU during its slots" in page and "Idle, before the churn" in page
    assert "charges any thread for a wake-up" in page and "loss beyond its hooks against its own CPU" in page
    assert (os.path.getmtime(DOC) if os.path.exists(DOC) else None) == doc_mtime
