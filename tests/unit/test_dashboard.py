"""deploy/grafana: the dashboard's structure, its queries, and the provisioning examples.

The helpers here (panel queries with template variables substituted, variable queries) are also used by the
end-to-end test tests/bpf/test_prometheus_e2e.py, which runs every query against a real Prometheus.
"""

import json
import os
import re
import subprocess

import pytest
import yaml

from .test_rules import REPO, promtool, recording_rules, selectors_without_job

GRAFANA_DIR = os.path.join(REPO, "deploy", "grafana")
DASHBOARD_PATH = os.path.join(GRAFANA_DIR, "errnomon.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
QUERY_VARIABLES = ("instance", "comm", "errno")

# Grafana's built-in variables, as the end-to-end test substitutes them (1 s scrapes there).
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load_dashboard():
    with open(DASHBOARD_PATH) as f:
        return json.load(f)


DASHBOARD = load_dashboard()


def panels(dashboard=DASHBOARD):
    """Every panel, including those nested in collapsed rows."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def substitute(expr, values=None):
    """Replace template variables: values[name] for the dashboard's own (default ".*", Grafana's All), and the
    built-in intervals. An unknown variable is an error."""
    values = values or {}

    def repl(m):
        name = m.group(1) or m.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in QUERY_VARIABLES:
            return values.get(name, ".*")
        raise AssertionError("unknown template variable $%s in %s" % (name, expr))

    return _VARIABLE.sub(repl, expr)


def panel_queries(values=None, dashboard=DASHBOARD):
    """[(panel title, refId, expr with variables substituted, instant)] for every target of every panel."""
    return [(p["title"], t["refId"], substitute(t["expr"], values), bool(t.get("instant")))
            for p in panels(dashboard) for t in p.get("targets", [])]


def variables(dashboard=DASHBOARD):
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(var):
    q = var["query"]
    return q["query"] if isinstance(q, dict) else q


def label_values(var, values=None):
    """(series selector, label) of a label_values(selector, label) variable query, variables substituted."""
    m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", variable_query(var))
    assert m, "%s: not label_values(selector, label): %s" % (var["name"], variable_query(var))
    return substitute(m.group(1), values), m.group(2)


# --- dashboard ---------------------------------------------------------------------------------------------------

def test_identity():
    assert DASHBOARD["uid"] == "errnomon"
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 39
    assert DASHBOARD["title"]
    assert DASHBOARD.get("id") is None, "a provisioned dashboard must not carry a database id"
    assert "__inputs" not in DASHBOARD, "export for file provisioning, not 'for sharing externally'"


def test_template_variables():
    v = variables()
    ds = v["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in QUERY_VARIABLES:
        var = v[name]
        assert var["type"] == "query", name
        assert var["datasource"] == DATASOURCE, name
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".*", name
        selector, label = label_values(var)
        assert label == name
        assert not selectors_without_job(selector), selector
        if name != "instance":
            assert 'instance=~".*"' in selector, "%s should follow $instance" % name


def test_every_panel_uses_the_datasource_variable():
    for p in panels():
        assert p.get("datasource") == DATASOURCE, p["title"]
        assert p.get("targets"), "%s has no targets" % p["title"]
        for t in p["targets"]:
            assert t.get("datasource") == DATASOURCE, p["title"]
            assert t.get("expr", "").strip(), "%s: target %s has no expr" % (p["title"], t.get("refId"))
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_panel_ids_unique():
    ids = [p["id"] for p in panels()]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), ids
    titles = [p["title"] for p in panels()]
    assert len(titles) == len(set(titles)), titles


def test_grid_positions_set_and_not_overlapping():
    boxes = []
    for p in panels():
        g = p.get("gridPos")
        assert g and all(isinstance(g.get(k), int) for k in "xywh"), p["title"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0, p["title"]
        assert g["x"] + g["w"] <= GRID_WIDTH, p["title"]
        boxes.append((p["title"], g))
    for i, (a, ga) in enumerate(boxes):
        for b, gb in boxes[i + 1:]:
            overlap = (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                       and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"])
            assert not overlap, "%r overlaps %r" % (a, b)


def test_queries_follow_the_selector_convention_and_the_variables():
    for p in panels():
        for t in p["targets"]:
            expr = t["expr"]
            assert not selectors_without_job(expr), (p["title"], selectors_without_job(expr))
            assert 'instance=~"$instance"' in expr, "%s ignores $instance" % p["title"]
            substitute(expr)  # no unknown variables


def test_required_panels():
    exprs = [t["expr"] for p in panels() for t in p["targets"]]

    def has(*needles):
        return any(all(n in e for n in needles) for e in exprs)

    assert has("sum by (errno, op)", "errnomon_socket_errors")
    assert has("topk(", "comm", "errnomon_socket_errors")
    assert has("topk(", "remote, port", "errnomon_socket_errors")
    assert has("instance_comm:errnomon_tcp_resets_received_per_connection_ends:ratio_rate5m")
    assert has("instance_remote_port:errnomon_tcp_resets_received_per_connection_ends:ratio_rate5m")
    assert has("by (state)", "errnomon_tcp_resets_received")
    assert has("by (reason)", "errnomon_tcp_resets_sent")
    assert has("errnomon_sigpipe_total", 'action="killed"')
    assert has('errno="ETIMEDOUT"')
    assert has("by (instance, remote, port, errno)", "errnomon_connect_failures")
    assert has("by (instance, comm, errno)", "errnomon_connect_failures")
    assert has("errnomon_probe_missed_total")
    assert has("errnomon_probe_attached")
    assert has("errnomon_dropped_total")
    assert has("errnomon_series_overflow_total")
    assert has("scrape_duration_seconds")


def test_recording_rules_used_exist_and_are_preferred():
    records = {r["record"] for r in recording_rules()}
    used = set()
    for p in panels():
        for t in p["targets"]:
            for name in re.findall(r"[a-z_]+:errnomon_[a-z_]+:[a-z0-9_]+", t["expr"]):
                assert name in records, "%s uses %s, which rules.yml does not record" % (p["title"], name)
                used.add(name)
    assert len(used) >= 8, used
    # the reset ratio is never recomputed from the raw counters in a panel
    for p in panels():
        for t in p["targets"]:
            assert "errnomon_tcp_fins_sent_total" not in t["expr"], p["title"]


def test_queries_are_valid_promql():
    """promtool parses every panel and variable query (as recording rules of a throwaway rule file)."""
    rules = [{"record": "dashboard:panel_%d:%s" % (i, ref.lower()), "expr": expr}
             for i, (_, ref, expr, _) in enumerate(panel_queries())]
    rules += [{"record": "dashboard:variable:%s" % name, "expr": label_values(var)[0]}
              for name, var in variables().items() if name in QUERY_VARIABLES]
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "errnomon-dashboard-rules-%d.yml" % os.getpid())
    with open(path, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    try:
        r = subprocess.run([promtool(), "check", "rules", path], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(path)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("expr, expected", [
    ('rate(x{instance=~"$instance"}[$__rate_interval])', 'rate(x{instance=~".*"}[1m])'),
    ('x{comm=~"${comm}", errno=~"$errno"}', 'x{comm=~".*", errno=~".*"}'),
    ('x{comm=~"${comm:regex}"}[$__interval]', 'x{comm=~".*"}[15s]'),
])
def test_substitute(expr, expected):
    assert substitute(expr) == expected


# --- provisioning ----------------------------------------------------------------------------------------------

def test_provisioning_examples():
    with open(os.path.join(GRAFANA_DIR, "provisioning", "dashboards.yml")) as f:
        dashboards = yaml.safe_load(f)
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    with open(os.path.join(GRAFANA_DIR, "provisioning", "datasource.yml")) as f:
        datasources = yaml.safe_load(f)
    assert datasources["apiVersion"] == 1
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"].startswith("http")
    assert ds["jsonData"]["timeInterval"], "Grafana needs the scrape interval for $__rate_interval"
