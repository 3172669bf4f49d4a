"""--web.config.file end to end: a real errnomon serving over TLS with a required client certificate and basic
auth, scraped by a real Prometheus (Debian's, as in test_prometheus_e2e.py) with the scrape job's tls_config
and basic_auth. Beside it, jobs that lack one credential each must show up == 0 with the reason. Ports
19700-19799; everything made here is under a temporary directory named tlsh*, removed at the end."""

import base64
import os
import shutil
import ssl
import tempfile
import time
from pathlib import Path

import pytest

from tests.unit.tls_certs import PASSWORD, Certs, free_port, hashed

from .conftest import TEST_CONFIG, Daemon, _require_environment
from .test_prometheus_e2e import PROMETHEUS, Prometheus, wait_until

pytestmark = pytest.mark.bpf

WEB_CONFIG = """tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  client_allowed_sans: [prometheus.tlsh]
basic_auth_users:
  prometheus: {hash}
http_server_config:
  http2: false
"""


def test_prometheus_scrapes_errnomon_over_tls_with_client_certificate_and_basic_auth():
    _require_environment()
    assert os.access(PROMETHEUS, os.X_OK), "%s not found: run 'make test'" % PROMETHEUS
    certs = Certs()
    work = Path(tempfile.mkdtemp(prefix="tlsh"))
    daemon = prom = None
    try:
        web_config = certs.path("web.yml")
        with open(web_config, "w") as f:
            f.write(WEB_CONFIG.format(hash=hashed()))
        context = ssl.create_default_context(cafile=certs.path("ca.crt"))
        context.load_cert_chain(certs.path("client.crt"), certs.path("client.key"))
        auth = {"Authorization": "Basic " + base64.b64encode(("prometheus:" + PASSWORD).encode()).decode()}
        port = free_port()
        daemon = Daemon(work, TEST_CONFIG, name="tlsh-errnomon", args=["--web.config.file=" + web_config],
                        port=port, scheme="https", ssl_context=context, headers=auth)
        assert daemon.scrape()  # the test's own client gets in with the same credentials
        target = "127.0.0.1:%d" % port
        tls = {"ca_file": certs.path("ca.crt"), "cert_file": certs.path("client.crt"),
               "key_file": certs.path("client.key")}
        credentials = {"username": "prometheus", "password": PASSWORD}

        def job(name, tls_config, basic_auth):
            out = {"job_name": name, "scheme": "https", "static_configs": [{"targets": [target]}],
                   "tls_config": tls_config}
            if basic_auth:
                out["basic_auth"] = basic_auth
            return out
        prom = Prometheus(work, jobs=[
            job("errnomon", tls, credentials),
            job("no_password", tls, None),
            job("wrong_password", tls, dict(credentials, password="wrong")),
            job("no_client_cert", {"ca_file": certs.path("ca.crt")}, credentials),
            job("other_client_cert", dict(tls, cert_file=certs.path("stranger.crt"),
                                          key_file=certs.path("stranger.key")), credentials),
        ], port=free_port(taken={port}))
        deadline = time.monotonic() + 60
        prom.wait_ready(deadline)
        wait_until("errnomon's metrics in Prometheus over TLS", lambda: (
            prom.value('up{job="errnomon"}') == 1
            and prom.value('count(errnomon_probe_attached{job="errnomon"})')), deadline)

        def refused():
            targets = {t["labels"]["job"]: t for t in prom.api("targets")["activeTargets"]}
            errors = {job: (t["health"], t["lastError"]) for job, t in targets.items() if job != "errnomon"}
            assert all(health == "down" for health, _ in errors.values()), errors
            return errors
        errors = wait_until("the jobs without every credential to be down", refused, deadline)
        print("tls e2e: refused scrapes: %s" % errors)
        for job in ("no_password", "wrong_password"):
            assert errors[job][1] == "server returned HTTP status 401 Unauthorized", errors
        for job in ("no_client_cert", "other_client_cert"):
            assert errors[job][1], errors  # a TLS failure: the connection ends without an HTTP answer
            assert "401" not in errors[job][1], errors
        assert prom.value('up{job="errnomon"}') == 1
        log = daemon.output()
        assert "web config %s: TLS (client certificates: RequireAndVerifyClientCert, allowed SANs: 1), " \
               "basic auth for 1 users" % web_config in log, log
        assert "serving metrics on 127.0.0.1:%d/metrics over TLS" % port in log, log
    finally:
        if prom is not None:
            prom.stop()
        if daemon is not None:
            rc = daemon.stop()
            assert rc == 0, "errnomon did not exit cleanly (%s):\n%s" % (rc, daemon.output())
        shutil.rmtree(work, ignore_errors=True)
        certs.remove()
