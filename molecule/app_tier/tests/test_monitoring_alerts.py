"""Monitoring (issue 12): alerts from the real stack to a real receiver.

Stopping one fast-tier model server fires "tier degraded" in the real Prometheus; stopping
the other one too fires "tier down", which Alertmanager sends to a webhook sink (a small HTTP
server in a container on the internal network, where the local inventory's
alertmanager_webhook_urls points) while it inhibits the replica alerts of that tier; starting
them again resolves it. The local inventory lowers every rule's `for:` to seconds
(prometheus_rules_for_max) and Alertmanager's group waits, so this takes seconds.
"""
import hashlib
import json
import re
import shlex
import time
import urllib.parse

import pytest

PROMETHEUS = "mmo-prometheus"
ALERTMANAGER = "mmo-alertmanager"
SINK = "mmo-alert-sink"
SINK_URL = f"http://{SINK}:9099/alerts"
SINK_IMAGE = "mmo/python-test:3.11"
AM_CONFIG = "/etc/multimodel/alertmanager/alertmanager.yml"
AM_TAGS = "alertmanager_configure,alertmanager_run"
NETWORK = "mmo-internal"
FAST = ["Q2_FAST_1", "Q2_FAST_2"]
TIER = "simple"
# The sink: every POST body, one JSON document a line, in its /tmp.
SINK_CODE = """
import http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open("/tmp/received.jsonl", "ab") as out:
            out.write(body.replace(b"\\n", b" ") + b"\\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("", 9099), Sink).serve_forever()
"""


def prometheus_alerts(host):
    out = host.check_output(f"docker exec {PROMETHEUS} wget -q -O - http://127.0.0.1:9090/api/v1/alerts")
    return json.loads(out)["data"]["alerts"]


def firing(host, alertname, **labels):
    return [a for a in prometheus_alerts(host) if a["labels"]["alertname"] == alertname and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def instant(host, query):
    """An instant query's result: {instance (or upstream): value}."""
    params = urllib.parse.urlencode({"query": query})
    out = host.check_output(f"docker exec {PROMETHEUS} wget -q -O - 'http://127.0.0.1:9090/api/v1/query?{params}'")
    return {r["metric"].get("upstream", r["metric"].get("instance")): r["value"][1]
            for r in json.loads(out)["data"]["result"]}


def llama_up(host):
    return instant(host, 'up{job="llama"}')


def alertmanager(host, path):
    """GET Alertmanager's PATH from the host, through the internal network's bridge."""
    address = host.check_output(
        f"docker inspect -f '{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}' {ALERTMANAGER}")
    return host.check_output(f"curl -fsS -m 5 http://{address}:9093{path}")


def alertmanager_alerts(host):
    return json.loads(alertmanager(host, "/api/v2/alerts"))


def alertmanager_state(host):
    """The running container (Id, start) and the configuration it loaded (its hash, its text)."""
    container = json.loads(host.check_output(f"docker inspect {ALERTMANAGER}"))[0]
    loaded = re.search(r"^alertmanager_config_hash (\S+)$", alertmanager(host, "/metrics"), re.M).group(1)
    return {"id": container["Id"], "started": container["State"]["StartedAt"], "hash": float(loaded),
            "config": json.loads(alertmanager(host, "/api/v2/status"))["config"]["original"]}


def received(host):
    out = host.run(f"docker exec {SINK} cat /tmp/received.jsonl").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for(what, check, timeout=90):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(1)


def notified(host, status, alertname):
    """Webhook notifications the sink got with this status holding the alert for the fast tier."""
    return [n for n in received(host) if n["status"] == status
            and any(a["labels"]["alertname"] == alertname and a["labels"].get("tier") == TIER for a in n["alerts"])]


@pytest.fixture(scope="module")
def sink(host):
    config = host.file("/etc/multimodel/alertmanager/alertmanager.yml").content_string
    assert SINK_URL in config, "the local inventory's alertmanager_webhook_urls no longer names the sink"
    host.run(f"docker rm -f {SINK}")
    host.check_output(f"docker run -d --name {SINK} --network {NETWORK} --user 65534:65534 --read-only "
                      f"--tmpfs /tmp {SINK_IMAGE} python3 -c {shlex.quote(SINK_CODE)}")
    try:
        yield
    finally:
        host.run(f"docker rm -f {SINK}")


def test_alertmanager_config_passes_amtool(host):
    image = host.check_output(f"docker inspect -f '{{{{.Config.Image}}}}' {ALERTMANAGER}")
    result = host.run(f"docker run --rm --network none --entrypoint amtool "
                      f"-v /etc/multimodel/alertmanager/alertmanager.yml:/c/alertmanager.yml:ro {image} "
                      f"check-config /c/alertmanager.yml")
    assert result.rc == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_bad_alertmanager_config_fails_and_a_good_one_is_reloaded(host, playbook):
    before = alertmanager_state(host)
    live = host.file(AM_CONFIG).sha256sum
    # The loaded configuration is the live file (the role decides the reload from this hash).
    digest = hashlib.md5(host.file(AM_CONFIG).content).digest()  # nosec - Alertmanager's own hash
    assert before["hash"] == float(int.from_bytes(digest[:6], "little"))

    result = playbook("converge.yml", {"alertmanager_routes_extra": [{"receiver": "nowhere"}]}, tags=AM_TAGS)
    assert result.returncode != 0
    assert "amtool check-config" in result.flat and "undefined receiver" in result.flat
    assert alertmanager_state(host) == before and host.file(AM_CONFIG).sha256sum == live

    try:
        result = playbook("converge.yml", {"alertmanager_repeat_interval": "3h"}, tags=AM_TAGS)
        assert result.returncode == 0, result.stdout[-3000:]
        after = alertmanager_state(host)
        # Reloaded in place: the same container, started at the same time, another configuration.
        assert (after["id"], after["started"]) == (before["id"], before["started"])
        assert after["hash"] != before["hash"] and "repeat_interval: 3h" in after["config"]
    finally:
        restored = playbook("converge.yml", tags=AM_TAGS)
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert alertmanager_state(host)["hash"] == before["hash"]


def test_fast_tier_degraded_then_down_reaches_the_webhook(host, sink, report):
    assert all(llama_up(host).get(name) == "1" for name in FAST), llama_up(host)
    start = time.time()
    try:
        host.check_output(f"systemctl stop llama-server@{FAST[0]}")
        degraded = wait_for("LlamaTierDegraded firing for the simple tier",
                            lambda: firing(host, "LlamaTierDegraded", tier=TIER))
        assert degraded[0]["annotations"]["runbook"]
        wait_for(f"LlamaServerDown firing for {FAST[0]}", lambda: firing(host, "LlamaServerDown", instance=FAST[0]),
                 timeout=30)
        assert not firing(host, "LlamaTierDown", tier=TIER)
        report("Monitoring alerts (app_tier)", ["step", "alert", "seconds"],
               [f"stop {FAST[0]}", "LlamaTierDegraded firing", f"{time.time() - start:.1f}"])

        host.check_output(f"systemctl stop llama-server@{FAST[1]}")
        down = wait_for("LlamaTierDown firing for the simple tier", lambda: firing(host, "LlamaTierDown", tier=TIER))
        assert down[0]["labels"]["severity"] == "critical"
        wait_for("LlamaTierDegraded resolved once nothing answers",
                 lambda: not firing(host, "LlamaTierDegraded", tier=TIER))
        notification = wait_for("the webhook sink gets LlamaTierDown", lambda: notified(host, "firing", "LlamaTierDown"))
        report("Monitoring alerts (app_tier)", ["step", "alert", "seconds"],
               [f"stop {FAST[1]}", "LlamaTierDown at the webhook", f"{time.time() - start:.1f}"])
        alert = next(a for a in notification[0]["alerts"] if a["labels"]["alertname"] == "LlamaTierDown")
        assert notification[0]["receiver"] == "default"
        assert alert["status"] == "firing" and alert["annotations"]["runbook"]

        # Inhibition: the tier down silences its instances' alerts in Alertmanager.
        def replicas_inhibited():
            replicas = [a for a in alertmanager_alerts(host)
                        if a["labels"]["alertname"] == "LlamaServerDown" and a["labels"].get("tier") == TIER]
            return len(replicas) == 2 and all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]
                                              for a in replicas)
        wait_for("LlamaServerDown of both fast instances inhibited by LlamaTierDown", replicas_inhibited, timeout=30)
    finally:
        host.run(f"systemctl start llama-server@{FAST[0]} llama-server@{FAST[1]}")

    wait_for("both fast instances up again in Prometheus",
             lambda: all(llama_up(host).get(name) == "1" for name in FAST), timeout=120)
    wait_for("LlamaTierDown resolved at the webhook", lambda: notified(host, "resolved", "LlamaTierDown"))
    # The stack as the next tests expect it: Caddy sends queries to every backend replica again.
    wait_for("every backend replica healthy in Caddy again", lambda: set(instant(
        host, 'caddy_reverse_proxy_upstreams_healthy{job="caddy"}').values()) == {"1"}, timeout=60)
    report("Monitoring alerts (app_tier)", ["step", "alert", "seconds"],
           ["start both", "LlamaTierDown resolved at the webhook", f"{time.time() - start:.1f}"])
