"""Backups (the backups role, site.yml's Backups play): real FAISS indexes in the backend's
volume and real Redis data, backed up by the timer's own job (mmo-backup.service), wiped, and
put back by playbooks/restore.yml: every index's ntotal and search results and the Redis
dataset's digest are what they were. An unchanged second backup copies nothing, retention
prunes to backups_keep, a corrupt set is refused before anything stops, and the metrics file
node_exporter reads holds the run's values.

Runs after test_app_tier and before the others (name order), and leaves the stack as it found
it, the test keys and indexes aside."""
import json
import os
import shlex
import time

import pytest
import yaml

SERVICE = "mmo-backup.service"
BACKUP_DIR = "/var/backups/multimodel"
METRICS = "/var/lib/node_exporter/textfile_collector/mmo_backup.prom"
VOLUME = "/var/lib/docker/volumes/mmo-backend-faiss/_data"
RESTIC_REPOSITORY = "/var/backups/multimodel-restic"
REPLICA = "mmo-backend-1"
PREFIX = "mmo:test:backups:"

# Every key of the current database with a digest of its type, its value in a canonical form
# (members and fields sorted: a set's DUMP follows its hash table's order, which differs between
# two Redis processes) and whether it has a TTL: equal mappings, equal datasets, and a
# difference names the keys. (DEBUG DIGEST, which does the same, is refused:
# enable-debug-command is off, as in production.)
DIGEST_LUA = """
local function value(key, kind)
  if kind == 'string' then return redis.call('GET', key) end
  if kind == 'list' then return table.concat(redis.call('LRANGE', key, 0, -1), '\\0') end
  if kind == 'zset' then return table.concat(redis.call('ZRANGE', key, 0, -1, 'WITHSCORES'), '\\0') end
  local items = {}
  if kind == 'set' then
    items = redis.call('SMEMBERS', key)
  elseif kind == 'hash' then
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat, 2 do items[#items + 1] = flat[i] .. '\\0' .. flat[i + 1] end
  else
    return redis.call('DUMP', key)
  end
  table.sort(items)
  return table.concat(items, '\\1')
end
local keys = redis.call('KEYS', '*')
table.sort(keys)
local out = {}
for _, key in ipairs(keys) do
  local kind = redis.call('TYPE', key)['ok']
  local ttl = redis.call('PTTL', key)
  out[#out + 1] = key
  out[#out + 1] = redis.sha1hex(kind .. '\\2' .. value(key, kind) .. '\\2' .. (ttl > 0 and 'ttl' or 'persist'))
end
return out
"""

# In a backend replica (its image has faiss and numpy): ntotal, dimension and the results of a
# fixed set of queries for every index in the volume.
SEARCH_PY = r"""
import json, os, sys
import faiss, numpy
out = {}
for name in sorted(os.listdir('/data/faiss')):
    if name.endswith(('.faiss', '.index')):
        index = faiss.read_index('/data/faiss/' + name)
        queries = numpy.random.default_rng(7).standard_normal((4, index.d)).astype('float32')
        distances, ids = index.search(queries, 5)
        out[name] = {'ntotal': index.ntotal, 'd': index.d, 'ids': ids.tolist(),
                     'distances': numpy.round(distances, 4).tolist()}
print(json.dumps(out, sort_keys=True))
"""

# The issue's own index layout, <name>.index + <name>_metadata.json, beside the backend's.
NOTES_PY = r"""
import json, os, faiss, numpy
vectors = numpy.random.default_rng(3).standard_normal((40, 16)).astype('float32')
index = faiss.IndexFlatL2(16)
index.add(vectors)
faiss.write_index(index, '/data/faiss/.notes.tmp')
with open('/data/faiss/notes_metadata.json', 'w') as out:
    json.dump([{'id': i, 'text': 'note %d' % i} for i in range(40)], out)
os.rename('/data/faiss/.notes.tmp', '/data/faiss/notes.index')
"""


def local_keep():
    """backups_keep as inventories/local sets it (what the scenario converged)."""
    path = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "inventories", "local", "group_vars",
                        "backup_servers.yml")
    with open(path, encoding="utf-8") as source:
        return yaml.safe_load(source)["backups_keep"]


def run_job(host):
    """Start the timer's service, wait for it (a oneshot: systemctl start returns when it
    ends); its last-run.json."""
    result = host.run(f"systemctl start {SERVICE}")
    run = json.loads(host.file(f"{BACKUP_DIR}/last-run.json").content_string)
    assert result.rc == 0, f"{SERVICE} failed: {run.get('msg')} {result.stderr}"
    assert run["ok"], run
    return run


def sets(host):
    return sorted(host.check_output(f"ls {BACKUP_DIR}/sets").split())


def metrics(host):
    values = {}
    for line in host.file(METRICS).content_string.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


def redis_digest(stack):
    """{db: {key: digest}} of every database that has keys."""
    keyspace = stack.redis_cli("INFO", "keyspace").stdout
    databases = [line.split(":")[0][2:] for line in keyspace.splitlines() if line.startswith("db")]
    digests = {}
    for database in databases:
        result = stack.redis_cli("-n", database, "EVAL", DIGEST_LUA, "0")
        assert result.rc == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        digests[database] = dict(zip(lines[0::2], lines[1::2]))
    return digests


def searches(host):
    return json.loads(host.check_output(f"docker exec {REPLICA} python3 -c {shlex.quote(SEARCH_PY)}"))


def write_redis_data(stack, tag):
    """Keys of every type, one with a (long) TTL, named after tag."""
    for args in (["SET", f"{PREFIX}{tag}:string", f"value {tag}"],
                 ["HSET", f"{PREFIX}{tag}:hash", "a", "1", "b", "2"],
                 ["RPUSH", f"{PREFIX}{tag}:list", "x", "y", "z"],
                 ["SADD", f"{PREFIX}{tag}:set", "m", "n"],
                 ["ZADD", f"{PREFIX}{tag}:zset", "1", "one", "2", "two"],
                 ["SET", f"{PREFIX}{tag}:ttl", "expires later", "EX", "86400"]):
        assert stack.redis_cli(*args).rc == 0, args


@pytest.fixture(scope="module", autouse=True)
def timer_held(host):
    """The daily timer stopped while these tests run, started again after: a scheduled run
    between the wipe and the restore (CI once ran across midnight) would make the emptied
    data the newest set, and the counts of sets would be off by one."""
    timer = SERVICE.replace(".service", ".timer")
    assert host.service(timer).is_running, f"{timer} is not active before the tests"
    host.check_output(f"systemctl stop {timer}")
    yield
    host.check_output(f"systemctl start {timer}")


@pytest.fixture(scope="module")
def data(host, stack):
    """Two real FAISS indexes in the backend's volume (one built by the backend's own
    mmo-build-index, one in the issue's .index layout) and Redis keys of every type."""
    docs = "".join(json.dumps({"text": f"passage {i} about topic {i % 9}", "source": f"doc{i}"}) + "\n"
                   for i in range(120))
    built = host.run(f"printf %s {shlex.quote(docs)} | docker exec -i {REPLICA} "
                     "mmo-build-index /data/faiss docs /dev/stdin --dim 64")
    assert built.rc == 0, built.stderr
    host.check_output(f"docker exec {REPLICA} python3 -c {shlex.quote(NOTES_PY)}")
    write_redis_data(stack, "base")
    yield
    # The test's data out again (the restored stack keeps serving the rest of the suite).
    host.run(f"rm -f {VOLUME}/docs.faiss {VOLUME}/docs.meta.json {VOLUME}/notes.index {VOLUME}/notes_metadata.json")
    keys = stack.redis_cli("--scan", "--pattern", PREFIX + "*").stdout.split()
    if keys:
        stack.redis_cli("DEL", *keys)


def test_backup_wipe_restore(host, stack, data, playbook):  # pylint: disable=unused-argument,redefined-outer-name
    started = time.time()
    before = {"search": searches(host), "redis": redis_digest(stack)}
    assert before["search"]["docs.faiss"]["ntotal"] == 120 and before["search"]["notes.index"]["ntotal"] == 40
    assert before["redis"].get("0"), "no Redis data to back up"

    first = run_job(host)
    assert first["changed"] and first["verified"], first
    verified = first["verification"]
    assert {name: info["ntotal"] for name, info in verified["faiss"]["indexes"].items()} == {"docs": 120, "notes": 40}
    assert all(info["checked_with"] == "faiss" and info["search"] for info in verified["faiss"]["indexes"].values())
    assert verified["redis"]["keys"] >= 6 and verified["redis"]["persistent_keys"] >= 5, verified["redis"]
    assert host.file(f"{BACKUP_DIR}/sets/{first['set']}/VERIFIED").exists

    # The metrics node_exporter reads: this run's values.
    values = metrics(host)
    assert values["mmo_backup_last_run_ok"] == 1 and values["mmo_backup_verify_ok"] == 1, values
    assert values["mmo_backup_last_success_timestamp_seconds"] >= int(started), values
    assert values["mmo_backup_last_verified_timestamp_seconds"] >= int(started), values
    assert values["mmo_backup_size_bytes"] == first["size_bytes"] > 0, values
    assert values["mmo_backup_duration_seconds"] == pytest.approx(first["duration"], rel=1e-3), values
    assert host.file(METRICS).mode == 0o644

    # Pushed to the local restic repository as well.
    snapshots = json.loads(host.check_output(
        f"RESTIC_PASSWORD_FILE=/etc/multimodel/backups/restic-password restic -r {RESTIC_REPOSITORY} "
        "snapshots --json --tag mmo-backup --no-lock"))
    assert any(f"set-{first['set']}" in snapshot["tags"] for snapshot in snapshots), snapshots

    # Nothing changed: no new set, nothing copied, the same set still the newest good.
    second = run_job(host)
    assert not second["changed"] and second["set"] == first["set"], second
    assert second["bytes_copied"] == 0 and second["faiss"]["bytes_copied"] == 0, second
    assert not second["redis"]["changed"], second
    assert sets(host).count(first["set"]) == 1 and sets(host)[-1] == first["set"]

    # Lose everything: the volume emptied, Redis flushed.
    host.check_output(f"sh -c 'rm -f {VOLUME}/*'")
    assert stack.redis_cli("FLUSHALL").rc == 0
    assert host.check_output(f"ls -A {VOLUME}") == ""
    assert not redis_digest(stack)

    restored = playbook(os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks", "restore.yml"))
    assert restored.returncode == 0, restored.stdout[-4000:]
    assert f"set {first['set']}" in restored.flat or first["set"] in restored.stdout

    after = {"search": searches(host), "redis": redis_digest(stack)}
    assert after["search"] == before["search"]
    differ = {database: sorted(key for key in set(keys) | set(after["redis"].get(database, {}))
                               if keys.get(key) != after["redis"].get(database, {}).get(key))
              for database, keys in before["redis"].items()}
    assert after["redis"] == before["redis"], f"Redis keys that differ after the restore: {differ}"
    for name in stack.backends + ["mmo-redis"]:
        assert stack.container_health(name) == "healthy", name
    # Owned by the backend's user again, so it can rewrite them.
    assert host.file(f"{VOLUME}/docs.faiss").uid == host.file(VOLUME).uid != 0
    answer = stack.query()
    assert answer is not None and answer["status"] == 200, answer


def test_retention_prunes(host, stack, data):  # pylint: disable=unused-argument,redefined-outer-name
    keep = local_keep()
    taken = []
    for round_ in range(keep + 1):
        write_redis_data(stack, f"round{round_}")
        run = run_job(host)
        assert run["changed"] and run["verified"], run
        taken.append(run["set"])
    kept = sets(host)
    assert kept == sorted(taken[-keep:]), f"kept {kept}, taken {taken}"
    assert len(kept) == keep
    # FAISS did not change: every kept set uses one snapshot, the only one left.
    snapshots = host.check_output(f"ls {BACKUP_DIR}/faiss").split()
    used = {json.loads(host.file(f"{BACKUP_DIR}/sets/{name}/SET.json").content_string)["faiss_snapshot"]
            for name in kept}
    assert set(snapshots) == used and len(used) == 1, (snapshots, used)


def test_corrupt_set_refused_before_anything_stops(host, stack, playbook, data):  # pylint: disable=unused-argument,redefined-outer-name
    oldest = sets(host)[0]
    dump = f"{BACKUP_DIR}/sets/{oldest}/redis/dump.rdb"
    host.check_output(f"sh -c 'printf x >> {dump}'")
    started = {name: host.check_output(f"docker inspect --format '{{{{.State.StartedAt}}}}' {name}")
               for name in stack.backends + ["mmo-redis"]}
    result = playbook(os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks", "restore.yml"),
                      {"backups_restore_set": oldest})
    assert result.returncode != 0, result.stdout[-3000:]
    assert "redis/dump.rdb" in result.flat and oldest in result.flat, result.stdout[-3000:]
    for name, when in started.items():
        assert host.check_output(f"docker inspect --format '{{{{.State.StartedAt}}}}' {name}") == when, name
    # A set name that is no set name fails in preflight, naming the variable.
    bad = playbook(os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks", "restore.yml"),
                   {"backups_restore_set": "last-tuesday"})
    assert bad.returncode != 0 and "backups_restore_set" in bad.flat, bad.stdout[-3000:]
    host.check_output(f"sh -c 'truncate -s -1 {dump}'")
