"""monitor/top.py (errnomon top): parsing, rates, sorting, width fitting, and --once; no root, no bcc, no terminal.

The curses loop itself (keys, resizes, restoring the terminal) is driven in tmux by tests/bpf/test_top_tmux.py.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading

import pytest

from monitor import top

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
URL = "http://127.0.0.1:9779/metrics"

HEAD = """# HELP errnomon_socket_errors_total Errors.
# TYPE errnomon_socket_errors_total counter
"""

FIRST = HEAD + """\
errnomon_socket_errors_total{comm="curl",errno="ECONNRESET",op="recv",port="443",remote="10.1.2.3"} 10.0
errnomon_socket_errors_total{comm="psql",errno="ECONNREFUSED",op="connect",port="5432",remote="::1"} 100.0
errnomon_socket_errors_total{comm="nginx",errno="EPIPE",op="send",port="80",remote="192.0.2.7"} 7.0
# TYPE errnomon_tcp_resets_received_total counter
errnomon_tcp_resets_received_total{comm="curl",port="443",remote="10.1.2.3",state="ESTABLISHED"} 4.0
# TYPE errnomon_tcp_resets_sent_total counter
errnomon_tcp_resets_sent_total{comm="",port="80",reason="NO_SOCKET",remote="192.0.2.1"} 2.0
errnomon_tcp_resets_sent_total{comm="nginx",port="80",reason="NO_SOCKET",remote="192.0.2.9"} 3.0
errnomon_tcp_resets_sent_total{comm="nginx",port="80",reason="TCP_ABORT_ON_CLOSE",remote="192.0.2.9"} 1.0
# TYPE errnomon_sigpipe_total counter
errnomon_sigpipe_total{action="killed",comm="nginx"} 1.0
# TYPE errnomon_tcp_fins_sent_total counter
errnomon_tcp_fins_sent_total{comm="curl",port="443",remote="10.1.2.3"} 50.0
# TYPE errnomon_probe_attached gauge
errnomon_probe_attached{probe="tcp:tcp_send_reset"} 1.0
errnomon_probe_attached{probe="sock:sock_send_length"} 1.0
# TYPE errnomon_dropped_total counter
errnomon_dropped_total{reason="socket_errors_map_full"} 0.0
# TYPE errnomon_build_info gauge
errnomon_build_info{kernel="6.18.0",version="0.1.0"} 1.0
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e+09
"""

# 4 s later: curl +8, psql +2 (slower than curl now, but a far larger total), nginx unchanged, a new series,
# resets sent +4 (NO_SOCKET, over two series), sigpipe +1
SECOND = (FIRST
          .replace('remote="10.1.2.3"} 10.0', 'remote="10.1.2.3"} 18.0')
          .replace('remote="::1"} 100.0', 'remote="::1"} 102.0')
          .replace('reason="NO_SOCKET",remote="192.0.2.1"} 2.0', 'reason="NO_SOCKET",remote="192.0.2.1"} 4.0')
          .replace('reason="NO_SOCKET",remote="192.0.2.9"} 3.0', 'reason="NO_SOCKET",remote="192.0.2.9"} 5.0')
          .replace('comm="nginx"} 1.0', 'comm="nginx"} 2.0')
          .replace(HEAD, HEAD + 'errnomon_socket_errors_total{comm="redis-cli",errno="ETIMEDOUT",op="recv",'
                                'port="6379",remote="10.9.9.9"} 6.0\n'))


def frames(*texts, elapsed=4.0):
    """The frame after feeding the texts as successive scrapes, `elapsed` seconds apart (fake clock)."""
    tracker = top.Tracker(URL, 1.0)
    frame = None
    for n, text in enumerate(texts):
        frame = tracker.update(top.Result(top.parse(text), None, 1000.0 + n * elapsed, 1.7e9 + n * elapsed))
    return frame


def rows(frame, metric):
    for section, section_rows in frame.sections:
        if section.metric == metric:
            return [(r.cells, r.rate, r.total) for r in section_rows]
    raise KeyError(metric)


def test_parse_keeps_errnomon_samples_with_sorted_labels():
    samples = top.parse(FIRST)
    errors = samples["errnomon_socket_errors_total"]
    key = (("comm", "curl"), ("errno", "ECONNRESET"), ("op", "recv"), ("port", "443"), ("remote", "10.1.2.3"))
    assert errors[key] == 10.0
    assert len(errors) == 3
    assert samples["process_start_time_seconds"] == {(): 1.7e9}
    assert "errnomon_build_info" in samples


def test_rates_over_the_elapsed_time_between_scrapes():
    frame = frames(FIRST, SECOND, elapsed=4.0)
    assert rows(frame, top.SOCKET_ERRORS) == [
        (("ECONNRESET", "recv", "curl", "10.1.2.3", "443"), 2.0, 18.0),       # +8 in 4 s
        (("ETIMEDOUT", "recv", "redis-cli", "10.9.9.9", "6379"), 1.5, 6.0),   # new series: from zero
        (("ECONNREFUSED", "connect", "psql", "::1", "5432"), 0.5, 102.0),     # +2
        (("EPIPE", "send", "nginx", "192.0.2.7", "80"), 0.0, 7.0),
    ]
    # resets sent are shown by reason only: the series of each reason are summed
    assert rows(frame, top.RESETS_SENT) == [(("NO_SOCKET",), 1.0, 9.0), (("TCP_ABORT_ON_CLOSE",), 0.0, 1.0)]
    assert rows(frame, top.SIGPIPE) == [(("nginx", "killed"), 0.25, 2.0)]
    assert rows(frame, top.RESETS_RECEIVED) == [(("curl", "10.1.2.3", "443", "ESTABLISHED"), 0.0, 4.0)]
    assert frame.rates and frame.series == 10 and frame.error is None and frame.warnings == []


def test_rates_follow_the_fake_clock():
    assert rows(frames(FIRST, SECOND, elapsed=0.5), top.SOCKET_ERRORS)[0][1] == 16.0


def test_first_scrape_has_totals_but_no_rates_yet():
    frame = frames(FIRST)
    got = rows(frame, top.SOCKET_ERRORS)
    assert [r[1] for r in got] == [None, None, None]
    assert [r[2] for r in got] == [100.0, 10.0, 7.0]  # by total when there is no rate
    assert not frame.rates
    text = "\n".join(top.render(frame, 100))
    assert "rates appear after the second scrape" in text
    assert "ECONNREFUSED" in text


def test_counter_reset_counts_from_zero():
    after_reset = SECOND.replace('remote="10.1.2.3"} 18.0', 'remote="10.1.2.3"} 3.0')
    got = {r[0][0]: r for r in rows(frames(FIRST, after_reset, elapsed=2.0), top.SOCKET_ERRORS)}
    assert got["ECONNRESET"][1:] == (1.5, 3.0)      # 3 counted since the reset, not -7
    assert got["ECONNREFUSED"][1:] == (1.0, 102.0)  # the others are unaffected


def test_daemon_restart_counts_every_series_from_zero():
    restarted = SECOND.replace("process_start_time_seconds 1.7e+09", "process_start_time_seconds 1.8e+09")
    got = {r[0][0]: r[1] for r in rows(frames(FIRST, restarted, elapsed=2.0), top.SOCKET_ERRORS)}
    assert got == {"ECONNRESET": 9.0, "ECONNREFUSED": 51.0, "EPIPE": 3.5, "ETIMEDOUT": 3.0}


def test_labels_not_shown_are_summed():
    pid_text = FIRST.replace('comm="curl",errno="ECONNRESET",op="recv",port="443",remote="10.1.2.3"} 10.0',
                             'comm="curl",errno="ECONNRESET",op="recv",pid="1",port="443",remote="10.1.2.3"} 6.0\n'
                             'errnomon_socket_errors_total{comm="curl",errno="ECONNRESET",op="recv",pid="2",'
                             'port="443",remote="10.1.2.3"} 4.0')
    pid_text2 = pid_text.replace('pid="2",port="443",remote="10.1.2.3"} 4.0',
                                 'pid="2",port="443",remote="10.1.2.3"} 8.0')
    got = rows(frames(pid_text, pid_text2, elapsed=1.0), top.SOCKET_ERRORS)
    assert got[0] == (("ECONNRESET", "recv", "curl", "10.1.2.3", "443"), 4.0, 14.0)
    assert len(got) == 3


def test_sort_by_rate_then_total():
    rs = [top.Row(("a",), 1.0, 5.0), top.Row(("b",), 3.0, 1.0), top.Row(("c",), 1.0, 50.0),
          top.Row(("d",), 0.0, 500.0), top.Row(("e",), None, 1000.0)]
    assert [r.cells[0] for r in top.sort_rows(rs)] == ["b", "c", "a", "e", "d"]


def test_health_warnings_in_the_header():
    text = (SECOND.replace('probe="sock:sock_send_length"} 1.0', 'probe="sock:sock_send_length"} 0.0')
            .replace('reason="socket_errors_map_full"} 0.0', 'reason="socket_errors_map_full"} 12.0'))
    frame = frames(FIRST, text)
    assert frame.warnings == ["1 probe not attached (sock:sock_send_length)", "12 counts dropped (kernel map full)"]
    lines = top.render(frame, 200)
    assert lines[0].startswith("errnomon top  ") and URL in lines[0] and "10 series" in lines[0]
    assert lines[1] == "! 1 probe not attached (sock:sock_send_length); 12 counts dropped (kernel map full)"
    assert top.render(frames(FIRST, SECOND), 200)[1] == "all probes attached, no counts dropped"


LONG = SECOND + (
    'errnomon_socket_errors_total{comm="averyveryverylo",errno="ECONNABORTED",op="connect",port="65535",'
    'remote="2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"} 123456789.0\n'
    'errnomon_socket_errors_total{comm="\u6f22\u5b57\u6f22\u5b57\u6f22",errno="E1234",op="send",port="1",'
    'remote="backend-servers-in-the-other-datacenter"} 1.0\n')


@pytest.mark.parametrize("width", [40, 80, 200])
def test_every_line_fits_the_width(width):
    frame = frames(FIRST, LONG)
    lines = top.render(frame, width)
    assert lines, "nothing rendered"
    for line in lines:
        assert top.cells(line) <= width, (width, line)
        assert "\n" not in line
    text = "\n".join(lines)
    header = next(line for line in lines if line.startswith("ERRNO"))
    assert "RATE/s" in header  # the rate column is never dropped
    if width == 200:  # room for everything: nothing is shortened
        assert "\u2026" not in "\n".join(lines[2:])
        assert "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff" in text and "averyveryverylo" in text
        assert "TOTAL" in header and "OP" in header and "123456789" in text
    if width == 80:
        assert "TOTAL" in header and "OP" in header and "PORT" in header
        assert "\u2026" in text  # REMOTE and COMM were ellipsized rather than wrapped
    if width == 40:
        row = next(line for line in lines if line.startswith("ECONNRESET"))
        assert row.split()[-1] == "2.00"


def test_widest_columns_are_ellipsized_first():
    frame = frames(FIRST, LONG)
    lines = top.render(frame, 90)
    assert all(top.cells(line) <= 90 for line in lines)
    row = next(line for line in lines if line.startswith("ECONNABORTED")).split()
    # REMOTE (39 wide) is shortened; COMM (15) still fits whole; ERRNO, OP, PORT and numbers are never cut
    assert row[:3] == ["ECONNABORTED", "connect", "averyveryverylo"]
    assert row[3].startswith("2001:db8:") and row[3].endswith("\u2026")
    assert row[4:] == ["65535", "30864197", "123456789"]  # a new series: 123456789 in 4 s


def test_wide_characters_are_counted_as_two_cells():
    frame = frames(FIRST, LONG)
    for width in range(20, 120, 7):
        for line in top.render(frame, width):
            assert top.cells(line) <= width, (width, line)


def test_tiny_widths_still_never_wrap():
    frame = frames(FIRST, LONG)
    for width in (1, 5, 12, 25):
        for line in top.render(frame, width):
            assert top.cells(line) <= width, (width, line)


def test_height_limits_the_main_table():
    many = HEAD + "".join(
        'errnomon_socket_errors_total{comm="c%d",errno="ECONNRESET",op="recv",port="1",remote="10.0.0.%d"} %d.0\n'
        % (i, i, i) for i in range(100)) + FIRST[len(HEAD):]
    lines = top.render(frames(many), 80, height=30)
    assert len(lines) == 30
    assert any(line.startswith("\u2026 ") and line.endswith(" more") for line in lines)
    assert lines[-1].startswith("nginx")  # the lower sections are kept in view
    assert top.render(frames(many), 80, height=30, ascii_only=True)[-1].isascii()


def test_lower_sections_give_way_to_the_main_table_when_short():
    many = HEAD + "".join(
        'errnomon_socket_errors_total{comm="c%d",errno="ECONNRESET",op="recv",port="1",remote="10.0.0.%d"} %d.0\n'
        'errnomon_tcp_resets_received_total{comm="c%d",port="1",remote="10.0.0.%d",state="SYN_SENT"} 1.0\n'
        % (i, i, i, i, i) for i in range(100)) + FIRST[len(HEAD):]
    for height in (20, 24, 40, 60):
        lines = top.render(frames(many), 80, height=height)
        assert len(lines) == height, (height, lines)
        main = [line for line in lines if line.startswith("ECONN")]
        assert len(main) >= max(2, (height - 20) // 2), (height, lines)  # at least half of what is left
        for title in ("Resets received", "Resets sent", "SIGPIPE"):  # every section keeps its title
            assert any(line.startswith(title) for line in lines), (height, title, lines)
    lines = top.render(frames(many), 80, height=12)  # too short for everything: the bottom is cut
    assert len(lines) == 12 and len([line for line in lines if line.startswith("ECONN")]) == 2


@pytest.mark.parametrize("main, lower, room, expected", [
    (4, [1, 5, 0], 20, (None, [1, 5, 0])),  # everything fits
    (100, [5, 5, 1], 20, (10, [5, 4, 1])),  # main keeps half; the lower sections share the other half
    (100, [5, 5, 5], 6, (3, [1, 1, 1])),  # at least 3 main lines, one for each lower section
    (100, [5, 5, 5], 2, (3, [1, 1, 1])),  # not even that: the bottom is cut later
    (2, [5, 50, 5], 8, (2, [2, 2, 2])),  # the main table needs little: the rest is shared
])
def test_budget(main, lower, room, expected):
    assert top.budget(main, lower, room) == expected


def test_control_characters_in_labels_cannot_reach_the_terminal():
    text = FIRST.replace('comm="curl"', 'comm="ev\\u001b[2Jil"'.replace("\\u001b", "\x1b"))
    assert all("\x1b" not in line for line in top.render(frames(text), 120))
    assert top.clean("") == "-" and top.clean("a\x07b") == "a?b" and top.clean("\u00e9", ascii_only=True) == "?"


def test_an_error_keeps_the_last_data_and_says_why():
    tracker = top.Tracker(URL, 1.0)
    tracker.update(top.Result(top.parse(FIRST), None, 1.0, 1.7e9))
    tracker.update(top.Result(top.parse(SECOND), None, 2.0, 1.7e9 + 1))
    frame = tracker.update(top.Result(None, "Connection refused", 3.0, 1.7e9 + 2))
    lines = top.render(frame, 200)
    assert lines[1] == ("! cannot read %s: Connection refused: is errnomon running? pass --url "
                        "(retrying every 1s)" % URL)
    assert any(line.startswith("ECONNRESET") for line in lines)
    # back: rates are over the real time since the last successful scrape
    third = SECOND.replace('remote="10.1.2.3"} 18.0', 'remote="10.1.2.3"} 22.0')
    frame = tracker.update(top.Result(top.parse(third), None, 4.0, 1.7e9 + 3))
    assert frame.error is None
    assert rows(frame, top.SOCKET_ERRORS)[0][1:] == (2.0, 22.0)


def test_before_the_first_answer():
    lines = top.render(top.Frame(URL, 1.0, waiting=True), 80)
    assert lines[1] == "connecting to %s ..." % URL


@pytest.mark.parametrize("given, url", [
    ("http://127.0.0.1:9779/metrics", "http://127.0.0.1:9779/metrics"),
    ("localhost:9779", "http://localhost:9779/metrics"),
    ("http://[::1]:9779/", "http://[::1]:9779/metrics"),
    ("http://h:1/custom/path", "http://h:1/custom/path"),
])
def test_normalize_url(given, url):
    assert top.normalize_url(given) == url


# ------------------------------------------------------------------------------------------------------
# the command: `python -m monitor.cli top ...` subprocesses


def run(*args, env=None, timeout=30):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "monitor.cli", "top", *args], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_once_unreachable_url_exits_2_with_one_line():
    url = "http://127.0.0.1:%d/metrics" % free_port()
    proc = run("--once", "--url", url, "--interval", "0.1")
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "errnomon: error: cannot read %s: Connection refused: is errnomon running? pass --url" % url]


def test_bad_interval_exits_2_with_one_line():
    proc = run("--once", "--interval", "0")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["errnomon: error: --interval 0 is out of range: give 0.1 to 3600 seconds"]


def test_without_a_terminal_and_without_once_it_says_so():
    proc = run("--url", "http://127.0.0.1:%d/metrics" % free_port(), timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["errnomon: error: errnomon top needs a terminal: use --once for plain text"]


class Endpoint:
    """A fake errnomon endpoint: each scrape serves the next text (the last one forever)."""

    def __init__(self, texts, status=200):
        self.texts = list(texts)
        self.status = status
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = (endpoint.texts.pop(0) if len(endpoint.texts) > 1 else endpoint.texts[0]).encode()
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/metrics" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    made = []

    def make(texts, status=200):
        made.append(Endpoint(texts, status))
        return made[-1]
    yield make
    for e in made:
        e.close()


def test_once_prints_one_frame_with_rates(endpoint):
    e = endpoint([FIRST, SECOND])
    proc = run("--once", "--url", e.url, "--interval", "0.2", env={"COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("errnomon top  ") and e.url in lines[0]
    row = next(line for line in lines if line.startswith("ECONNRESET"))
    rate = float(row.split()[-2])
    assert 8 / 5.0 < rate < 8 / 0.19, row  # +8 over roughly 0.2 s (the real clock, however slow the machine)
    assert all(len(line) <= 100 for line in lines)


def test_once_fits_columns_from_the_environment(endpoint):
    e = endpoint([FIRST, LONG])
    proc = run("--once", "--url", e.url, "--interval", "0.1", env={"COLUMNS": "40"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout and all(len(line) <= 40 for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.parametrize("texts, status, reason", [
    (["not found\n"], 404, "HTTP 404 Not Found"),
    (["# TYPE node_load1 gauge\nnode_load1 0.5\n"], 200, "no errnomon metrics there"),
    (["this is { not metrics\n"], 200, "not a Prometheus text exposition"),
])
def test_once_names_what_is_wrong_with_the_endpoint(endpoint, texts, status, reason):
    e = endpoint(texts, status)
    proc = run("--once", "--url", e.url, "--interval", "0.1")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("errnomon: error: cannot read %s: %s" % (e.url, reason)), lines[0]
    assert lines[0].endswith(": is errnomon running? pass --url")


def test_top_needs_no_bcc(endpoint):
    """It runs on machines without bcc: neither bcc nor the loader may be imported, even indirectly."""
    e = endpoint([FIRST, SECOND])
    code = ("import sys; sys.modules['bcc'] = None\n"  # any 'import bcc' now raises ImportError
            "from monitor import cli\n"
            "rc = cli.main(['top', '--once', '--interval', '0.1', '--url', %r])\n"
            "bad = [m for m in ('bcc', 'monitor.loader', 'monitor.daemon', 'monitor.bpfmap') "
            "if sys.modules.get(m) is not None]\n"
            "assert not bad, bad\n"
            "sys.exit(rc)\n" % e.url)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "ECONNRESET" in proc.stdout


def test_daemon_help_mentions_top_and_top_has_its_own_help():
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and "errnomon top" in proc.stdout
    proc = run("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: errnomon top ") and "--url" in proc.stdout and "--interval" in proc.stdout
