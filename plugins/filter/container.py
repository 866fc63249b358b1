# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The container policy's setting checks (container_service's preflight), in one pass.

Every app-tier service runs them before anything changes. As one filter they cost one task per
container instead of one per rule, and a run reports every bad setting of a container at once
rather than the first. Each message names the variable to set."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Callable

from ansible.errors import AnsibleFilterError

_PINNED = (re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$"),
           re.compile(r"^([^\s]*/)?[^/:@\s]+:(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"))
_SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")
_LOG_SIZE = re.compile(r"^[0-9]+[kmg]$")
_VOLUME = re.compile(r"^[^:]+:/[^:]*(:(ro|rw))?$")
_DOCKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TMPFS = re.compile(r"^/[^:\s]*(:[A-Za-z0-9=,._-]+)?$")
_CAPABILITY = re.compile(r"^([Cc][Aa][Pp]_)?[A-Za-z_]+$")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")
_SIGNAL = re.compile(r"^((SIG)?[A-Z][A-Z0-9+-]*|[0-9]+)?$")
_HOST_ADDRESS = re.compile(r"^(host-gateway|[0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*)$")
_PUBLISHED_PORT = re.compile(r"^((\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}:[0-9]{1,5}(/(tcp|udp))?$")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    """Jinja's int/float filters: a value that is not a number counts as 0 (and fails its check)."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        try:
            return kind(float(value))
        except (TypeError, ValueError, OverflowError):
            return kind(0)


def _size_bytes(value: str) -> int:
    return int(value[:-1] if value[-1:].isalpha() else value) * _UNITS[value[-1:].lower() if value[-1:].isalpha() else ""]


def _rejected(items: Any, pattern: re.Pattern) -> list[str]:
    return [item for item in items if not pattern.match(str(item))]


def _image_problems(name: str, s: Mapping[str, Any]) -> list[str]:
    problems = []
    image = str(s.get("image", ""))
    if not any(pattern.match(image) for pattern in _PINNED):
        problems.append("container %s: container_service_image '%s' is not pinned; name a tag other than \"latest\" "
                        "(for example redis:7.4.2-alpine) or a digest (NAME@sha256:...)." % (name, image))
    source = s.get("image_source", "pull")
    archive = s.get("image_archive") or {}
    if source == "archive" and not str(archive.get("src", "") or ""):
        problems.append("container %s: the archive source needs container_service_image_archive with src (the "
                        "`docker save` archive) and sha256 (its sha256, from sha256sum ARCHIVE); got %s." % (name, archive))
    build = s.get("image_build") or {}
    if source == "build" and not str(build.get("path", "") or "").startswith("/"):
        problems.append("container %s: the build source needs container_service_image_build.path, the absolute path "
                        "of the build context on the host; got %s." % (name, build))
    return problems


def _policy_problems(name: str, s: Mapping[str, Any]) -> list[str]:  # noqa: C901 - one rule per branch, in order
    problems = []
    add = problems.append
    prefix = "container %s: " % name
    user = str(s.get("user", ""))
    if user.split(":", maxsplit=1)[0].strip() in ("", "0", "root"):
        add(prefix + "container_service_user is '%s'; set it to the image's unprivileged UID[:GID] (containers "
                     "never run as root)." % user)
    networks = list(s.get("networks") or [])
    names = [network.get("name") for network in networks]
    if not networks:
        add(prefix + "container_service_networks is empty; list at least one network (the default bridge network "
                     "is shared by every container, so services never use it).")
    if len(set(names)) != len(names):
        add(prefix + "container_service_networks names a network more than once (got %s); list each network once."
            % names)
    ports = list(s.get("published_ports") or [])
    if ports and all(network.get("internal") for network in networks):
        add(prefix + "container_service_published_ports is set but every network in container_service_networks is "
                     "internal (an internal network cannot publish ports); add a network that is not internal.")
    memory, reservation = str(s.get("memory", "")), str(s.get("memory_reservation", ""))
    if not _SIZE.match(memory):
        add(prefix + "container_service_memory is '%s'; set a size like 512m or 2g." % memory)
    if not _SIZE.match(reservation):
        add(prefix + "container_service_memory_reservation is '%s'; set a size like 128m or 1g." % reservation)
    if _SIZE.match(memory) and _SIZE.match(reservation) and _size_bytes(reservation) > _size_bytes(memory):
        add(prefix + "container_service_memory_reservation ('%s') is larger than container_service_memory ('%s'); "
                     "the reservation must be no larger than the limit." % (reservation, memory))
    healthcheck = s.get("healthcheck") or {}
    if healthcheck and not healthcheck.get("test"):
        add(prefix + "container_service_healthcheck needs test, for example [CMD-SHELL, \"curl -fsS "
                     "http://127.0.0.1:8000/health\"]; leave the whole dict empty to keep the image's own check.")
    for volume in _rejected(s.get("volumes") or [], _VOLUME):
        add(prefix + "container_service_volumes item '%s' is not SOURCE:TARGET[:ro|rw] (TARGET an absolute path in "
                     "the container)." % volume)
    if not _DOCKER_NAME.match(name):
        add("container_service_name is '%s'; Docker names start with a letter or digit and hold only letters, "
            "digits, '_', '.' and '-'." % name)
    bad = _rejected((s.get("env") or {}).keys(), _ENV_NAME)
    if bad:
        add(prefix + "container_service_env has the names %s; a name holds letters, digits and '_' and does not "
                     "start with a digit." % bad)
    cpus = _number(s.get("cpus", 0), float)
    if cpus <= 0 or math.isnan(cpus):
        add(prefix + "container_service_cpus is %s; set the limit in cores, above 0 (for example 0.5)." % s.get("cpus"))
    if _number(s.get("cpu_shares", 0), int) < 2:
        add(prefix + "container_service_cpu_shares is %s; set at least 2 (1024 is Docker's default weight)."
            % s.get("cpu_shares"))
    bad = _rejected(s.get("tmpfs") or [], _TMPFS)
    if bad:
        add(prefix + "container_service_tmpfs has %s; each item is PATH[:OPTIONS], PATH an absolute path in the "
                     "container (for example /tmp:rw,noexec,nosuid,size=64m)." % bad)
    bad = _rejected(s.get("capabilities") or [], _CAPABILITY)
    if bad:
        add(prefix + "container_service_capabilities has %s; name capabilities like NET_BIND_SERVICE (or "
                     "CAP_NET_BIND_SERVICE)." % bad)
    bad_durations = {key: value for key, value in healthcheck.items()
                     if key in ("interval", "timeout", "start_period") and value is not None
                     and not _DURATION.match(str(value))}
    if bad_durations:
        add(prefix + "container_service_healthcheck has %s; set interval, timeout and start_period as Go durations "
                     "like 10s, 1m30s or 500ms." % bad_durations)
    if _number(s.get("health_timeout", 0), int) <= 0:
        add(prefix + "container_service_health_timeout is %s; set the seconds to wait for the container to become "
                     "healthy (above 0)." % s.get("health_timeout"))
    log_size = str(s.get("log_max_size", ""))
    if not _LOG_SIZE.match(log_size):
        add(prefix + "container_service_log_max_size is '%s'; set a size like 10m (a number and k, m or g)." % log_size)
    if _number(s.get("log_max_file", 0), int) < 1:
        add(prefix + "container_service_log_max_file is %s; keep at least 1 file." % s.get("log_max_file"))
    if _number(s.get("stop_timeout", 0), int) < 0:
        add(prefix + "container_service_stop_timeout is %s; set the seconds a stop waits (0 or more)."
            % s.get("stop_timeout"))
    signal = str(s.get("stop_signal") or "")
    if not _SIGNAL.match(signal):
        add(prefix + "container_service_stop_signal is '%s'; set a signal like SIGTERM, SIGQUIT or 15, or leave it "
                     "empty for the image's own." % signal)
    aliases = [alias for network in networks for alias in (network.get("aliases") or [])]
    bad = _rejected(names + aliases, _DOCKER_NAME)
    if bad:
        add(prefix + "container_service_networks has the names or aliases %s; each starts with a letter or digit "
                     "and holds only letters, digits, '_', '.' and '-'." % bad)
    bad_hosts = {host: address for host, address in (s.get("etc_hosts") or {}).items()
                 if not _HOST_ADDRESS.match(str(address))}
    if bad_hosts:
        add(prefix + "container_service_etc_hosts has %s; map each host name to an IP address or to host-gateway "
                     "(the host itself as the container sees it)." % bad_hosts)
    bad = [path for path in s.get("config_files") or [] if not str(path).startswith("/")]
    if bad:
        add(prefix + "container_service_config_files has %s; list the absolute host paths of the files the "
                     "container reads at start." % bad)
    bad = _rejected(ports, _PUBLISHED_PORT)
    if bad:
        add(prefix + "%s gives the published ports %s, not [ADDRESS:]HOST_PORT:CONTAINER_PORT[/tcp|udp] (ports "
                     "1-65535, an IPv6 ADDRESS in brackets); set it to a port number."
            % (s.get("ports_variable", "container_service_published_ports"), bad))
    return problems


def container_problems(settings: Any, scope: str = "all") -> list[str]:
    """What is wrong with a container's settings (the container_service_* values without the
    prefix), one message per broken rule; [] when there is nothing. scope=image: the image
    settings only (the image entry point)."""
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError("container_problems: expects a dict of container settings, got %r" % (settings,))
    if scope not in ("all", "image"):
        raise AnsibleFilterError("container_problems: scope is %r; use 'all' or 'image'" % (scope,))
    name = str(settings.get("name", ""))
    problems = _image_problems(name, settings)
    if scope == "all":
        problems += _policy_problems(name, settings)
    return problems


class FilterModule:
    def filters(self):
        return {"container_problems": container_problems}
