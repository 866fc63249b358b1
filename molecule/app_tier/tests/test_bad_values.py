"""Bad values never reach a running service: site.yml with a host port already taken, an
origin that is no URL, an instance alias with a space. Each run fails, and the whole stack
is byte for byte as before: every container (ID, config, start time), every llama-server
unit (MainPID), every file the roles write (sha256, mode, owner)."""
import copy
import difflib
import json
import os
import shlex

import pytest
import yaml

# Where the roles write (their defaults, as inventories/local keeps them): units and drop-ins,
# the llama config dir, models and home, the app tier's config, frontend and build dirs, and
# any state the roles keep under /var/lib/multimodel (what the services write themselves
# aside: Caddy's data, and the nflog and silences Alertmanager snapshots every 15 minutes;
# Alertmanager's directory itself, which the role makes, stays in).
FILES = ["/etc/systemd/system", "/etc/llama-server", "/var/lib/llama-server", "/etc/multimodel", "/srv/multimodel",
         "/opt/multimodel", "/var/lib/multimodel"]
# Containers come from docker inspect (see containers()); the rest from this script.
SNAPSHOT = r"""
set -euf  # -f: the find patterns below are not globs of the shell
echo '## networks'
docker network ls --no-trunc --format '{{.ID}} {{.Name}}' | sort
echo '## volumes'
docker volume ls --format '{{.Name}}' | sort
echo '## images'
docker image ls --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}' | sort
echo '## llama-server units'
for unit in $(systemctl list-units --all --plain --no-legend 'llama-server@*' | awk '{print $1}'); do
  systemctl show -p Id,ActiveState,MainPID,ExecMainStartTimestamp,NRestarts,NeedDaemonReload "$unit" | tr '\n' ' '
  echo
done
echo '## files'
skip="( -path /var/lib/multimodel/caddy -o -path /var/lib/multimodel/alertmanager/* )"
for dir in %(dirs)s; do
  [ -e "$dir" ] || continue
  if [ "$dir" = /etc/systemd/system ]; then filter="-path *llama-server*"; else filter=""; fi
  find "$dir" $skip -prune -o $filter -printf '%%p %%y %%m %%u %%g %%l\n' | sort
  find "$dir" $skip -prune -o $filter -type f -print0 | sort -z | xargs -0 -r sha256sum
done
"""


def containers(host_json):
    """One line per container and key of its docker inspect that says what it is (ID, image,
    config, host config, mounts) and since when it runs. Mounts are sorted: docker lists them
    in no fixed order."""
    lines = []
    for container in host_json("docker inspect $(docker ps -aq --no-trunc)"):
        state = container["State"]
        parts = {
            "id": [container["Id"], container["Image"], container["Created"], container["RestartCount"]],
            "state": [state["Status"], state["StartedAt"], state["Pid"]],
            "mounts": sorted(container["Mounts"], key=lambda mount: mount["Destination"]),
        }
        parts.update({f"config.{key}": value for key, value in container["Config"].items()})
        parts.update({f"host config.{key}": value for key, value in container["HostConfig"].items()})
        lines += [f"container {container['Name'].lstrip('/')} {part}: {json.dumps(value, sort_keys=True)}"
                  for part, value in parts.items()]
    return sorted(lines)


def snapshot(host, host_json):
    """Every container, unit and file of the stack, as lines of text."""
    script = SNAPSHOT % {"dirs": " ".join(FILES)}
    result = host.run("bash -c " + shlex.quote(script))
    assert result.rc == 0, result.stderr
    return containers(host_json) + result.stdout.splitlines()


def local_instances():
    """inventories/local's llama_cpp_servers_instances (what the scenario converged)."""
    path = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "inventories", "local", "group_vars",
                        "llama_servers.yml")
    with open(path, encoding="utf-8") as source:
        return yaml.safe_load(source)["llama_cpp_servers_instances"]


def alias_with_a_space():
    instances = copy.deepcopy(local_instances())
    instances[0]["alias"] = "q2 fast"
    return {"llama_cpp_servers_instances": instances}


@pytest.mark.parametrize("bad_vars, messages", [
    # Redis published on 127.0.0.1:443, which Caddy holds (0.0.0.0:443).
    (lambda: {"redis_host_port": 443}, ["443", "mmo-caddy"]),
    (lambda: {"backend_cors_origins": ["not a url"]}, ["backend_cors_origins", "not a url"]),
    (alias_with_a_space, ["alias", "q2 fast"]),
    # preflight.yml checks every role before any changes: both problems in one table.
    (lambda: dict(alias_with_a_space(), backend_cors_origins=["not a url"]),
     ["2 problem(s) on 1 host(s)", "llama_cpp_servers Check every alias can be passed as one argument",
      "backend Check the CORS origins", "Preflight found 2 problem(s) (the table above), nothing was changed"]),
], ids=["taken-host-port", "origin-not-a-url", "alias-with-a-space", "two-roles-one-table"])
def test_bad_value_fails_before_any_change(host, host_json, stack, playbook, bad_vars, messages):
    extra_vars = bad_vars()
    before = snapshot(host, host_json)
    result = playbook("converge.yml", extra_vars)
    after = snapshot(host, host_json)
    changes = "\n".join(difflib.unified_diff(before, after, "before", "after", n=0, lineterm=""))
    if changes:
        # Put the stack back for the tests after this one, then fail on what changed.
        repaired = playbook("converge.yml")
        assert repaired.returncode == 0, repaired.stdout[-3000:]
    assert result.returncode != 0, f"site.yml accepted {extra_vars}: {result.stdout[-2000:]}"
    assert not changes, f"the failed run changed the stack:\n{changes[:6000]}"
    unnamed = [message for message in messages if message not in result.flat]
    assert not unnamed, f"the failure does not name {unnamed}: {result.stdout[-3000:]}"
    answer = stack.query()
    assert answer is not None and answer["status"] == 200, answer
