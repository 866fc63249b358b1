"""Monitoring (issue 12): the Grafana dashboards against the stack's real Prometheus.

No Grafana image can be built offline here, so the scenario provisions Grafana's files only
(grafana_container_enabled false) unless an image archive is given (MMO_GRAFANA_IMAGE_ARCHIVE):
every panel query of every dashboard is run against the real Prometheus, as Grafana would
run it (a range query); it must answer, and return series wherever every metric it reads
exists in this stack. The provisioned files on the host are the role's, byte for byte.
"""
import glob
import hashlib
import json
import os
import re
import shlex
import urllib.parse

import pytest

PROMETHEUS = "mmo-prometheus"
NETWORK = "mmo-internal"
GRAFANA = "mmo-grafana"
CONFIG_DIR = "/etc/multimodel/grafana"
DASHBOARD_DIR = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."), "roles", "grafana", "files",
                             "dashboards")
# Every selector of a panel query carries its matchers (tests/unit/monitoring/test_dashboards.py).
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
# What Grafana puts for $__rate_interval with a 5 s scrape interval is 20 s; a minute is safe.
RATE_INTERVAL = "1m"
# Metrics this stack always exports: the data check below must not pass vacuously.
ALWAYS_THERE = ['up{job="llama"}', 'llamacpp:prompt_tokens_total{job="llama"}',
                'llamacpp:requests_deferred{job="llama"}', 'mmo_http_requests_total{job="backend"}',
                'mmo_query_latency_seconds_bucket{job="backend"}', 'caddy_reverse_proxy_upstreams_healthy{job="caddy"}',
                'redis_up{job="redis"}', 'redis_memory_max_bytes{job="redis"}', 'node_cpu_seconds_total{job="node"}',
                'node_filesystem_avail_bytes{job="node"}']


# Run on the host: POSTs each (path, params) to Prometheus (the host reaches it on the internal
# network's bridge), prints the answers as one JSON list. One call for many queries.
BATCH = """
import json, sys, urllib.parse, urllib.request
out = []
for path, params in json.loads(sys.argv[2]):
    body = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(sys.argv[1] + path, data=body, timeout=30) as answer:
        out.append(json.load(answer))
print(json.dumps(out))
"""


def prometheus(host, requests):
    """The `data` of each (path, params) request to Prometheus' HTTP API, in order."""
    address = host.check_output(
        f"docker inspect -f '{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}' {PROMETHEUS}")
    out = host.check_output(f"python3 -c {shlex.quote(BATCH)} http://{address}:9090 {shlex.quote(json.dumps(requests))}")
    answers = json.loads(out)
    assert [a["status"] for a in answers] == ["success"] * len(requests), answers
    return [a["data"] for a in answers]


def series_counts(host, selectors):
    """{selector: how many series it has now}."""
    selectors = sorted(set(selectors))
    data = prometheus(host, [("/api/v1/query", {"query": f"count({s})"}) for s in selectors])
    return {s: int(float(d["result"][0]["value"][1])) if d["result"] else 0 for s, d in zip(selectors, data)}


def dashboards():
    paths = sorted(glob.glob(os.path.join(DASHBOARD_DIR, "*.json")))
    assert len(paths) == 5, paths
    for path in paths:
        with open(path, encoding="utf-8") as source:
            yield os.path.basename(path), json.load(source)


def panel_queries():
    return [(name, panel["title"], target["refId"], target["expr"])
            for name, dashboard in dashboards() for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_stack_exports_the_metrics_the_dashboards_are_about(host):
    counts = series_counts(host, ALWAYS_THERE)
    missing = [selector for selector in ALWAYS_THERE if counts[selector] == 0]
    assert not missing, f"no series in Prometheus for {missing}"


def test_every_panel_query_answers_with_data_where_its_metrics_exist(host, report):
    [now] = prometheus(host, [("/api/v1/query", {"query": "time()"})])
    end = float(now["result"][1])
    queries = [(name, title, ref, expr.replace("$__rate_interval", RATE_INTERVAL))
               for name, title, ref, expr in panel_queries()]
    # As Grafana asks: a range query over the last five minutes.
    answers = prometheus(host, [("/api/v1/query_range", {"query": q, "start": end - 300, "end": end, "step": 15})
                                for dummy, dummy, dummy, q in queries])
    counts = series_counts(host, [f"{m}{{{matchers}}}" for *dummy, q in queries for m, matchers in SELECTOR.findall(q)])
    failures, empty = [], []
    for (name, title, ref, query), data in zip(queries, answers):
        assert data["resultType"] == "matrix", (name, title)
        absent = [f"{m}{{{matchers}}}" for m, matchers in SELECTOR.findall(query) if counts[f"{m}{{{matchers}}}"] == 0]
        series = len(data["result"])
        report("Grafana panel queries against Prometheus (app_tier)", ["dashboard", "panel", "ref", "series", "note"],
               [name, title, ref, str(series), ("not in this stack: " + ", ".join(absent)) if absent else ""])
        if absent:
            empty.append((name, title, absent))
        elif series == 0:
            failures.append(f"{name} / {title} ({ref}): no series, though its metrics exist: {query}")
    assert not failures, "\n".join(failures)
    # Only metrics that this stack may lack at the moment can leave a panel empty: error
    # answers, failovers, evictions, backups not run yet.
    allowed = re.compile(r'status=~"(5|\[45\])\.\."|mmo_upstream_|mmo_cache_errors|mmo_ws_queries|redis_evicted|mmo_backup_'
                         r'|redis_db_keys')
    unexpected = [(name, title, absent) for name, title, absent in empty
                  if not all(allowed.search(selector) for selector in absent)]
    assert not unexpected, f"panels without data whose metrics should exist here: {unexpected}"


def test_provisioned_files_are_the_roles(host):
    for name, dashboard in dashboards():
        live = host.file(f"{CONFIG_DIR}/dashboards/{name}")
        assert live.exists and live.mode == 0o400 and live.uid == 472, name
        with open(os.path.join(DASHBOARD_DIR, name), "rb") as source:
            assert live.sha256sum == hashlib.sha256(source.read()).hexdigest(), name
    password = host.file(f"{CONFIG_DIR}/admin_password")
    assert password.mode == 0o400 and password.uid == 472
    ini = host.file(f"{CONFIG_DIR}/grafana.ini").content_string
    assert "admin_password = $__file{/etc/mmo-grafana/admin_password}" in ini
    assert password.content_string.strip() not in ini
    assert "[auth.anonymous]\nenabled = false" in ini
    datasource = host.file(f"{CONFIG_DIR}/provisioning/datasources/multimodel.yml").content_string
    assert "url: \"http://prometheus:9090\"" in datasource and "uid: mmo-prometheus" in datasource


def grafana_runs(host):
    return host.run(f"docker inspect -f '{{{{.State.Running}}}}' {GRAFANA}").stdout.strip() == "true"


def test_grafana_runs_only_with_an_image_archive(host):
    wanted = bool(os.environ.get("MMO_GRAFANA_IMAGE_ARCHIVE"))
    assert grafana_runs(host) == wanted


@pytest.mark.skipif(not os.environ.get("MMO_GRAFANA_IMAGE_ARCHIVE"),
                    reason="no Grafana image archive given (MMO_GRAFANA_IMAGE_ARCHIVE): Grafana does not run")
def test_grafana_serves_the_dashboards_to_the_admin_only(host):
    password = host.file(f"{CONFIG_DIR}/admin_password").content_string.strip()

    def get(path, auth=True):
        user = f"-u admin:{shlex.quote(password)} " if auth else ""
        return host.run(f"curl -s -o /dev/stderr -w '%{{http_code}}' {user}http://127.0.0.1:3000{path}")

    assert get("/api/search", auth=False).stdout == "401"
    answer = get("/api/search?type=dash-db")
    assert answer.stdout == "200"
    uids = {item["uid"] for item in json.loads(answer.stderr)}
    assert uids >= {d["uid"] for dummy, d in dashboards()}
    query = urllib.parse.quote('up{job="llama"}')
    answer = get(f"/api/datasources/proxy/uid/mmo-prometheus/api/v1/query?query={query}")
    assert answer.stdout == "200" and json.loads(answer.stderr)["data"]["result"]
