"""Caddy in front of two real upstreams: HTTPS, balancing, failover, frontend, headers, metrics,
validated and graceful configuration changes."""
import json

import pytest

NAME = "mmo-caddy"
CA = "/var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt"
CURL = f"curl -s --cacert {CA}"


@pytest.fixture
def inspect(host_json):
    return host_json(f"docker container inspect {NAME}")[0]


def started(host_json):
    state = host_json(f"docker container inspect {NAME}")[0]
    return state["Id"], state["State"]["StartedAt"]


def test_running_and_healthy_without_privileges(host, inspect, assert_hardened):
    # Ports below 1024 with no capability added: Docker lets any user of the container bind them.
    assert_hardened(inspect, host, user="10080:10080",
                    limits={"NanoCpus": 500000000, "Memory": 128 * 1024 * 1024, "MemoryReservation": 32 * 1024 * 1024},
                    labels={"org.multimodel.test": "caddy"}, ports=["443/tcp", "443/udp", "80/tcp"],
                    networks=["mmo-internal", "mmo-edge"])


def test_only_caddy_publishes_ports(host_json, inspect):
    assert sorted(inspect["HostConfig"]["PortBindings"]) == ["443/tcp", "443/udp", "80/tcp"]
    for upstream in host_json("docker container inspect mmo-test-upstream-1 mmo-test-upstream-2"):
        assert not upstream["HostConfig"]["PortBindings"]


def test_https_with_its_own_ca_and_http_redirect(host):
    assert host.file(CA).exists
    assert host.run(f"{CURL} -o /dev/null -w '%{{http_code}}' https://localhost/").stdout == "200"
    redirect = host.run("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://localhost/api/whoami")
    assert redirect.stdout == "308 https://localhost/api/whoami"


def test_round_robin_over_the_upstreams(host):
    answers = [host.check_output(f"{CURL} https://localhost/api/whoami") for dummy in range(6)]
    assert set(answers) == {"upstream-1", "upstream-2"}


def test_failover_when_an_upstream_stops(host):
    host.run_expect([0], "docker stop mmo-test-upstream-1")
    try:
        answers = {host.check_output(f"{CURL} -f https://localhost/api/whoami") for dummy in range(6)}
        assert answers == {"upstream-2"}
    finally:
        host.run_expect([0], "docker start mmo-test-upstream-1")


def test_frontend_with_spa_fallback(host):
    index = host.check_output(f"{CURL} https://localhost/")
    assert "<html" in index.lower()
    assert host.check_output(f"{CURL} https://localhost/chat/42") == index
    assert "app.js" in index and host.run(f"{CURL} -f https://localhost/app.js").rc == 0


def test_security_headers_and_compression(host):
    headers = host.check_output(f"{CURL} -D - -o /dev/null -H 'Accept-Encoding: gzip' https://localhost/").lower()
    assert "strict-transport-security: max-age=31536000" in headers
    assert "x-content-type-options: nosniff" in headers
    assert "x-frame-options: deny" in headers
    assert "content-security-policy: default-src 'self'" in headers
    assert "content-encoding: gzip" in headers
    assert "\nserver:" not in headers


def test_metrics_on_the_internal_port_and_json_access_log(host):
    host.check_output(f"{CURL} https://localhost/api/whoami")
    metrics = host.check_output(f"docker exec {NAME} wget -qO- http://127.0.0.1:9180/metrics")
    assert "caddy_http_requests_total" in metrics
    logs = host.run(f"docker logs --tail 50 {NAME}")
    entries = [json.loads(line) for line in (logs.stdout + logs.stderr).splitlines() if line.startswith("{")]
    assert any(e.get("msg") == "handled request" and e["request"]["uri"] == "/api/whoami" for e in entries)


def test_a_change_is_a_graceful_reload(host, host_json, playbook):
    before = started(host_json)
    result = playbook("caddy.yml", {"caddy_security_headers": {"X-Test-Reload": "yes", "-Server": ""}})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Reload Caddy gracefully" in result.stdout
    assert started(host_json) == before
    headers = host.check_output(f"{CURL} -D - -o /dev/null https://localhost/").lower()
    assert "x-test-reload: yes" in headers
    # Back to the converged settings, the same way.
    assert playbook("caddy.yml").returncode == 0
    assert started(host_json) == before


@pytest.mark.parametrize("extra_vars, message", [
    ({"caddy_site_extra": "no_such_directive on"}, "no_such_directive"),
    ({"caddy_tls": "acme"}, "caddy_tls is acme, which needs caddy_acme_email"),
    ({"caddy_backend_upstreams": ["http://backend"]}, "must list the backend replicas as HOST:PORT"),
])
def test_bad_input_fails_and_the_site_keeps_serving(host, host_json, playbook, extra_vars, message):
    before = started(host_json)
    config = host.file("/etc/multimodel/caddy/Caddyfile").sha256sum
    result = playbook("caddy.yml", extra_vars)
    assert result.returncode != 0
    assert message in result.flat, result.stdout[-3000:]
    assert host.file("/etc/multimodel/caddy/Caddyfile").sha256sum == config
    assert started(host_json) == before
    assert host.check_output(f"{CURL} https://localhost/api/whoami") in ("upstream-1", "upstream-2")
