#!/usr/bin/env python3
"""errnomon benchmarks: hot path, error storm, scrape, footprint, real servers, a busy node's idle cost. Needs root, gcc, bpftrace, nginx,
redis, wrk (`make bench` installs them).

    .venv/bin/python bench/run.py                      # everything; rewrites docs/BENCHMARKS.md and docs/img/
    .venv/bin/python bench/run.py --quick --out DIR    # the smoke subset: tiny durations, one round, no docs
    .venv/bin/python bench/run.py --churn-seconds 60   # a shorter churn
    .venv/bin/python bench/run.py --docs-only          # regenerate the docs from bench/out/*.json

Results: one JSON file per benchmark in --out (default bench/out), plus machine.json and summary.json.
The exit status is 0 when every benchmark ran, whether or not its budgets were met (see summary.json);
--strict makes an unmet budget exit 1.
"""

import argparse
import os
import shutil
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import REPO, log, machine_info, quiet_check, write_json  # noqa: E402

BENCHMARKS = ("hotpath", "servers", "storm", "scrape", "footprint", "busy", "memory")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke subset: tiny durations, one round, no docs")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out"), help="directory for the JSON results")
    p.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of %s" % ", ".join(BENCHMARKS))
    p.add_argument("--rounds", type=int, help="hot-path rounds (default 7; --quick 1)")
    p.add_argument("--seconds", type=float, help="seconds per ping-pong run (default 2; --quick 0.3)")
    p.add_argument("--storm-seconds", type=float, help="seconds of the EPIPE storm (default 10; --quick 1)")
    p.add_argument("--churn-seconds", type=float, help="seconds of churn for the footprint (default 600; --quick 5)")
    p.add_argument("--server-rounds", type=int, help="rounds of the real-server benchmark (default 9; --quick 1)")
    p.add_argument("--server-seconds", type=float,
                   help="seconds per wrk run and per redis-benchmark test (default 3; --quick 1)")
    p.add_argument("--cost-rounds", type=int, help="rounds of the per-error cost breakdown (default 7; --quick 1)")
    p.add_argument("--cost-seconds", type=float, help="seconds per storm of the cost breakdown (default 2; --quick 0.5)")
    p.add_argument("--quiet-wait", type=float,
                   help="seconds to wait for a quiet machine before each benchmark (default 180; --quick 0)")
    p.add_argument("--round-quiet-wait", type=float,
                   help="seconds to wait for a quiet machine before each round of the side-by-side benchmarks "
                        "(default 120; --quick: do not look)")
    p.add_argument("--quiet-budget", type=float,
                   help="seconds this run may spend waiting for quiet in all (default: no limit)")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/BENCHMARKS.md and docs/img/")
    p.add_argument("--docs-only", action="store_true", help="only regenerate the docs from the JSON in --out")
    p.add_argument("--strict", action="store_true", help="exit 1 when a budget is not met")
    a = p.parse_args(argv)
    q = a.quick
    a.rounds = a.rounds or (1 if q else 7)
    a.seconds = a.seconds or (0.3 if q else 2.0)
    a.storm_seconds = a.storm_seconds or (1.0 if q else 10.0)
    a.churn_seconds = a.churn_seconds or (5.0 if q else 600.0)
    a.server_rounds = a.server_rounds or (1 if q else 9)
    a.server_seconds = a.server_seconds or (1.0 if q else 3.0)
    a.cost_rounds = a.cost_rounds or (1 if q else 7)
    a.cost_seconds = a.cost_seconds or (0.5 if q else 2.0)
    a.quiet_wait = (0.0 if q else 180.0) if a.quiet_wait is None else a.quiet_wait
    a.round_quiet_wait = (None if q else 120.0) if a.round_quiet_wait is None else a.round_quiet_wait
    a.only = [b.strip() for b in a.only.split(",") if b.strip()]
    unknown = set(a.only) - set(BENCHMARKS)
    if unknown:
        p.error("unknown benchmark(s): %s" % ", ".join(sorted(unknown)))
    if q:
        a.no_docs = True
    return a


def preflight():
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (BPF): run 'sudo make bench'")
    for tool in ("gcc", "bpftrace", "nginx", "wrk", "redis-server", "redis-benchmark", "taskset"):
        if not shutil.which(tool):
            problems.append("%s is not installed: 'make bench' installs it" % tool)
    if not os.access(common.ERRNOMON, os.X_OK):
        problems.append("%s is missing: run 'make setup'" % common.ERRNOMON)
    return problems


def run_one(name, a, build):
    if name == "hotpath":
        import hotpath
        return hotpath.run(a.out, build, rounds=a.rounds, seconds=a.seconds, with_breakdown=not a.quick,
                           round_quiet_wait=a.round_quiet_wait)
    if name == "servers":
        import servers
        return servers.run(a.out, rounds=a.server_rounds, seconds=a.server_seconds, quick=a.quick,
                           round_quiet_wait=a.round_quiet_wait)
    if name == "storm":
        import storm
        return storm.run(a.out, build, seconds=a.storm_seconds, refused_seconds=max(0.5, a.storm_seconds / 2),
                         cost_rounds=a.cost_rounds, cost_seconds=a.cost_seconds,
                         round_quiet_wait=a.round_quiet_wait)
    if name == "scrape":
        import scrape
        if a.quick:
            return scrape.run(sizes=(1000, 10000), reps=3, http_reps=2)
        return scrape.run()
    if name == "footprint":
        import footprint
        if a.quick:
            return footprint.run(a.out, build, churn_seconds=a.churn_seconds, starts=1, sample_every=1.0,
                                 profile=False, idle_seconds=2.0)
        return footprint.run(a.out, build, churn_seconds=a.churn_seconds)
    if name == "busy":
        import busy
        if a.quick:
            return busy.run(a.out, build, rounds=1, seconds=2.0, settle=1.0, processes=50, netns=5)
        return busy.run(a.out, build)
    if name == "memory":
        import memory
        if a.quick:
            return memory.run(a.out, peers=(300,), scrapes=2, small_limit=None)
        return memory.run(a.out)
    raise ValueError(name)


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    a.out = os.path.abspath(a.out)
    if a.docs_only:
        import report
        report.write(a.out)
        return 0
    problems = preflight()
    if problems:
        for p in problems:
            print("bench: error: " + p, file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    common.QUIET_BUDGET["left"] = a.quiet_budget
    build = os.path.join(a.out, "build")
    machine = machine_info()
    machine["mode"] = "quick" if a.quick else "full"
    machine["args"] = {k: v for k, v in vars(a).items()}
    write_json(os.path.join(a.out, "machine.json"), machine)
    log("machine: %s, %s x%d, %d MiB, kernel %s, Python %s, bcc %s"
        % (machine["os"], machine["cpu_model"], machine["nproc"], machine["mem_total_mib"], machine["kernel"],
           machine["python"], machine["bcc"]))

    summary = {"mode": machine["mode"], "benchmarks": {}, "failed": []}
    t_all = time.monotonic()
    for name in a.only:
        log("== %s ==" % name)
        quiet = quiet_check(wait=a.quiet_wait, sample=0.5 if a.quick else 2.0)
        if not quiet["quiet"]:
            log("WARNING: machine not quiet for %s (busy %.2f CPUs, other tracers: %s, running: %s): numbers are "
                "disturbed" % (name, quiet["host_busy_cpus"],
                               ", ".join(h["comm"] for h in quiet["other_bpf_holders"]) or "none",
                               ", ".join(p["comm"] for p in quiet["noisy_processes"]) or "nothing noisy"))
        t0 = time.monotonic()
        try:
            result = run_one(name, a, build)
        except Exception:
            traceback.print_exc()
            summary["failed"].append(name)
            continue
        result["quiet_before"] = quiet
        result["duration_s"] = round(time.monotonic() - t0, 1)
        result["run"] = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "mode": machine["mode"],
                         "args": machine["args"]}
        write_json(os.path.join(a.out, name + ".json"), result)
        summary["benchmarks"][name] = {"checks": result.get("checks", {}), "duration_s": result["duration_s"],
                                       "quiet_before": quiet["quiet"]}
    summary["duration_s"] = round(time.monotonic() - t_all, 1)
    unmet = ["%s.%s" % (b, c) for b, r in summary["benchmarks"].items() for c, v in r["checks"].items() if not v["ok"]]
    summary["unmet"] = unmet
    write_json(os.path.join(a.out, "summary.json"), summary)

    for b, r in summary["benchmarks"].items():
        for c, v in r["checks"].items():
            log("%-4s %-10s %-45s %s (budget %s)" % ("ok" if v["ok"] else "FAIL", b, c, v["value"], v["budget"]))
    if not a.no_docs and not summary["failed"]:
        import report
        report.write(a.out)
    if summary["failed"]:
        log("benchmarks that failed to run: %s" % ", ".join(summary["failed"]))
        return 1
    if unmet:
        log("budgets not met: %s" % ", ".join(unmet))
        return 1 if a.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
