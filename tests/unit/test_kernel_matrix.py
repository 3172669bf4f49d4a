"""The kernel matrix's verdict per guest (tests/kernels/run.py): only a finished suite with every test
passed is a pass; a hung, crashed or silent guest is a failure with its reason."""

import importlib.util
import os

import pytest

RUN_PY = os.path.join(os.path.dirname(__file__), "..", "kernels", "run.py")
spec = importlib.util.spec_from_file_location("kernel_matrix_run", RUN_PY)
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.bpf.test_errors" name="test_fins_sent" time="3.1"/>
%s
</testsuite></testsuites>"""
FAILED_CASE = """<testcase classname="tests.bpf.test_errors" name="test_reset_on_recv[ipv4]" time="9.0">
<failure message="AssertionError: errnomon_socket_errors_total{'comm': 'rr_cli'}:&#10; got {}">trace</failure>
</testcase>"""
ATTACHED = "level=info msg=\"attached the hooks of 9 of 9 signals in 21.50s\"\n"


def guest_out(tmp_path, guest_env="KERNEL=6.1.0-57-amd64\nBOOT_SECONDS=9.8\nPYTEST_EXIT=0\nDONE=1\n",
              junit=JUNIT % "", errnomon_log=ATTACHED):
    for name, text in (("guest.env", guest_env), ("junit.xml", junit), ("errnomon.log", errnomon_log)):
        if text is not None:
            (tmp_path / name).write_text(text)
    return str(tmp_path)


def verdict(out, hung=False, returncode=0):
    result = run.Result("bookworm")
    run.collect(out, result, hung, returncode)
    return result


def test_finished_suite_with_every_test_passed_is_a_pass(tmp_path):
    r = verdict(guest_out(tmp_path))
    assert (r.ok, r.passed, r.failed, r.compile, r.kernel) == (
        True, ["test_errors::test_fins_sent"], [], 21.5, "6.1.0-57-amd64")
    assert r.line().split()[:3] == ["bookworm", "6.1.0-57-amd64", "PASS"]


def test_a_failed_test_fails_the_kernel_with_its_reason(tmp_path):
    r = verdict(guest_out(tmp_path, guest_env="DONE=1\nPYTEST_EXIT=1\n", junit=JUNIT % FAILED_CASE))
    assert not r.ok
    assert r.failed == [("test_errors::test_reset_on_recv[ipv4]",
                         "failure: AssertionError: errnomon_socket_errors_total{'comm': 'rr_cli'}: got {}")]
    assert "FAIL  scenarios 1/2 passed, 1 failed" in r.line()


@pytest.mark.parametrize("hung", [True, False])
def test_a_guest_that_hangs_or_stops_early_fails_even_with_passing_results(tmp_path, hung):
    # results of a suite that had passed so far, but the guest never said it finished
    r = verdict(guest_out(tmp_path, guest_env="PYTEST_EXIT=0\n"), hung=hung, returncode=-9 if hung else 0)
    assert not r.ok
    assert r.summary.startswith("killed at the" if hung else "guest stopped before the suite finished")


def test_errnomon_that_does_not_start_fails_with_its_error_line(tmp_path):
    log = "level=error msg=\"compiling or attaching the BPF programs failed (no member named 'family')\"\n"
    r = verdict(guest_out(tmp_path, guest_env="DONE=1\nPYTEST_EXIT=1\n", junit=None, errnomon_log=log))
    assert not r.ok
    assert r.summary == "errnomon did not start: " + log.strip()


def test_no_test_collected_is_a_failure(tmp_path):
    r = verdict(guest_out(tmp_path, guest_env="DONE=1\nPYTEST_EXIT=0\n", junit=None))
    assert (r.ok, r.summary) == (False, "no test ran (pytest exit 0)")


def test_matrix_lists_every_kernel_once():
    assert run.kernels() == ["bullseye", "jammy", "bookworm", "trixie"]


@pytest.mark.parametrize("guest_env, files, ok, summary", [
    ("DONE=1\nBENCH_EXIT=0\n", ["ladder.json"], True, ""),
    ("DONE=1\nBENCH_EXIT=1\n", [], False, "bench/ladder.py failed (exit 1): see %s/bench.log"),
    ("DONE=1\nBENCH_EXIT=0\n", [], False, "bench/ladder.py failed (exit 0): see %s/bench.log"),
    ("BENCH_EXIT=0\n", ["ladder.json"], False, "guest stopped before the benchmark finished (qemu exit 0); "
                                               "console: no console output"),
])
def test_a_benchmark_passes_only_when_it_finished_and_wrote_its_json(tmp_path, monkeypatch, guest_env, files, ok,
                                                                     summary):
    monkeypatch.setattr(run, "BENCH", "ladder")
    (tmp_path / "guest.env").write_text(guest_env)
    for name in files:
        (tmp_path / name).write_text("{}")
    r = verdict(str(tmp_path))
    assert (r.ok, r.summary) == (ok, summary.replace("%s", str(tmp_path)))
    assert r.passed == (["bench/ladder.py"] if ok else [])


def test_icount_reaches_qemu_only_when_asked(monkeypatch):
    monkeypatch.setattr(run, "ICOUNT", "")
    assert "-icount" not in run.qemu_command("/img", "/out")
    monkeypatch.setattr(run, "ICOUNT", "shift=0")
    assert run.qemu_command("/img", "/out")[-2:] == ["-icount", "shift=0"]
