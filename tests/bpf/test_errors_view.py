"""GET /errors as a person sees it: the HTML page in a real browser engine (Debian's chromium-headless-shell,
which `make test` installs), `errnomon errors` and `errnomon top --once`, all against the test daemon after
real errors. Ground truth: each generating program's own errno and its own comm."""

import html.parser
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


def refused_connects(prefix, n):
    """n refused connects, each from its own child named by the scenario: [(comm, port)]."""
    out = []
    for _ in range(n):
        r = scenarios.refused(prefix, socket.AF_INET)
        assert r["errnos"]["cli"] == ["ECONNREFUSED"]
        out.append((r["comms"]["cli"], r["port"]))
    return out


def wait_events(daemon, comm, n):
    daemon.wait_for("errnomon_connect_failures_total", [(dict(comm=comm, errno="ECONNREFUSED"), n)], comm=comm)


def base(daemon):
    return daemon.url.rsplit("/", 1)[0]


def test_the_page_in_a_browser_shows_the_errors_newest_first_with_their_cause(daemon):
    (first, port1), (second, port2) = refused_connects("hv", 2)
    for comm in (first, second):
        wait_events(daemon, comm, 1)
    dom = browse("%s/errors?%s" % (base(daemon), urllib.parse.urlencode({"limit": 1000})))
    assert "<title>errnomon: recent errors</title>" in dom  # HTML by the browser's own Accept header
    t = Table()
    t.feed(dom)
    mine = [(int(seq), cells) for seq, cells in t.rows if cells[1].split("[")[0] in (first, second)]
    assert [c[1].split("[")[0] for _, c in mine] == [second, first]  # newest first
    assert mine[0][0] > mine[1][0]
    for (_, cells), port in zip(mine, (port2, port1)):
        assert cells[2] == "connect ECONNREFUSED"
        assert cells[4] == "127.0.0.1:%d" % port
        assert "refused" in cells[-1] and "127.0.0.1:%d" % port in cells[-1], cells
    # the page's own filter form asks the same endpoint: one process only
    dom = browse("%s/errors?%s" % (base(daemon), urllib.parse.urlencode({"comm": first, "format": "html"})))
    t = Table()
    t.feed(dom)
    assert [cells[1].split("[")[0] for _, cells in t.rows] == [first]
    assert 'value="%s"' % first in dom


def test_errnomon_errors_and_top_show_the_same_events(daemon):
    ((comm, port),) = refused_connects("hc", 1)
    wait_events(daemon, comm, 1)
    cmd = [sys.executable, "-m", "monitor.cli"]
    r = subprocess.run(cmd + ["errors", "--url", "%s/errors" % base(daemon), "--comm", comm, "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    import json
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["comm"], e["kind"], e["errno"], e["remote"], e["remote_port"]) for e in events] == [
        (comm, "connect_failed", "ECONNREFUSED", "127.0.0.1", port)]
    r = subprocess.run(cmd + ["errors", "--url", "%s/errors" % base(daemon), "--comm", comm],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    assert "%s[" % comm in r.stdout and "connect ECONNREFUSED" in r.stdout and "-- " in r.stdout
    r = subprocess.run(cmd + ["top", "--once", "--interval", "0.2", "--url", daemon.url], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, COLUMNS="200", LINES="60"))
    assert r.returncode == 0, r.stderr
    assert "Latest errors" in r.stdout
