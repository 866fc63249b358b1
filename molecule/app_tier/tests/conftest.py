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
from stack_client import RemoteLoad, first_key, table

CLIENT = "/usr/local/lib/mmo-stack-client.py"
CONTAINERS = ["mmo-redis", "mmo-searxng", "mmo-backend-1", "mmo-backend-2", "mmo-caddy"]
BACKENDS = ["mmo-backend-1", "mmo-backend-2"]
# inventories/local: the four tiers and their ports.
LLAMA_PORTS = {"Q2_FAST_1": 8080, "Q2_FAST_2": 8081, "Q3_SYNTH": 8082, "Q4_DEEP": 8083}
REDIS_PASSWORD_FILE = "/etc/multimodel/redis/password"
# The site's API keys (backend_api_keys), one a line: the stack client sends the first.
API_KEYS_FILE = "/etc/multimodel/backend/api_keys"
# The backend's own probe, run in a replica: prints the status and body, exit 1 unless 2xx.
BACKEND_PROBE = ("import sys, urllib.request as u; r = u.urlopen('http://127.0.0.1:8000' + sys.argv[1], timeout=5); "
                 "print(r.status, r.read().decode())")


def llama_curl(instance, path, seconds):
    """A shell command on the instance: curl of the instance's llama-server PATH, with the model
    tier's API key when one is set (read from the units' environment files)."""
    command = ("k=$(sed -n 's/^LLAMA_API_KEY=//p' /etc/llama-server/*.env 2>/dev/null | head -n 1 | tr -d '\"'); "
               f"curl -fsS -m {seconds} ${{k:+-H \"Authorization: Bearer $k\"}} "
               f"http://127.0.0.1:{LLAMA_PORTS[instance]}{path}")
    return f"sh -c {shlex.quote(command)}"


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
def api_key(host):
    """The site's API key, as the backend role wrote it on the host (what the stack client
    sends as `Authorization: Bearer`)."""
    key = first_key(host.file(API_KEYS_FILE).content_string)
    assert key, f"no API key in {API_KEYS_FILE}"
    return key


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

    def client(self, *args, timeout=None, env=None):
        """Run stack_client.py on the instance (env: its STACK_* settings, e.g. STACK_KEY_FILE=""
        for no key); its JSON, or None when it failed."""
        settings = dict(env or {}, **({"STACK_TIMEOUT": timeout} if timeout else {}))
        prefix = "".join(f"{name}={shlex.quote(str(value))} " for name, value in settings.items())
        result = self.host.run(prefix + "python3 " + " ".join(shlex.quote(a) for a in (CLIENT,) + args))
        if result.rc != 0:
            return None
        return json.loads(result.stdout)

    def internal(self, replica, *args, key=False):
        """stack_client.py run in the other replica, talking to `replica` on the internal network
        (http://REPLICA:8000) as internal monitoring would: no key, or with key=True the key
        file mounted in the replica (no secret on a command line); its JSON."""
        other = next(name for name in BACKENDS if name != replica)
        key_file = self.replica_env(other)["MMO_API_KEYS_FILE"] if key else ""
        command = (f"docker exec -i -e STACK_URL=http://{replica}:8000 -e STACK_KEY_FILE={shlex.quote(key_file)} "
                   f"{other} python3 - " + " ".join(shlex.quote(a) for a in args) + f" < {CLIENT}")
        result = self.host.run(command)
        assert result.rc == 0, f"{command}: {result.stderr[-2000:]}"
        return json.loads(result.stdout)

    def sh(self, command):
        """stdout of a shell command on the instance through docker exec (no Ansible round trip:
        for polling what changes within a second); fails on a non-zero exit."""
        return subprocess.run(["docker", "exec", self.name, "sh", "-c", command], check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def metric(self, name, **labels):
        """The sum over the replicas of a metric's samples that have these labels (each
        replica's /metrics, read inside it)."""
        total = 0.0
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        for replica in BACKENDS:
            text = self.host.check_output(f"docker exec {replica} python3 -c {shlex.quote(BACKEND_PROBE)} /metrics")
            for line in text.splitlines():
                sample, dummy, value = line.rpartition(" ")
                if (sample == name or sample.startswith(name + "{")) and all(label in sample for label in wanted):
                    total += float(value)
        return total

    def caddy_upstreams(self):
        """Caddy's view of the replicas (its admin API, inside its container): address ->
        failures it holds against each (passive health check)."""
        found = json.loads(self.sh("docker exec mmo-caddy wget -qO- http://127.0.0.1:2019/reverse_proxy/upstreams"))
        return {upstream["address"]: upstream["fails"] for upstream in found}

    def replica_env(self, replica):
        inspect = json.loads(self.host.check_output(f"docker inspect {replica}"))[0]
        return dict(item.split("=", 1) for item in inspect["Config"]["Env"])

    def started_at(self):
        """name -> (Id, State.StartedAt, RestartCount) of the stack's containers."""
        found = json.loads(self.host.check_output("docker inspect " + " ".join(CONTAINERS)))
        return {c["Name"].lstrip("/"): (c["Id"], c["State"]["StartedAt"], c["RestartCount"]) for c in found}

    def llama_slots(self, instance):
        """The instance's llama-server /slots (with the API key of the model tier)."""
        return json.loads(self.host.check_output(llama_curl(instance, "/slots", 5)))

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
        return self.host.run(llama_curl(instance, "/health", 2)).rc == 0

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
