"""Fault battery under load: a bounded query loop through Caddy (every tier, the fast one most)
while one fault happens at a time; the failed queries and the recovery time of each go to
the report table (conftest.py), which the verify output ends with."""
import shlex
import subprocess
import time
import uuid

FAULTS = "Fault battery: queries through Caddy while each fault happens"
# Back after a host restart too, though not on the query path: the monitoring and backup
# containers and units (a reload must not have turned a container's restart policy off).
MONITORING_CONTAINERS = ["mmo-prometheus", "mmo-alertmanager", "mmo-redis-exporter"]
MONITORING_UNITS = ["prometheus-node-exporter", "mmo-backup.timer"]
COLUMNS = ("fault", "queries ok", "failed", "recovery s", "recovery is")


def test_kill_9_of_a_fast_tier_server(stack, report):
    """The fast tier's other replica takes every query; systemd has the killed one back and
    healthy within 10 s."""
    instance = "Q2_FAST_1"
    assert stack.llama_healthy(instance)
    pid = stack.main_pid(instance)
    assert pid > 0
    load = stack.load()
    try:
        time.sleep(3)
        killed = time.time()
        stack.host.run_expect([0], f"kill -9 {pid}")
        recovery = stack.wait(f"llama-server@{instance} back and healthy after kill -9",
                              lambda: stack.main_pid(instance) not in (0, pid) and stack.llama_healthy(instance), 120)
        time.sleep(3)
    finally:
        load.stop()
    report(FAULTS, COLUMNS, (f"kill -9 llama-server@{instance}", load.count("http", "ok"), load.count("http", "failed"),
                             f"{recovery:.1f}", "new MainPID answers /health"))
    assert load.during(killed, killed + recovery), "no query ran while the server was down"
    assert load.count("http", "failed") == 0, load.summary()
    assert recovery <= 10, f"llama-server@{instance} took {recovery:.1f} s to be back and healthy"


def test_one_backend_replica_stopped(stack, report):
    """Caddy sends every query to the other replica while one is stopped; started again, the
    replica is healthy and ready."""
    replica = stack.backends[0]
    load = stack.load()
    try:
        time.sleep(3)
        stopping = time.time()
        stack.host.run_expect([0], f"docker stop {replica}")
        stopped = time.time()
        time.sleep(5)  # queries through the other replica alone
        starting = time.time()
        stack.host.run_expect([0], f"docker start {replica}")
        recovery = stack.wait(f"{replica} healthy and ready after docker start",
                              lambda: stack.container_health(replica) == "healthy" and stack.backend_ready(replica),
                              180, interval=0.5)
        time.sleep(2)
    finally:
        load.stop()
        stack.host.run(f"docker start {replica}")
    report(FAULTS, COLUMNS, (f"docker stop, then start, {replica}", load.count("http", "ok"),
                             load.count("http", "failed"), f"{recovery:.1f}",
                             f"start -> healthy and ready (the stop took {stopped - stopping:.1f} s)"))
    assert load.during(stopped, starting), "no query ran while the replica was stopped"
    assert load.count("http", "failed") == 0, load.summary()


def _redis_pipe(stack, commands):
    """Several redis-cli commands in one call (stdin), one output line each."""
    password = stack.host.file("/etc/multimodel/redis/password").content_string.strip()
    lines = "\n".join(" ".join(command) for command in commands) + "\n"
    result = stack.host.run(f"printf %s {shlex.quote(lines)} | docker exec -i -e REDISCLI_AUTH={shlex.quote(password)} "
                            "mmo-redis redis-cli")
    assert result.rc == 0, result.stderr
    return result.stdout.splitlines()


def test_redis_restarted(stack, report):
    """Answers go on (the backend answers without its cache while Redis is away: the failed
    queries are reported), the cache comes back, and no acknowledged write older than the AOF
    fsync window (appendfsync everysec) is lost."""
    keys = {f"mmo:fault:{uuid.uuid4().hex[:8]}:{n}": f"value-{n}" for n in range(50)}
    assert _redis_pipe(stack, [("SET", k, v) for k, v in keys.items()]) == ["OK"] * len(keys)
    text = f"Remember this across a Redis restart {uuid.uuid4().hex[:8]}"
    first = stack.query(text)
    assert first["status"] == 200 and first["json"]["cached"] is False, first
    time.sleep(2)  # past the AOF window: fsynced every second

    def cached_again():
        again = stack.query(text)
        return (again is not None and again["status"] == 200 and again["json"]["cached"] is True
                and again["json"]["answer"] == first["json"]["answer"])

    load = stack.load()
    try:
        time.sleep(3)
        restarted = time.time()
        stack.host.run_expect([0], "docker restart mmo-redis")
        redis_back = restarted + stack.wait("Redis healthy and answering after docker restart",
                                            lambda: stack.container_health("mmo-redis") == "healthy"
                                            and stack.redis_cli("PING").stdout.strip() == "PONG", 120)
        stack.wait("the cached answer served again after the Redis restart", cached_again, 60, interval=0.5)
        recovery = time.time() - restarted
        time.sleep(2)
    finally:
        load.stop()
    report(FAULTS, COLUMNS, ("docker restart mmo-redis", load.count("http", "ok"), load.count("http", "failed"),
                             f"{recovery:.1f}", "restart -> the answer cached before is served from Redis"))
    assert _redis_pipe(stack, [("GET", k) for k in keys]) == list(keys.values()), \
        "acknowledged writes were lost across the Redis restart"
    answered = [q for q in load.during(restarted, redis_back) if q[3] == "ok"]
    assert answered, f"no query was answered while Redis restarted: {load.summary()}"


def test_host_restart(stack, report, host_json):
    """The whole sandbox host restarts (systemd inside): every service comes back by itself,
    with no Ansible run: units active and healthy, the same containers healthy, a query
    through Caddy answered. One probe query a second counts the failed ones."""
    names = stack.containers + MONITORING_CONTAINERS
    containers = {c["Name"].lstrip("/"): c["Id"] for c in host_json("docker inspect " + " ".join(names))}
    began = time.time()
    # Every unit has stopped within seconds of the halt; what is left then is systemd's final
    # kill of the processes of containers live-restore leaves running (one that ignores
    # SIGTERM holds it for 90 s): 30 s, then docker kills the host container.
    subprocess.run(["docker", "restart", "--time", "30", stack.name], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    up = time.time()
    probes = {"ok": 0, "failed": 0}
    missing = ["not checked yet"]
    while missing:
        assert time.time() - up < 300, f"the stack did not come back within 300 s: {missing}"
        time.sleep(1)
        missing = _not_back(stack, probes, names)
    recovery = time.time() - up
    report(FAULTS, COLUMNS, (f"docker restart {stack.name} (the host)", probes["ok"], probes["failed"],
                             f"{recovery:.1f}", f"boot -> all healthy, a query answered (restart command "
                             f"{up - began:.1f} s; queries: probes 1/s)"))
    again = {c["Name"].lstrip("/"): c["Id"] for c in host_json("docker inspect " + " ".join(names))}
    assert again == containers, "containers were recreated: something else than the restart ran"


def _not_back(stack, probes, containers):
    """What is not back yet after the host restart (empty when everything is); counts the
    probe query through Caddy."""
    answer = stack.client("post", "/api/query", '{"query": "are you back %s", "mode": "simple", "max_tokens": 8}'
                          % uuid.uuid4().hex[:8], timeout=10)
    answered = answer is not None and answer["status"] == 200
    probes["ok" if answered else "failed"] += 1
    missing = [] if answered else ["a query through Caddy"]
    if stack.host.run("systemctl is-active docker.service").stdout.strip() != "active":
        return missing + ["docker.service"]
    missing += [f"llama-server@{name}" for name in stack.llama_ports
                if stack.host.run(f"systemctl is-active llama-server@{name}").stdout.strip() != "active"
                or not stack.llama_healthy(name)]
    missing += [unit for unit in MONITORING_UNITS
                if stack.host.run(f"systemctl is-active {unit}").stdout.strip() != "active"]
    return missing + [name for name in containers if stack.container_health(name) != "healthy"]
