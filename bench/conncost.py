#!/usr/bin/env python3
"""What a TCP connection costs with errnomon attached, and what its TTL kprobes add, inside the kernel-matrix guests.

Error events carry the TTL of a received reset beside the peer's (monitor/loader.py, signals peer_ttl and
reset_ttl): kprobes on tcp_init_transfer, which every connection passes once on each end, and on tcp_reset.
This host has no kprobes, so each guest of the kernel matrix (tests/kernels/) runs bench/connloop.c (one
process, loopback: connect, accept, one byte, close both, in a loop) under each configuration in turn:

    bare              nothing attached
    errnomon          the real daemon, shipped config: the TTL kprobes attached where the kernel allows
    errnomon-no-ttl   the same with kernel.function_hooks: [fentry]: every other signal takes the same hook
                      (fentry works in the guests), the TTL kprobes are not attached

Rounds: every configuration once, rotated; figures are medians over rounds with the lowest and highest round.
The daemon is stopped (SIGSTOP) during each run, its programs attached (a guest has one vCPU). qemu's icount
clock (-icount shift=0: 1 ns per guest instruction) makes the runs repeatable whatever the host does; absolute
times are the emulation's, differences in ns are instructions.

    /usr/bin/python3 bench/conncost.py [NAME ...]      (root) each guest in turn; bench/out/conncost.json and
                                                       its section of docs/BENCHMARKS.md
    /usr/bin/python3 bench/conncost.py --docs-only     the docs section again from bench/out/conncost.json
    python3 bench/conncost.py guest --out DIR [...]    inside a guest (tests/kernels/guest-init.sh, BENCH=conncost)
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BENCH, DAEMON_CONFIG, REPO, log, median, write_json  # noqa: E402
import ladder  # noqa: E402  (its daemon slot, guest helpers and kernel-matrix plumbing)

CONFIGS = ("bare", "errnomon", "errnomon-no-ttl")
OUT_JSON = os.path.join(BENCH, "out", "conncost.json")
DOC = os.path.join(REPO, "docs", "BENCHMARKS.md")
BEGIN, END = "<!-- conncost: bench/conncost.py -->", "<!-- /conncost -->"


def summary(values):
    return {"median": median(values), "low": min(values), "high": max(values), "n": len(values)}


def us_per_connection(rate, reference):
    return (1 / rate - 1 / reference) * 1e6


# ---- inside a guest ------------------------------------------------------------------------------------------

def no_ttl_config(workdir):
    import yaml
    with open(DAEMON_CONFIG) as f:
        data = yaml.safe_load(f) or {}
    data["kernel"] = dict(data.get("kernel") or {}, function_hooks=["fentry"])
    path = os.path.join(workdir, "config-no-ttl.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def connloop(binary, seconds):
    out = subprocess.run([binary, "%g" % seconds], capture_output=True, text=True, check=True, timeout=seconds + 120)
    return json.loads(out.stdout)


def attached(slot):
    """{signal: [probe]} of everything attached, from errnomon_probe_attached."""
    hooks = {}
    for labels, value in slot.samples("errnomon_probe_attached"):
        if value == 1:
            hooks.setdefault(labels.get("signal"), []).append(labels.get("probe"))
    return {k: sorted(v) for k, v in sorted(hooks.items())}


def guest(a):
    binary = "/tmp/connloop"
    shutil.copy(os.path.join(a.out, "connloop"), binary)  # not run from 9p
    os.chmod(binary, 0o755)
    workdir = "/tmp/conncost"
    exe, _ = ladder.daemon_files(workdir)
    configs = {"errnomon": DAEMON_CONFIG, "errnomon-no-ttl": no_ttl_config(workdir)}
    rates = {c: [] for c in CONFIGS}
    runs = {c: [] for c in CONFIGS}
    hooks, order_log = {}, []
    connloop(binary, 0.5)  # warm the page cache and the binary
    for r in range(a.rounds):
        order = list(CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)])
        order_log.append(order)
        for config in order:
            s = None if config == "bare" else ladder.DaemonSlot(
                workdir, config=configs[config], name="%s-%d" % (config, r), timeout=a.daemon_timeout, exe=exe)
            res = ladder.measure(s, a.settle, lambda s, config=config: hooks.setdefault(config, attached(s)),
                                 lambda: connloop(binary, a.seconds))
            rates[config].append(res["rate"])
            runs[config].append(res)
            log("conncost round %d/%d %-16s %8.0f connections/s" % (r + 1, a.rounds, config, res["rate"]))
    bare = rates["bare"]
    results = {}
    for c in CONFIGS:
        results[c] = {"median_rate": median(rates[c]),
                      "us_per_connection_over_bare": summary([us_per_connection(x, b) for x, b in zip(rates[c], bare)])}
    results["ttl_kprobes"] = {"us_per_connection": summary(
        [us_per_connection(x, y) for x, y in zip(rates["errnomon"], rates["errnomon-no-ttl"])])}
    result = {"kernel": os.uname().release, "rounds": a.rounds, "seconds_per_run": a.seconds,
              "settle_seconds": a.settle, "order_per_round": order_log, "hooks": hooks, "results": results,
              "runs": runs}
    write_json(os.path.join(a.out, "conncost.json"), result)
    log("conncost: wrote %s" % os.path.join(a.out, "conncost.json"))
    return 0


# ---- on the host ---------------------------------------------------------------------------------------------

def run_kernel(name, a, binary, cache):
    env = dict(os.environ, KERNEL_JOBS="1", KERNEL_BENCH="conncost",
               KERNEL_BENCH_ARGS="--rounds %d --seconds %g --settle %g" % (a.rounds, a.seconds, a.settle),
               KERNEL_BENCH_FILES="%s:connloop" % binary, KERNEL_ICOUNT=ladder.CLOCKS["icount"],
               KERNEL_TIMEOUT=str(a.timeout))
    log("conncost: %s: %d rounds of %g s (guest deadline %.0f s)" % (name, a.rounds, a.seconds, a.timeout))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, os.path.join(ladder.KERNELS_DIR, "run.py"), name], env=env)
    run_dir = os.path.join(cache, "runs", name)
    path = os.path.join(run_dir, "conncost.json")
    if p.returncode != 0 or not os.path.exists(path):
        log("conncost: %s failed (run.py exit %d): see %s" % (name, p.returncode, run_dir))
        return None
    with open(path) as f:
        r = json.load(f)
    r["wall_seconds"] = round(time.monotonic() - t0, 1)
    r["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with open(os.path.join(run_dir, "guest.env")) as f:
        r["guest"] = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    return r


def fmt(s, digits=2):
    return "%.*f [%.*f, %.*f]" % (digits, s["median"], digits, s["low"], digits, s["high"])


def render(data):
    lines = [BEGIN, "", "### Per connection, and the TTL kprobes (kernel-matrix guests)", ""]
    if not data.get("kernels"):
        return "\n".join(lines + ["Not run: `sudo /usr/bin/python3 bench/conncost.py`.", "", END])
    lines += [
             "`bench/conncost.py` (root; `/usr/bin/python3 bench/conncost.py [NAME ...]`): in each guest of the kernel "
             "matrix, with qemu's icount clock (1 ns per guest instruction), `bench/connloop.c` opens and closes "
             "loopback connections one at a time (connect, accept, one byte, both closed with a FIN) for %s s per "
             "run, each configuration once a round in a rotated order, the daemon stopped (SIGSTOP) "
             "during its runs with its programs attached. `errnomon` is the shipped config; `errnomon-no-ttl` the "
             "same with `kernel.function_hooks: [fentry]`, which here takes every other signal's same hook and "
             "leaves out the kprobes of `peer_ttl` (`tcp_init_transfer`, both ends of each connection) and "
             "`reset_ttl` (`tcp_reset`, only on resets: none here). Medians with the lowest and highest round; "
             "µs are the emulated guest's, 1,000 instructions each. Most of what errnomon adds to a connection is "
             "not the TTL kprobes but its other programs on the way (`errnomon-no-ttl` over bare: "
             "`inet_sock_set_state` at each of its state changes, which keeps the owner table, `tcp_destroy_sock`, "
             "the send/recv hooks on its one write and read), there before them and not measured per connection "
             "until this table." % _one(data, "seconds_per_run"), "",
             "| Kernel | Rounds | bare conn/s | errnomon conn/s | errnomon over bare, µs/conn | TTL kprobes (errnomon over "
             "errnomon-no-ttl), µs/conn | TTL hooks attached |",
             "|---|---|---|---|---|---|---|"]
    for name, r in sorted(data.get("kernels", {}).items(), key=lambda kv: kv[1]["kernel"]):
        res = r["results"]
        ttl = sorted(p for s in ("peer_ttl", "reset_ttl") for p in r["hooks"].get("errnomon", {}).get(s, []))
        lines.append("| %s (%s) | %d | %.0f | %.0f | %s | %s | %s |" % (
            name, r["kernel"], r["rounds"], res["bare"]["median_rate"], res["errnomon"]["median_rate"],
            fmt(res["errnomon"]["us_per_connection_over_bare"]), fmt(res["ttl_kprobes"]["us_per_connection"]),
            ", ".join("`%s`" % p for p in ttl) or "none"))
    lines += ["", "Measured %s." % ", ".join(sorted({r["date"][:10] for r in data.get("kernels", {}).values()})),
              "", END]
    return "\n".join(lines)


def _one(data, key):
    values = sorted({r[key] for r in data.get("kernels", {}).values()})
    return "/".join("%g" % v for v in values) or "?"


def update_doc(data):
    with open(DOC) as f:
        text = f.read()
    section = render(data)
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda m: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(DOC, "w") as f:
        f.write(text)
    log("conncost: rewrote its section of %s" % DOC)


def host(a):
    ready = ladder.host_preflight("conncost", a.kernels)
    if isinstance(ready, int):
        return ready
    matrix, names = ready
    binary = ladder.build_static("connloop", os.path.join(BENCH, "out", "build"))
    data = ladder.load_results(OUT_JSON)
    failed = []
    for name in names:
        r = run_kernel(name, a, binary, matrix.CACHE)
        if r is None:
            failed.append(name)
            continue
        data.setdefault("kernels", {})[name] = r
        write_json(OUT_JSON, data)
    update_doc(data)
    if failed:
        log("conncost: failed on %s" % " ".join(failed))
        return 1
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kernels", nargs="*", help="names from tests/kernels/kernels.txt (default: all)")
    p.add_argument("--rounds", type=int, default=7, help="rounds per kernel (default 7)")
    p.add_argument("--seconds", type=float, default=1.0, help="seconds per run, guest clock (default 1)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between a start and its run (default 1)")
    p.add_argument("--timeout", type=float, default=2400, help="seconds a guest may run (default 2400)")
    p.add_argument("--docs-only", action="store_true", help="only rewrite the docs section from bench/out/conncost.json")
    return p.parse_args(argv)


def parse_guest_args(argv):
    p = argparse.ArgumentParser(prog="conncost.py guest")
    p.add_argument("--out", required=True, help="the guest's writable share (connloop is there)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--daemon-timeout", type=float, default=300.0, help="seconds errnomon may take to start")
    return p.parse_args(argv)


def main(argv):
    if argv[:1] == ["guest"]:
        return guest(parse_guest_args(argv[1:]))
    a = parse_args(argv)
    if a.docs_only:
        update_doc(ladder.load_results(OUT_JSON))
        return 0
    if os.geteuid() != 0:
        sys.stderr.write("conncost: needs root (qemu guests, image cache)\n")
        return 2
    return host(a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
