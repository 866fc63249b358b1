"""What the app_tier fault, deploy, bad-value and rotation tests share: the stack client on the
instance, a query load running while something happens, the llama-servers' health, and the
report tables (printed at the end of the verify output, which reaches
build/molecule/app_tier.log, and written to build/molecule/app_tier-faults.txt).

The suite's files run in name order (Molecule sorts them): test_app_tier, test_bad_values,
test_deploys, test_faults, test_rotation. test_rotation leaves the stack on a rotated Redis
password, so it comes last.
"""
import json
import os
import shlex
import subprocess
import time
import uuid

import pytest
from stack_client import RemoteLoad, table

CLIENT = "/usr/local/lib/mmo-stack-client.py"
CONTAINERS = ["mmo-redis", "mmo-searxng", "mmo-backend-1", "mmo-backend-2", "mmo-caddy"]
BACKENDS = ["mmo-backend-1", "mmo-backend-2"]
# inventories/local: the four tiers and their ports.
LLAMA_PORTS = {"Q2_FAST_1": 8080, "Q2_FAST_2": 8081, "Q3_SYNTH": 8082, "Q4_DEEP": 8083}
REDIS_PASSWORD_FILE = "/etc/multimodel/redis/password"
# The backend's own probe, run in a replica: prints the status and body, exit 1 unless 2xx.
BACKEND_PROBE = ("import sys, urllib.request as u; r = u.urlopen('http://127.0.0.1:8000' + sys.argv[1], timeout=5); "
                 "print(r.status, r.read().decode())")

_TABLES = {}  # title -> (columns, rows), in the order the tests added them


def _report_text():
    return "\n\n".join(table(title, columns, rows) for title, (columns, rows) in _TABLES.items() if rows)


def _write_report():
    """The tables so far, in the project's build/molecule (kept with the scenario's log)."""
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY")
    if not project:
        return
    folder = os.path.join(project, "build", "molecule")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "app_tier-faults.txt"), "w", encoding="utf-8") as out:
        out.write(_report_text() + "\n")


def pytest_terminal_summary(terminalreporter):
    """Print the report tables after the test results, whatever the outcome."""
    if any(rows for dummy, rows in _TABLES.values()):
        terminalreporter.section("fault battery, deploys and rotation (app_tier)")
        terminalreporter.write_line(_report_text())


@pytest.fixture(scope="session")
def report():
    """report(title, columns, row): add one row to a table of the report (kept even when the
    test fails later)."""
    def add(title, columns, row):
        _TABLES.setdefault(title, (columns, []))[1].append(row)
        _write_report()
    return add


@pytest.fixture(scope="module")
def stack(host):
    """The stack client on the instance (stack_client.py): see Stack."""
    return Stack(host)


class Stack:
    """Drives the stack from the controller: queries through Caddy, a query load, probes."""

    containers = CONTAINERS
    backends = BACKENDS
    llama_ports = LLAMA_PORTS

    def __init__(self, host):
        self.host = host
        self.name = host.backend.get_hostname()
        self.copy_client()

    def copy_client(self):
        source = os.path.join(os.path.dirname(__file__), "stack_client.py")
        subprocess.run(["docker", "cp", source, f"{self.name}:{CLIENT}"], check=True)

    def client(self, *args, timeout=None):
        """Run stack_client.py on the instance; its JSON, or None when it failed."""
        env = f"STACK_TIMEOUT={timeout} " if timeout else ""
        result = self.host.run(env + "python3 " + " ".join(shlex.quote(a) for a in (CLIENT,) + args))
        if result.rc != 0:
            return None
        return json.loads(result.stdout)

    def query(self, text=None, mode="simple", max_tokens=8):
        """POST /api/query through Caddy: the client's JSON ({status, json, ...}), or None."""
        body = {"query": text or f"probe {uuid.uuid4().hex[:8]}", "mode": mode, "max_tokens": max_tokens}
        return self.client("post", "/api/query", json.dumps(body))

    def load(self, http=("simple", "simple", "moderate", "complex"), ws=(), **spec):
        """A RemoteLoad of queries through Caddy, started now (each loop pausing 0.2 s between
        its queries unless spec says otherwise); stop() ends it and returns its result."""
        return RemoteLoad(self.name, CLIENT, dict({"pause": 0.2}, **spec, http=list(http), ws=list(ws)))

    def llama_healthy(self, instance):
        """Whether the instance's llama-server answers /health 200 (with the API key when set)."""
        port = LLAMA_PORTS[instance]
        command = ("k=$(sed -n 's/^LLAMA_API_KEY=//p' /etc/llama-server/*.env 2>/dev/null | head -n 1 | tr -d '\"'); "
                   f"curl -fsS -m 2 ${{k:+-H \"Authorization: Bearer $k\"}} http://127.0.0.1:{port}/health")
        return self.host.run(f"sh -c {shlex.quote(command)}").rc == 0

    def main_pid(self, instance):
        return int(self.host.check_output(f"systemctl show -p MainPID --value llama-server@{instance}") or 0)

    def container_health(self, name):
        """The container's health status ("healthy", "starting", ...), or its absence."""
        result = self.host.run(f"docker inspect --format '{{{{.State.Health.Status}}}}' {name}")
        return result.stdout.strip() if result.rc == 0 else "absent"

    def backend_ready(self, replica):
        """Whether the replica's /health/ready answers 200 from inside it."""
        return self.host.run(f"docker exec {replica} python3 -c {shlex.quote(BACKEND_PROBE)} /health/ready").rc == 0

    def redis_cli(self, *args, password=None):
        """redis-cli in the Redis container, the password (default: the host's file) through
        REDISCLI_AUTH; the result of host.run."""
        if password is None:
            password = self.host.file(REDIS_PASSWORD_FILE).content_string.strip()
        return self.host.run(f"docker exec -e REDISCLI_AUTH={shlex.quote(password)} mmo-redis redis-cli "
                             + " ".join(shlex.quote(a) for a in args))

    def wait(self, what, check, timeout, interval=0.2):
        """Poll check() until true; the seconds it took. Fails naming `what` after timeout."""
        start = time.time()
        while not check():
            assert time.time() - start < timeout, f"{what}: not within {timeout} s"
            time.sleep(interval)
        return time.time() - start
