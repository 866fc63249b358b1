# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What Prometheus scrapes, generated from the inventory: every model server instance, the
backend replicas, Caddy, Redis through redis_exporter, node_exporter on every host, Prometheus
and Alertmanager themselves; and where node_exporter listens on a host.

Addresses are resolved as the topology filters resolve the model tier for the backend: a
service on Prometheus' own host is reached through the Docker host gateway when it listens
there, one on another host through the address it listens on (its ansible_host for a wildcard).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.multimodel.orchestration.plugins.filter.topology import (
    DOCKER_HOST_GATEWAY, backend_tiers, docker_gateway)

# The node_exporter role's default port.
NODE_EXPORTER_PORT = 9100
_WILDCARDS = ("0.0.0.0", "::", "")
_LOOPBACK = ("127.", "::1", "localhost")

# What Prometheus needs from the other roles, as their defaults say (a host's hostvars hold
# only the inventory's values); tests/unit/plugins/filter checks these agree with the roles.
# The name site.yml serves redis_exporter's metrics under on Caddy's metrics port
# (playbooks/vars/app_tier.yml, caddy_metrics_proxies): /redis-exporter/metrics.
REDIS_EXPORTER_PROXY = "redis-exporter"

ROLE_DEFAULTS = {
    "backend_replicas": 2,
    "backend_container_name": "mmo-backend",
    "backend_port": 8000,
    "caddy_container_name": "mmo-caddy",
    "caddy_metrics_port": 9180,
}


def _host_port(address: str, port: Any) -> str:
    """address:port, with an IPv6 literal in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _hosts(groups: Mapping, name: str) -> list:
    hosts = groups.get(name) or []
    if isinstance(hosts, (str, bytes, Mapping)):
        raise AnsibleFilterError(f"groups[{name!r}] must be a list of hosts, got {hosts!r}")
    return list(hosts)


def node_exporter_listen(host_vars: Mapping) -> str:
    """Where node_exporter listens on a host, ADDRESS:PORT: node_exporter_listen_host, or when it
    is empty the address the host's containers reach the host by (docker_gateway: docker0's),
    so only that host's containers (Prometheus among them) reach it; node_exporter_port."""
    if not isinstance(host_vars, Mapping):
        raise AnsibleFilterError(f"node_exporter_listen: the host's variables must be a mapping, got {host_vars!r}")
    address = str(host_vars.get("node_exporter_listen_host") or "") or docker_gateway(host_vars)
    return _host_port(address, host_vars.get("node_exporter_port") or NODE_EXPORTER_PORT)


def _reach(host: str, host_vars: Mapping, bind: str, prometheus_host: str) -> tuple[str | None, str]:
    """The address Prometheus (a container on prometheus_host) reaches a service bound to
    `bind` on `host` at, or None and why it cannot."""
    if bind.startswith(_LOOPBACK):
        return None, f"bound to the loopback address {bind}, which no container reaches"
    gateway = docker_gateway(host_vars)
    if host == prometheus_host:
        if bind in _WILDCARDS or bind == gateway:
            return DOCKER_HOST_GATEWAY, ""
        return bind, ""
    if bind in _WILDCARDS:
        return str(host_vars.get("ansible_host") or host), ""
    if bind == gateway:
        return None, f"bound to {bind}, the Docker gateway of {host}, which only that host's containers reach"
    return bind, ""


def _split(listen: str) -> tuple[str, str]:
    address, _sep, port = listen.rpartition(":")
    return address.strip("[]"), port


def _static(target: str, labels: Mapping) -> dict:
    return {"targets": [target], "labels": dict(labels)}


def prometheus_targets(groups: Any, hostvars: Mapping, prometheus_host: str, settings: Any = None) -> dict:
    """The scrape jobs of Prometheus on ``prometheus_host``, from the inventory.

    ``settings`` (all optional): llama_group (llama_servers), app_group (app_servers),
    node_group (all), llama_credentials_file (bearer token file for the model servers; empty:
    none), redis_exporter (HOST:PORT on the internal network, for the Prometheus host's own app
    tier; empty: none there),
    alertmanagers (list of HOST:PORT), self (HOST:PORT of Prometheus in its container),
    self_name (its container name), defaults (other roles' defaults, over ROLE_DEFAULTS).

    Returns {"scrape_configs": [...], "skipped": [{job, host, instance, why}]}: every target
    labelled ``instance`` and ``host`` (model servers also ``tier``, the complexity, and
    ``alias``);
    An app host other than Prometheus' is scraped through its Caddy metrics port
    (caddy_metrics_publish_address): Caddy's metrics, each backend replica's at /NAME/metrics and
    redis_exporter's at /redis-exporter/metrics.
    ``skipped`` lists what Prometheus cannot reach from its host (loopback binds, containers of
    another host's internal network with no published metrics port)."""
    if not isinstance(groups, Mapping):
        raise AnsibleFilterError(f"prometheus_targets: groups must be a mapping, got {groups!r}")
    settings = dict(settings or {})
    defaults = dict(ROLE_DEFAULTS, **(settings.get("defaults") or {}))
    skipped: list[dict] = []
    jobs: list[dict] = []

    llama_hosts = _hosts(groups, settings.get("llama_group", "llama_servers"))
    llama_static = []
    for tier in backend_tiers(llama_hosts, hostvars, prometheus_host):
        address, why = _reach(tier["host"], hostvars[tier["host"]], tier["bind"], prometheus_host)
        if address is None:
            skipped.append({"job": "llama", "host": tier["host"], "instance": tier["name"], "why": why})
            continue
        port = tier["url"].rsplit(":", 1)[1]
        # tier is the complexity, as the backend names its tiers (its metrics, its failover).
        llama_static.append(_static(_host_port(address, port), {
            "tier": tier["complexity"], "alias": tier["alias"], "instance": tier["name"], "host": tier["host"]}))
    if llama_static:
        job = {"job_name": "llama", "metrics_path": "/metrics", "static_configs": llama_static}
        if settings.get("llama_credentials_file"):
            job["authorization"] = {"type": "Bearer", "credentials_file": settings["llama_credentials_file"]}
        jobs.append(job)

    backend_static, caddy_static, redis_static = [], [], []
    for host in _hosts(groups, settings.get("app_group", "app_servers")):
        host_vars = {**defaults, **hostvars[host]}
        replicas = [f"{host_vars['backend_container_name']}-{replica}"
                    for replica in range(1, int(host_vars["backend_replicas"]) + 1)]
        caddy_name = host_vars["caddy_container_name"]
        if host == prometheus_host:
            # Beside Prometheus: each container by name on the internal network.
            backend_static += [_static(_host_port(name, host_vars["backend_port"]), {"instance": name, "host": host})
                               for name in replicas]
            caddy_static.append(_static(_host_port(caddy_name, host_vars["caddy_metrics_port"]),
                                        {"instance": caddy_name, "host": host}))
            if settings.get("redis_exporter"):
                redis_static.append(_static(settings["redis_exporter"], {"instance": "redis", "host": host}))
            continue
        published = str(host_vars.get("caddy_metrics_publish_address") or "").strip("[]")
        if not published:
            skipped.append({"job": "backend, caddy, redis", "host": host, "instance": host,
                            "why": f"its containers sit on the internal network of {host}, not of {prometheus_host}; "
                                   f"set caddy_metrics_publish_address on {host} to scrape them through Caddy"})
            continue
        # On another host: everything through Caddy's published metrics port, each service at
        # /NAME/metrics (the caddy role's caddy_metrics_proxies, as site.yml sets them).
        gateway = _host_port(str(host_vars.get("ansible_host") or host) if published in _WILDCARDS else published,
                             host_vars["caddy_metrics_port"])
        backend_static += [_static(gateway, {"__metrics_path__": f"/{name}/metrics", "instance": name, "host": host})
                           for name in replicas]
        caddy_static.append(_static(gateway, {"instance": caddy_name, "host": host}))
        redis_static.append(_static(gateway, {"__metrics_path__": f"/{REDIS_EXPORTER_PROXY}/metrics",
                                              "instance": "redis", "host": host}))
    if backend_static:
        jobs.append({"job_name": "backend", "metrics_path": "/metrics", "static_configs": backend_static})
        jobs.append({"job_name": "caddy", "metrics_path": "/metrics", "static_configs": caddy_static})
    if redis_static:
        jobs.append({"job_name": "redis", "metrics_path": "/metrics", "static_configs": redis_static})

    node_static = []
    for host in _hosts(groups, settings.get("node_group", "all")):
        bind, port = _split(node_exporter_listen(hostvars[host]))
        address, why = _reach(host, hostvars[host], bind, prometheus_host)
        if address is None:
            skipped.append({"job": "node", "host": host, "instance": host,
                            "why": why + "; set node_exporter_listen_host to an address Prometheus reaches"})
            continue
        node_static.append(_static(_host_port(address, port), {"instance": host, "host": host}))
    if node_static:
        jobs.append({"job_name": "node", "metrics_path": "/metrics", "static_configs": node_static})

    jobs.append({"job_name": "prometheus", "metrics_path": "/metrics", "static_configs": [
        _static(settings.get("self", "localhost:9090"),
                {"instance": settings.get("self_name", "mmo-prometheus"), "host": prometheus_host})]})
    alertmanagers = settings.get("alertmanagers") or []
    if alertmanagers:
        jobs.append({"job_name": "alertmanager", "metrics_path": "/metrics", "static_configs": [
            _static(target, {"instance": target.rsplit(":", 1)[0], "host": prometheus_host})
            for target in alertmanagers]})
    return {"scrape_configs": jobs, "skipped": skipped}


_DURATION = re.compile(r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$")
_UNIT_MS = (365 * 86400000, 7 * 86400000, 86400000, 3600000, 60000, 1000, 1)


def duration_ms(value: Any) -> int:
    """A Prometheus duration (1h30m, 5s, 250ms) in milliseconds."""
    match = _DURATION.match(str(value))
    if not str(value) or not match:
        raise AnsibleFilterError(f"{value!r} is not a Prometheus duration such as 30s, 5m or 1h30m")
    return sum(int(part or 0) * unit for part, unit in zip(match.groups(), _UNIT_MS))


def _plain_copy(value: Any) -> Any:
    """A copy of nested mappings and lists as plain dicts and lists. Not copy.deepcopy: what
    from_yaml returns in a task may carry the task's whole variable context along, and deep
    copies of that took half a second for each rule file."""
    if isinstance(value, Mapping):
        return {key: _plain_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_copy(item) for item in value]
    return value


def rules_for_max(rules: Any, maximum: Any) -> Any:
    """A rule file's document (groups of rules) with every ``for`` (and ``keep_firing_for``)
    longer than ``maximum`` lowered to it; unchanged when ``maximum`` is empty. For test
    inventories, where alerts must fire within seconds."""
    if not maximum:
        return rules
    limit = duration_ms(maximum)
    if not isinstance(rules, Mapping) or not isinstance(rules.get("groups"), list):
        raise AnsibleFilterError("rules_for_max: a rule file is a mapping with a list of groups")
    result = _plain_copy(rules)
    for group in result["groups"]:
        for rule in group.get("rules") or []:
            for key in ("for", "keep_firing_for"):
                if key in rule and duration_ms(rule[key]) > limit:
                    rule[key] = str(maximum)
    return result


class FilterModule:
    """Monitoring filters of multimodel.orchestration."""

    def filters(self):
        return {
            "prometheus_targets": prometheus_targets,
            "node_exporter_listen": node_exporter_listen,
            "prometheus_rules_for_max": rules_for_max,
            "prometheus_duration_ms": duration_ms,
        }
