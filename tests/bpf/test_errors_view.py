"""GET /errors as a person sees it: the HTML page in a real browser engine (Debian's chromium-headless-shell,
which `make test` installs), `errnomon errors` and `errnomon top --once`, all against the test daemon after
real errors. Ground truth: each generating program's own errno and its own comm."""

import html.parser
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse

import pytest

from . import scenarios

pytestmark = pytest.mark.bpf

BROWSER = "chromium-headless-shell"


class Table(html.parser.HTMLParser):
    """The rows of table#events in a DOM chromium serialized: [(data-seq, [cell texts])]."""

    def __init__(self):
        super().__init__()
        self.rows, self.inside, self.row, self.cell = [], False, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "events":
            self.inside = True
        elif self.inside and tag == "tr" and "data-seq" in attrs:
            self.row = (attrs["data-seq"], [])
        elif self.row is not None and tag == "td":
            self.cell = []
        elif self.cell is not None and tag == "br":
            self.cell.append(" ")

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.row[1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
        elif tag == "table":
            self.inside = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def browse(url):
    """The DOM chromium built from url, serialized (--dump-dom): what a browser shows, after its own parse."""
    path = shutil.which(BROWSER)
    assert path, "%s is needed: 'make test' installs it (scripts/setup.sh --test)" % BROWSER
    home = "/tmp/errnomon-chromium-%d" % os.getpid()
    r = subprocess.run([path, "--no-sandbox", "--disable-gpu", "--user-data-dir=" + home, "--dump-dom", url],
                       capture_output=True, text=True, timeout=60)
    shutil.rmtree(home, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def refused_connect(prefix):
    """One refused connect from a child of its own: (comm, port)."""
    r = scenarios.refused(prefix, socket.AF_INET)
    assert r["errnos"]["cli"] == ["ECONNREFUSED"]
    return r["comms"]["cli"], r["port"]


def wait_counted(daemon, comm, port):
    daemon.wait_for("errnomon_connect_failures_total",
                    [(dict(comm=comm, errno="ECONNREFUSED", remote="127.0.0.1", port=str(port)), 1)], comm=comm)


def base(daemon):
    return daemon.url.rsplit("/", 1)[0]


def rows_of(dom, comm):
    t = Table()
    t.feed(dom)
    return [(int(seq), cells) for seq, cells in t.rows if cells[1].split("[")[0] == comm]


def test_the_page_in_a_browser_shows_the_errors_newest_first_with_their_cause(daemon):
    """A refused connect is two events: the RST received in SYN_SENT, then the failed connect."""
    (first, port1), (second, port2) = refused_connect("hv1"), refused_connect("hv2")
    for comm, port in ((first, port1), (second, port2)):
        wait_counted(daemon, comm, port)
    dom = browse("%s/errors?%s" % (base(daemon), urllib.parse.urlencode({"limit": 1000})))
    assert "<title>errnomon: recent errors</title>" in dom  # HTML by the browser's own Accept header
    one, two = rows_of(dom, first), rows_of(dom, second)
    assert [c[2] for _, c in two] == [c[2] for _, c in one] == ["connect ECONNREFUSED", "RST received"]
    seqs = [seq for seq, _ in two + one]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    for rows, port in ((one, port1), (two, port2)):
        cells = rows[0][1]
        assert cells[4] == "127.0.0.1:%d" % port and rows[1][1][4] == "127.0.0.1:%d" % port
        assert cells[-1] == "connection refused: nothing listens on 127.0.0.1:%d" % port, cells
        assert rows[1][1][5] == "SYN_SENT"
    # the page's own filter form asks the same endpoint: one process only
    dom = browse("%s/errors?%s" % (base(daemon), urllib.parse.urlencode({"comm": first, "format": "html"})))
    t = Table()
    t.feed(dom)
    assert {cells[1].split("[")[0] for _, cells in t.rows} == {first}
    assert 'value="%s"' % first in dom


def test_errnomon_errors_and_top_show_the_same_events(daemon):
    comm, port = refused_connect("hc")
    wait_counted(daemon, comm, port)
    cmd = [sys.executable, "-m", "monitor.cli"]  # as `errnomon`, any user
    r = subprocess.run(cmd + ["errors", "--url", "%s/errors" % base(daemon), "--comm", comm, "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["comm"], e["kind"], e["errno"], e["remote"], e["remote_port"]) for e in events] == [
        (comm, "reset_received", "ECONNREFUSED", "127.0.0.1", port),
        (comm, "connect_failed", "ECONNREFUSED", "127.0.0.1", port)]
    r = subprocess.run(cmd + ["errors", "--url", "%s/errors" % base(daemon), "--comm", comm],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all("%s[" % comm in line for line in lines)
    assert " connect ECONNREFUSED 127.0.0.1:" in lines[1] and " > 127.0.0.1:%d " % port in lines[1]
    assert lines[1].endswith(" -- connection refused: nothing listens on 127.0.0.1:%d" % port)
    r = subprocess.run(cmd + ["top", "--once", "--interval", "0.2", "--url", daemon.url], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, COLUMNS="200", LINES="60"))
    assert r.returncode == 0, r.stderr
    assert "Latest errors" in r.stdout
