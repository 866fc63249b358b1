"""Settings, read once from the MMO_* environment variables the Ansible role sets.

Every problem raises ConfigError with a message that names the variable, so a bad
deployment fails at startup with one clear line instead of on the first query.
Values that may hold secrets (MMO_REDIS_URL, MMO_LLAMA_API_KEY) are never echoed.
"""

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

LEVELS = ("simple", "moderate", "complex")
Number = TypeVar("Number", int, float)


class ConfigError(ValueError):
    """The environment does not describe a usable backend."""


@dataclass(frozen=True)
class Instance:
    """One llama-server process serving one model tier."""

    name: str
    url: str
    complexity: str
    alias: str | None = None


@dataclass(frozen=True)
class Settings:
    instances: tuple[Instance, ...]
    redis_url: str
    llama_api_key: str | None = None
    faiss_dir: str = "/data/faiss"
    searxng_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    cache_ttl: int = 3600
    request_timeout: float = 120.0
    max_tokens: int = 256
    drain_delay: float = 0.0

    def tier(self, level: str) -> list[Instance]:
        return [i for i in self.instances if i.complexity == level]

    def secrets(self) -> list[str]:
        """Values that must never reach a log line."""
        parts = urlsplit(self.redis_url)
        passwords = [parts.password] + parse_qs(parts.query).get("password", [])  # unix://...?password=
        candidates = [self.llama_api_key] + passwords + [p and unquote(p) for p in passwords]
        return list(dict.fromkeys(s for s in candidates if s))


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _origins(raw: str) -> tuple[str, ...]:
    """MMO_CORS_ORIGINS: comma-separated origins, each scheme://host[:port] (a browser's Origin header)."""
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # not a number, or out of range
            port_ok = False
        if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.path
                or parts.query or parts.fragment or parts.username is not None or " " in origin):
            raise ConfigError(f"MMO_CORS_ORIGINS: {origin!r} is not an origin: "
                              "scheme://host[:port] with http or https, no path")
    return origins


def _instances(raw: str | None) -> tuple[Instance, ...]:
    name = "MMO_TIERS_JSON"
    if not raw or not raw.strip():
        raise ConfigError(f"{name} is required: a JSON list of llama-server instances "
                          '({"name", "url", "complexity", "alias"})')
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{name} must be a non-empty JSON list of instances")
    instances, seen = [], set()
    for number, item in enumerate(items, 1):
        where = f"{name}: entry {number}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object, got {type(item).__name__}")
        label = item.get("name")
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"{where} needs a non-empty string 'name'")
        where = f"{where} ({label})"
        if label in seen:
            raise ConfigError(f"{where}: duplicate name")
        seen.add(label)
        if item.get("complexity") not in LEVELS:
            raise ConfigError(f"{where}: 'complexity' must be one of {', '.join(LEVELS)}, "
                              f"got {item.get('complexity')!r}")
        if not isinstance(item.get("url"), str):
            raise ConfigError(f"{where} needs a string 'url'")
        alias = item.get("alias")
        if alias is not None and not isinstance(alias, str):
            raise ConfigError(f"{where}: 'alias' must be a string")
        instances.append(Instance(label, _http_url(item["url"], f"{where}: 'url'"), item["complexity"], alias or None))
    # Routing can pick any level, so each needs somewhere to go (one model may serve several
    # levels: list its URL once per level under different names).
    missing = [level for level in LEVELS if not any(i.complexity == level for i in instances)]
    if missing:
        raise ConfigError(f"{name} has no instance for complexity {', '.join(missing)} "
                          f"(every level of {', '.join(LEVELS)} needs at least one)")
    return tuple(instances)


def _number(env: Mapping[str, str], name: str, default: Number, kind: Callable[[str], Number],
            minimum: Number) -> Number:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        unit = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {unit} >= {minimum}, got {raw!r}")
    return value


def _redis_url(raw: str) -> str:
    if not raw:
        raise ConfigError("MMO_REDIS_URL is required, e.g. redis://:PASSWORD@redis:6379/0")
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        # The value is not shown: it may hold the Redis password.
        raise ConfigError("MMO_REDIS_URL must be a redis://, rediss:// or unix:// URL "
                          "(value not shown, it may hold a password)")
    return raw


def _secret(env: Mapping[str, str], name: str) -> str:
    """NAME, or the content of the file NAME_FILE names (one of the two, not both).

    The file form keeps secrets out of the container's environment, which anyone allowed to
    run `docker inspect` can read; the role mounts them read-only instead.
    """
    path = env.get(f"{name}_FILE", "").strip()
    if not path:
        return env.get(name, "").strip()
    if env.get(name, "").strip():
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    searxng = env.get("MMO_SEARXNG_URL", "").strip()
    return Settings(
        instances=_instances(env.get("MMO_TIERS_JSON")),
        redis_url=_redis_url(_secret(env, "MMO_REDIS_URL")),
        llama_api_key=_secret(env, "MMO_LLAMA_API_KEY") or None,
        faiss_dir=env.get("MMO_FAISS_DIR", "").strip() or "/data/faiss",
        searxng_url=_http_url(searxng, "MMO_SEARXNG_URL") if searxng else None,
        cors_origins=_origins(env.get("MMO_CORS_ORIGINS", "")),
        cache_ttl=_number(env, "MMO_CACHE_TTL", 3600, int, 0),
        request_timeout=_number(env, "MMO_REQUEST_TIMEOUT", 120.0, float, 0.1),
        max_tokens=_number(env, "MMO_MAX_TOKENS", 256, int, 1),
        drain_delay=_number(env, "MMO_DRAIN_DELAY", 0.0, float, 0.0),
    )
