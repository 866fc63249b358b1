"""playbooks/health.yml on the whole stack (site.yml ends with it too): one table with every
service the stack runs on the host, each healthy; a stopped service fails the play and is
named; reading changes nothing."""
import os
import re
import subprocess

MANAGED = "label=org.multimodel.managed-by=multimodel.orchestration"
STATUS_TASK = "Show the status of every service"


def status_lines(run):
    """The table health.yml printed, as lines."""
    return run.result(STATUS_TASK)["msg"]


def row_of(lines, service):
    """The cells of the service's row (mark, host, service, address, state, version)."""
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 6 and cells[2] == service:
            return cells
    raise AssertionError(f"no row for {service} in:\n" + "\n".join(lines))


def test_every_service_is_in_the_table_and_healthy(host, playbook, stack):
    run = playbook("health.yml", as_json=True)
    assert run.returncode == 0, run.stdout[-4000:]
    assert run.stats["changed"] == 0
    lines = status_lines(run)
    containers = host.check_output(f"docker ps -a --filter {MANAGED} --format '{{{{.Names}}}}'").split()
    assert {"mmo-redis", "mmo-backend-1", "mmo-backend-2", "mmo-caddy", "mmo-prometheus"} <= set(containers)
    services = containers + [f"llama-server@{name}" for name in stack.llama_ports] + ["docker", "node_exporter", "backups"]
    for service in services:
        cells = row_of(lines, service)
        assert cells[0] == "ok", f"{service} is not healthy:\n" + "\n".join(lines)
    assert lines[-1] == f"{len(services)} of {len(services)} services healthy", "\n".join(lines)
    # Versions: the image tag, the llama.cpp build the server reports, node_exporter's build info.
    assert row_of(lines, "mmo-redis")[5] == host.check_output("docker inspect --format '{{.Config.Image}}' mmo-redis").rsplit(":", 1)[1]
    for name, port in stack.llama_ports.items():
        cells = row_of(lines, f"llama-server@{name}")
        assert cells[3] == f"http://127.0.0.1:{port}" and cells[4] == "ok"
        assert re.match(r"^b\d+", cells[5]), f"llama-server@{name} reports no build: {cells}"
    assert re.match(r"^\d+\.\d+", row_of(lines, "node_exporter")[5])
    assert row_of(lines, "backups")[4].startswith("waiting")


def test_a_stopped_service_fails_the_play_and_is_named(host, playbook):
    host.run_expect([0], "systemctl stop prometheus-node-exporter")
    try:
        run = playbook("health.yml")
    finally:
        host.run_expect([0], "systemctl start prometheus-node-exporter")
    assert run.returncode == 2, run.stdout[-4000:]
    assert re.search(r"FAIL\s+\S+\s+node_exporter\s+\S+\s+inactive \(dead\)", run.stdout), run.stdout[-4000:]
    assert f"Not healthy: {run.hostname} node_exporter. The table above says why." in run.flat
    assert re.search(r"ok\s+\S+\s+mmo-redis\s", run.stdout)  # the others still read, and healthy


def test_the_quick_start_summary_reaches_the_site_from_this_machine(host, api_key, tmp_path):
    """make up ends with tests/harness/quickstart-summary.sh: run here against this instance (the
    same inventory as the sandbox), it answers from this machine through Caddy over HTTPS."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "backend_api_key").write_text(api_key + "\n")
    script = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "tests", "harness", "quickstart-summary.sh")
    run = subprocess.run(["bash", script, host.backend.get_hostname()], env=dict(os.environ, MMO_CACHE=str(tmp_path)),
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"Prometheus  \d+ of \d+ targets up", run.stdout), run.stdout
    assert re.search(r"First answer, in \d+ ms: (simple|moderate|complex), from Q\w+", run.stdout), run.stdout
    assert (tmp_path / "caddy-root.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
