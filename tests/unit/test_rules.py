"""deploy/prometheus: promtool validates and unit-tests the rules; every alert is documented in docs/runbook.md.

promtool comes with Debian's prometheus package, which `make test` installs (scripts/setup.sh --test). Without
it these tests fail, they do not skip.
"""

import os
import re
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROM_DIR = os.path.join(REPO, "deploy", "prometheus")
RULES_PATH = os.path.join(PROM_DIR, "rules.yml")
RULES_TEST_PATH = os.path.join(PROM_DIR, "rules_test.yml")
SCRAPE_PATH = os.path.join(PROM_DIR, "scrape.yml")
RUNBOOK_PATH = os.path.join(REPO, "docs", "runbook.md")
RUNBOOK_URL = "https://github.com/errnomon/errnomon/blob/main/docs/runbook.md#"
SEVERITIES = ("critical", "warning", "info")
JOB = 'job="errnomon"'


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool not found: run 'make test' (scripts/setup.sh --test installs Debian's prometheus package)"
    return path


def run_promtool(*args):
    r = subprocess.run([promtool(), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def load_rules(path=RULES_PATH):
    with open(path) as f:
        return yaml.safe_load(f)


def all_rules(path=RULES_PATH):
    return [rule for group in load_rules(path)["groups"] for rule in group["rules"]]


def recording_rules(path=RULES_PATH):
    return [r for r in all_rules(path) if "record" in r]


def alerting_rules(path=RULES_PATH):
    return [r for r in all_rules(path) if "alert" in r]


# --- PromQL selector convention ------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_DURATION = re.compile(r"\[[^\]]*\]")


def _is_series_name(name):
    """Names of errnomon's, Prometheus's and the recording rules' series (not functions or label names)."""
    return (name.startswith(("errnomon_", "process_", "scrape_")) or name == "up"
            or (":" in name and not name.startswith(":")))


def selectors_without_job(expr):
    """Every series selector in a PromQL expression that does not match job="errnomon"."""
    # Blank out string literals and range/offset brackets, keeping offsets, so names inside them are ignored.
    masked = _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)
    masked = _DURATION.sub(lambda m: " " * len(m.group()), masked)
    bad = []
    for m in _IDENT.finditer(masked):
        name = m.group()
        if not _is_series_name(name):
            continue
        rest = masked[m.end():].lstrip()
        if not rest.startswith("{"):
            bad.append(name)
            continue
        start = m.end() + (len(masked[m.end():]) - len(rest))
        end = masked.index("}", start)
        if JOB not in expr[start:end + 1].replace(" ", ""):
            bad.append(name + expr[start:end + 1])
    return bad


def test_selector_checker_itself():
    assert selectors_without_job('sum by (comm) (rate(errnomon_x_total{job="errnomon", a="b"}[5m]))') == []
    assert selectors_without_job('rate(errnomon_x_total{a="b"}[5m])') == ['errnomon_x_total{a="b"}']
    assert selectors_without_job("up == 0") == ["up"]
    assert selectors_without_job('a:b:rate5m{job="errnomon"} > 0.2 and on (instance, job) x:y:z') == ["x:y:z"]
    assert selectors_without_job('count(x{metric="errnomon_y_total", job="errnomon"})') == []


# --- promtool ---------------------------------------------------------------------------------------------------

def test_promtool_check_rules():
    code, out = run_promtool("check", "rules", RULES_PATH)
    assert code == 0 and "SUCCESS" in out, out


def test_promtool_test_rules():
    code, out = run_promtool("test", "rules", RULES_TEST_PATH)
    assert code == 0 and "SUCCESS" in out, out


def test_scrape_example_is_a_valid_config():
    code, out = run_promtool("check", "config", SCRAPE_PATH)
    assert code == 0 and "SUCCESS" in out, out
    with open(SCRAPE_PATH) as f:
        jobs = yaml.safe_load(f)["scrape_configs"]
    assert [j["job_name"] for j in jobs] == ["errnomon"]
    targets = [t for sc in jobs[0]["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(":9779") for t in targets), targets


# --- rules.yml structure ----------------------------------------------------------------------------------------

def test_every_selector_matches_job_errnomon():
    bad = {r.get("record") or r.get("alert"): selectors_without_job(r["expr"]) for r in all_rules()}
    assert not {k: v for k, v in bad.items() if v}, "selectors without %s: %s" % (JOB, bad)


def test_recording_rule_names_follow_conventions():
    names = [r["record"] for r in recording_rules()]
    assert len(names) == len(set(names)), names
    for rule in recording_rules():
        name = rule["record"]
        m = re.fullmatch(r"([a-z_]+):(errnomon_[a-z_]+):([a-z0-9_]+)", name)
        assert m, "%s: not level:metric:operations" % name
        level, metric, ops = m.groups()
        # the level names the labels the rule keeps: instance always, job implicitly
        kept = set(level.split("_"))
        assert "instance" in kept, name
        by = re.search(r"sum by \(([^)]*)\)", rule["expr"])
        if by:  # a direct aggregation: its labels are exactly the level's, plus job
            assert {s.strip() for s in by.group(1).split(",")} == kept | {"job"}, name
        assert not metric.endswith("_total"), "%s: strip _total after rate()" % name
        assert ops in ("rate5m", "ratio_rate5m"), name
        if "rate(" in rule["expr"]:
            assert "[5m]" in rule["expr"], name


def test_issue_recording_rules_exist():
    names = {r["record"] for r in recording_rules()}
    for required in (
        "instance_comm_errno_op:errnomon_socket_errors:rate5m",       # per process
        "instance_remote_port_errno:errnomon_socket_errors:rate5m",   # per peer
        "instance_comm_errno:errnomon_connect_failures:rate5m",
        "instance_remote_port_errno:errnomon_connect_failures:rate5m",
        "instance_comm:errnomon_tcp_peer_resets_per_peer_closes:ratio_rate5m",          # issue 10: who ends
        "instance_remote_port:errnomon_tcp_peer_resets_per_peer_closes:ratio_rate5m",
        "instance_comm:errnomon_tcp_local_resets_per_local_closes:ratio_rate5m",
        "instance_remote_port:errnomon_tcp_local_resets_per_local_closes:ratio_rate5m",
    ):
        assert required in names


def test_alerts_have_severity_summary_description_and_runbook():
    alerts = alerting_rules()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), names
    for a in alerts:
        assert a.get("labels", {}).get("severity") in SEVERITIES, a["alert"]
        annotations = a.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), "%s has no %s" % (a["alert"], key)
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_URL), url
        # one runbook section per alert, named after it
        assert url[len(RUNBOOK_URL):] == a["alert"].lower(), url


def test_issue_alerts_exist():
    exprs = {a["alert"]: a["expr"] for a in alerting_rules()}
    assert set(exprs) == {
        "ErrnomonSigpipeKilled", "ErrnomonProcessResetRatioHigh", "ErrnomonPeerResetRatioHigh",
        "ErrnomonPeerTimeouts", "ErrnomonConnectFailures", "ErrnomonDown", "ErrnomonProbeNotAttached",
        "ErrnomonProbeMissed", "ErrnomonCountsDropped", "ErrnomonSeriesOverflow", "ErrnomonListenQueueOverflow",
        "ErrnomonResetsAfterIdle",
    }
    assert 'action="killed"' in exprs["ErrnomonSigpipeKilled"]
    assert 'up{job="errnomon"} == 0' in exprs["ErrnomonDown"]
    assert 'errno="ETIMEDOUT"' in exprs["ErrnomonPeerTimeouts"]
    assert "errnomon_connect_failures:rate5m" in exprs["ErrnomonConnectFailures"]  # per peer, port, errno
    assert "errnomon_probe_missed_total" in exprs["ErrnomonProbeMissed"]
    for name in ("ErrnomonProcessResetRatioHigh", "ErrnomonPeerResetRatioHigh"):  # minimum-traffic guard
        assert "peer_closes:rate5m" in exprs[name], name


def test_every_alert_is_unit_tested():
    with open(RULES_TEST_PATH) as f:
        tests = yaml.safe_load(f)["tests"]
    firing, silent = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {a["alert"] for a in alerting_rules()}
    assert names - firing == set(), "alerts never shown to fire: %s" % (names - firing)
    assert names - silent == set(), "alerts never shown to stay silent: %s" % (names - silent)


# --- docs/runbook.md ----------------------------------------------------------------------------------------------

def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading (without the -1, -2 suffixes of duplicates)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    with open(path) as f:
        text = f.read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def test_github_anchor():
    assert github_anchor("ErrnomonSigpipeKilled") == "errnomonsigpipekilled"
    assert github_anchor("When `comm` is empty") == "when-comm-is-empty"
    assert github_anchor("ECONNRESET: connection reset by peer") == "econnreset-connection-reset-by-peer"


def test_each_runbook_anchor_exists():
    found = anchors(RUNBOOK_PATH)
    for a in alerting_rules():
        anchor = a["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in found, "%s: no section #%s in docs/runbook.md" % (a["alert"], anchor)


def test_runbook_has_no_section_for_a_missing_alert():
    with open(RUNBOOK_PATH) as f:
        sections = re.findall(r"^## +(Errnomon\w+)", f.read(), flags=re.M)
    assert sorted(sections) == sorted(a["alert"] for a in alerting_rules())


def test_runbook_links_resolve():
    """Relative links of docs/runbook.md: the files exist, and so do their anchors (Markdown files)."""
    with open(RUNBOOK_PATH) as f:
        text = f.read()
    base = os.path.dirname(RUNBOOK_PATH)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        path = os.path.normpath(os.path.join(base, target)) if target else RUNBOOK_PATH
        assert os.path.exists(path), "broken link %s" % link
        if anchor:
            assert path.endswith(".md"), link
            assert anchor in anchors(path), "broken anchor %s" % link


@pytest.mark.parametrize("section", ["## ErrnomonSigpipeKilled", "## ErrnomonPeerTimeouts",
                                     "## ErrnomonConnectFailures", "## ErrnomonProcessResetRatioHigh",
                                     "## ErrnomonProbeMissed"])
def test_runbook_sections_give_promql_and_remedy(section):
    with open(RUNBOOK_PATH) as f:
        text = f.read()
    body = text.split(section + "\n", 1)[1].split("\n## ", 1)[0]
    assert "```promql" in body and "**What to change.**" in body and "errors.md" in body, section
