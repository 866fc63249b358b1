# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How the stack's topology resolves: the model tier's instances, where each answers, the
backend's tier map, and which keys of a configuration changed.

One place for rules the roles used to write in Jinja loops (and wrote twice, drifting).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

# The llama_cpp_servers role's default for llama_cpp_servers_bind_address. Other roles read a
# model host's instances from its hostvars, where the role's defaults are not visible unless
# the role runs on that host in the same play; tests/unit/plugins/filter checks the two agree.
DEFAULT_BIND_ADDRESS = "127.0.0.1"

# A wildcard bind is probed, on the host itself, on loopback.
_WILDCARD_PROBE = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_WILDCARDS = ("0.0.0.0", "::", "")

# The host name a container reaches its own host by (the backend's extra_hosts: host-gateway).
DOCKER_HOST_GATEWAY = "host.docker.internal"
# What host-gateway resolves to: daemon.json's host-gateway-ip, else the default bridge's
# (docker0's) address, 172.17.0.1 unless daemon.json's bip says otherwise.
DOCKER_DEFAULT_GATEWAY = "172.17.0.1"

# What the backend keeps of a tier (the reference backend's MMO_TIERS_JSON contract is the
# first five; bind and host serve the backend role's checks). model identifies the model file
# (its sha256, else its name): the backend's answer cache keys on it, so a model swap never
# serves answers of the old one.
_TIER_KEYS = ("name", "url", "complexity", "alias", "model")


def _http_url(address: str, port: Any) -> str:
    """http://address:port, with an IPv6 literal in brackets."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def _require_list(value: Any, what: str) -> Sequence:
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise AnsibleFilterError(f"{what} must be a list, got {type(value).__name__}: {value!r}")
    return value


def llama_instances(instances: Any, defaults: Any = None, bind_address: str = DEFAULT_BIND_ADDRESS) -> list[dict]:
    """Each instance over the defaults: instance_defaults, then the role-wide bind address
    and an alias of the lower-cased name, then the instance's own keys. Each result also
    carries ``url``, where the instance answers on its own host (a wildcard bind on loopback)."""
    resolved = []
    for index, instance in enumerate(_require_list(instances, "llama_cpp_servers_instances")):
        if not isinstance(instance, Mapping) or not instance.get("name"):
            raise AnsibleFilterError(
                f"llama_cpp_servers_instances[{index}] must be a mapping with a name, got {instance!r}")
        merged = dict(defaults or {})
        merged.update(bind_address=bind_address, alias=str(instance["name"]).lower())
        merged.update(instance)
        address = _WILDCARD_PROBE.get(merged["bind_address"], merged["bind_address"])
        merged["url"] = _http_url(address, merged.get("port"))
        resolved.append(merged)
    return resolved


def llama_endpoints(resolved: Any) -> list[dict]:
    """What model_health probes for resolved instances: name, alias and url."""
    return [{"name": i["name"], "alias": i["alias"], "url": i["url"]}
            for i in _require_list(resolved, "resolved instances")]


def docker_gateway(host_vars: Mapping) -> str:
    """The address ``host-gateway`` (host.docker.internal) stands for on a host, from what its
    variables say: daemon.json's host-gateway-ip, else docker0's address from the gathered
    facts, else the address of daemon.json's bip, else Docker's default 172.17.0.1. The daemon
    options are read from the inventory (docker_daemon_options, docker_daemon_options_extra)."""
    options: dict = {}
    for name in ("docker_daemon_options", "docker_daemon_options_extra"):
        if isinstance(host_vars.get(name), Mapping):
            options.update(host_vars[name])
    facts = host_vars.get("ansible_facts")
    docker0 = facts.get("docker0") if isinstance(facts, Mapping) else None
    if not isinstance(docker0, Mapping):
        docker0 = host_vars.get("ansible_docker0")
    ipv4 = docker0.get("ipv4") if isinstance(docker0, Mapping) else None
    for candidate in (options.get("host-gateway-ip"),
                      ipv4.get("address") if isinstance(ipv4, Mapping) else None,
                      str(options.get("bip") or "").split("/", 1)[0]):
        if candidate:
            return str(candidate)
    return DOCKER_DEFAULT_GATEWAY


def backend_tiers(hosts: Any, hostvars: Mapping, backend_host: str) -> list[dict]:
    """The model tier as a backend on ``backend_host`` reaches it: every instance of every
    host in ``hosts``, resolved as the llama_cpp_servers role resolves it there.

    An instance on the backend's own host is reached through the Docker host gateway
    (host.docker.internal) when it listens there: bound to a wildcard address or to the
    gateway's address (docker_gateway); bound to another address, at that address. One on
    another host bound to a wildcard address is reached through its host's ansible_host (or
    inventory name), any other through its bind address. Each tier has name, url, complexity,
    alias, and the bind address and host the backend role checks."""
    tiers = []
    for host in _require_list(hosts, "hosts"):
        host_vars = hostvars[host]
        resolved = llama_instances(
            host_vars.get("llama_cpp_servers_instances") or [],
            host_vars.get("llama_cpp_servers_instance_defaults") or {},
            host_vars.get("llama_cpp_servers_bind_address", DEFAULT_BIND_ADDRESS))
        for instance in resolved:
            bind = instance["bind_address"]
            if host == backend_host and (bind in _WILDCARDS or bind == docker_gateway(host_vars)):
                address = DOCKER_HOST_GATEWAY
            elif bind in _WILDCARDS:
                address = host_vars.get("ansible_host", host)
            else:
                address = bind
            tier = {
                "name": instance["name"],
                "url": _http_url(address, instance.get("port")),
                "complexity": instance.get("complexity", ""),
                "alias": instance["alias"],
                "bind": bind,
                "host": host,
            }
            model = _model_identity(instance.get("model"), host_vars.get("llama_cpp_servers_models"))
            if model:
                tier["model"] = model
            tiers.append(tier)
    return tiers


def _model_identity(name: Any, models: Any) -> str:
    """The sha256 of an instance's model (llama_cpp_servers_models[NAME].sha256), else its name."""
    entry = models.get(name) if isinstance(models, Mapping) and isinstance(name, str) else None
    if isinstance(entry, Mapping) and entry.get("sha256"):
        return str(entry["sha256"]).lower()
    return str(name) if name else ""


def site_origins(addresses: Any, https_port: Any = 443) -> list[str]:
    """The browser origins of Caddy site addresses: ``https://host[:port]`` for a host name
    (Caddy serves it over HTTPS, on https_port unless the address names a port), the address
    itself for one given with a scheme. A bare ``:PORT`` (any host) has no origin of its own:
    the backend's same-origin check covers it."""
    origins = []
    for address in _require_list(addresses, "caddy_site_addresses"):
        address = str(address).strip().rstrip("/")
        if not address or address.startswith(":") or "*" in address:
            continue
        if "://" in address:
            scheme, rest = address.split("://", 1)
            host_port = rest.split("/", 1)[0]
        else:
            scheme, host_port = "https", address
        if ":" not in host_port.rsplit("]", 1)[-1] and scheme == "https" and str(https_port) != "443":
            host_port = f"{host_port}:{https_port}"
        origin = f"{scheme}://{host_port}"
        if origin not in origins:
            origins.append(origin)
    return origins


def tier_contract(tiers: Any) -> list[dict]:
    """Tiers as the reference backend reads them (MMO_TIERS_JSON): name, url, complexity, alias."""
    return [{key: tier[key] for key in _TIER_KEYS if key in tier} for tier in _require_list(tiers, "tiers")]


def changed_keys(old: Any, new: Any) -> list[str]:
    """Sorted keys whose values differ between two mappings (added and removed keys included)."""
    old, new = old or {}, new or {}
    for what, value in (("old", old), ("new", new)):
        if not isinstance(value, Mapping):
            raise AnsibleFilterError(f"changed_keys: the {what} value must be a mapping, got {value!r}")
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def model_paths(models: Any, model_dir: str) -> dict:
    """Each model's file on a model host: ``MODEL_DIR/NAME-<first 12 hex digits of its sha256>.gguf``,
    from {NAME: {sha256, ...}} (or a list of {key, value} items, as dict2items gives). An updated
    model so lands beside the file in use instead of over it."""
    if isinstance(models, Mapping):
        models = [{"key": name, "value": value} for name, value in models.items()]
    paths = {}
    for item in _require_list(models, "models"):
        name, value = item.get("key"), item.get("value")
        sha256 = str(value.get("sha256") or "") if isinstance(value, Mapping) else ""
        if not name or not re.fullmatch(r"[0-9A-Fa-f]{64}", sha256):
            raise AnsibleFilterError(f"model_paths: model {name!r} needs a sha256 of 64 hex digits, got {sha256!r}")
        paths[name] = f"{str(model_dir).rstrip('/')}/{name}-{sha256.lower()[:12]}.gguf"
    return paths


class FilterModule:
    """Topology filters of multimodel.orchestration."""

    def filters(self):
        return {
            "llama_instances": llama_instances,
            "llama_endpoints": llama_endpoints,
            "backend_tiers": backend_tiers,
            "tier_contract": tier_contract,
            "site_origins": site_origins,
            "changed_keys": changed_keys,
            "model_paths": model_paths,
        }
