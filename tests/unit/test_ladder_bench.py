"""bench/ladder.py's figures from per-round rates, and the docs section bench/ladder_report.py renders."""

import importlib.util
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")
sys.path.insert(0, BENCH)
spec = importlib.util.spec_from_file_location("ladder", os.path.join(BENCH, "ladder.py"))
ladder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ladder)
import ladder_report  # noqa: E402


@pytest.mark.parametrize("rate, reference, ns", [
    (40000.0, 50000.0, 1250.0),   # 25 us vs 20 us an iteration of 4 calls
    (50000.0, 50000.0, 0.0),
    (50000.0, 40000.0, -1250.0),  # faster than the reference: negative, kept as measured
])
def test_ns_per_call_is_the_iteration_time_difference_over_four_calls(rate, reference, ns):
    assert ladder.ns_per_call(rate, reference) == pytest.approx(ns)


RATES = {"bare": [50000.0, 40000.0, 45000.0], "empty-fexit": [45000.0, 40000.0, 45000.0],
         "errnomon": [40000.0, 32000.0, 45000.0]}


def test_ratios_are_per_round_and_summarised_by_median_and_extremes():
    res = ladder.analyse(["bare", "empty-fexit", "errnomon"], RATES)
    assert res["bare"]["ratio"] == {"median": 1.0, "low": 1.0, "high": 1.0, "n": 3}
    assert res["empty-fexit"]["ratio"] == {"median": 1.0, "low": 0.9, "high": 1.0, "n": 3}
    assert res["errnomon"]["ratio"] == {"median": 0.8, "low": 0.8, "high": 1.0, "n": 3}
    assert res["errnomon"]["median_rate"] == 40000.0
    assert res["errnomon"]["ns_per_call_over_bare"]["median"] == pytest.approx(1250.0)
    over = ladder.over_floor(RATES, "errnomon", "empty-fexit")
    assert (over["median"], over["low"], over["high"]) == pytest.approx((694.4, 0.0, 1562.5), abs=0.1)


def test_report_shows_each_clock_beside_the_other_and_orders_kernels_as_the_matrix():
    def kernel_run(kernel):
        res = ladder.analyse(["bare", "empty-fexit", "errnomon"], RATES)
        res["errnomon"]["floor"] = "empty-fexit"
        res["errnomon"]["ns_per_call_over_floor"] = ladder.over_floor(RATES, "errnomon", "empty-fexit")
        return {"kernel": kernel, "configs": ["bare", "empty-fexit", "errnomon"], "results": res, "rounds": 3,
                "seconds_per_run": 1, "hooks": {"errnomon": {"send_errors": ["fexit:inet_sendmsg"]}},
                "guest": {"PYTHON": "3.11.2", "BCC": "0.26.0"},
                "other_qemu_processes": {"min": 0, "max": 2, "mean": 1.0, "samples": 4, "every_s": 5.0}}
    data = {"clocks": {c: {"kernels": {"trixie": kernel_run("6.12"), "bullseye": kernel_run("5.10")}}
                       for c in ("icount", "wall")}}
    text = "\n".join(ladder_report.section(data))
    assert text.index("### bullseye: Linux 5.10") < text.index("### trixie: Linux 6.12")
    row = [l for l in text.splitlines() if l.startswith("| `errnomon` ")][0]
    assert row == ("| `errnomon` | errnomon, shipped config: `fexit:inet_sendmsg` | 0.800 [0.800, 1.000] | 1250 [0, 1562] "
                   "| 694 [0, 1562] over `empty-fexit` | 0.800 [0.800, 1.000] | 1250 [0, 1562] "
                   "| 694 [0, 1562] over `empty-fexit` |")
    assert "other qemu guests on the host meanwhile: 0 to 2, mean 1.0 (4 samples every 5 s)" in text
    assert "errnomon-kprobe` would be `errnomon` again" in text  # not run: the section says why


def test_doc_section_is_replaced_between_its_markers(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# b\n\n## 1. Hot path\n\nx\n\n## Files\n\n- f\n")
    ladder_report.update_doc({}, doc=str(doc), check_paths=[])
    ladder_report.update_doc({}, doc=str(doc), check_paths=[])
    text = doc.read_text()
    assert text.count(ladder_report.BEGIN) == 1 and text.count(ladder_report.END) == 1
    assert text.index("## 1. Hot path") < text.index(ladder_report.BEGIN) < text.index("## Files")
    assert "Not run: `sudo make bench-kernels`" in text


def test_kprobe_events_left_at_the_end_are_counted_per_process_that_made_them():
    events = ["r4096:kprobes/r_%s_bcc_%d %s" % (f, pid, f) for pid in (202, 226) for f in ("inet_sendmsg", "inet_recvmsg")]
    assert ladder_report.leftovers_text({"left_after": {"kprobe_events": events}}).startswith(
        "4 kretprobe events were still registered at the end, 2 per process that made them (2 processes)")
    assert ladder_report.leftovers_text({"left_after": {"kprobe_events": []}}) == ""
    assert ladder_report.leftovers_text({}) == ""
