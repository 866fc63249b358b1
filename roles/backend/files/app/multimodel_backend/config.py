"""Settings, read once from the MMO_* environment variables the Ansible role sets.

Every problem raises ConfigError with a message that names the variable, so a bad
deployment fails at startup with one clear line instead of on the first query.
Values that may hold secrets (MMO_REDIS_URL, MMO_LLAMA_API_KEY, the API keys) are never echoed.
"""

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
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
    model: str | None = None  # identity of the model file (sha256 or name): part of cache keys


@dataclass(frozen=True)
class TierLimit:
    """The operator's bounds for one tier: the most max_tokens a query may ask for, and how
    many generations run at once (per worker process; more wait up to queue_timeout)."""

    max_tokens: int
    concurrency: int = 8


MIN_KEY_LENGTH = 16


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
    tier_wait: float = 0.0  # seconds a query waits for a tier whose every instance failed over
    max_tokens: int = 256
    drain_delay: float = 0.0
    api_keys: tuple[str, ...] = ()
    auth: bool = False  # load_settings turns it on unless MMO_AUTH=off
    allowed_origins: tuple[str, ...] = ()  # the site's own origins, for the WebSocket Origin check
    max_body_bytes: int = 65536
    # Every level has an entry after __post_init__ (a missing one gets default_tier_limit()).
    tier_limits: Mapping[str, TierLimit] = field(default_factory=dict)
    queue_timeout: float = 10.0
    redis_timeout: float = 0.05
    breaker_seconds: float = 5.0

    def __post_init__(self) -> None:
        limits = {level: self.tier_limits.get(level) or self.default_tier_limit() for level in LEVELS}
        object.__setattr__(self, "tier_limits", MappingProxyType(limits))

    def default_tier_limit(self) -> TierLimit:
        return TierLimit(max_tokens=max(1024, self.max_tokens), concurrency=8)

    def tier(self, level: str) -> list[Instance]:
        return [i for i in self.instances if i.complexity == level]

    def secrets(self) -> list[str]:
        """Values that must never reach a log line."""
        parts = urlsplit(self.redis_url)
        passwords = [parts.password] + parse_qs(parts.query).get("password", [])  # unix://...?password=
        candidates = [self.llama_api_key] + passwords + [p and unquote(p) for p in passwords] + list(self.api_keys)
        return list(dict.fromkeys(s for s in candidates if s))


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _origins(raw: str, name: str = "MMO_CORS_ORIGINS") -> tuple[str, ...]:
    """MMO_CORS_ORIGINS, MMO_ALLOWED_ORIGINS: comma-separated origins, each scheme://host[:port]
    (a browser's Origin header)."""
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # not a number, or out of range
            port_ok = False
        if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.path
                or parts.query or parts.fragment or parts.username is not None or " " in origin):
            raise ConfigError(f"{name}: {origin!r} is not an origin: "
                              "scheme://host[:port] with http or https, no path")
    return origins


def _instances(raw: str | None) -> tuple[Instance, ...]:
    name = "MMO_TIERS_JSON"
    if not raw or not raw.strip():
        raise ConfigError(f"{name} is required: a JSON list of llama-server instances "
                          '({"name", "url", "complexity", "alias", "model"})')
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
        model = item.get("model")
        if model is not None and not isinstance(model, str):
            raise ConfigError(f"{where}: 'model' must be a string (the model file's sha256 or name)")
        instances.append(Instance(label, _http_url(item["url"], f"{where}: 'url'"), item["complexity"],
                                  alias or None, model or None))
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


def _api_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """MMO_API_KEYS_FILE: one key per line; blank lines and # comments ignored. A key is never
    echoed: errors name the line."""
    path = env.get("MMO_API_KEYS_FILE", "").strip()
    if not path:
        return ()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"MMO_API_KEYS_FILE: cannot read {path}: {reason}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_LENGTH or not key.isprintable() or any(c.isspace() for c in key):
            raise ConfigError(f"MMO_API_KEYS_FILE: line {number} of {path} is not a usable key (at least "
                              f"{MIN_KEY_LENGTH} printable characters without spaces; value not shown)")
        keys.append(key)
    return tuple(dict.fromkeys(keys))


def _auth(env: Mapping[str, str], keys: tuple[str, ...]) -> bool:
    raw = env.get("MMO_AUTH", "").strip().lower() or "on"
    if raw not in ("on", "off"):
        raise ConfigError(f"MMO_AUTH must be on or off, got {raw!r}")
    if raw == "on" and not keys:
        raise ConfigError("MMO_AUTH is on but MMO_API_KEYS_FILE holds no key: set keys, or MMO_AUTH=off")
    return raw == "on"


def _whole(item: Mapping[str, object], key: str, where: str, default: int) -> int:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: '{key}' must be a whole number >= 1, got {value!r}")
    return value


def _tier_limits(raw: str, max_tokens: int) -> dict[str, TierLimit]:
    """MMO_TIER_LIMITS_JSON: {"simple": {"max_tokens": 1024, "concurrency": 8}, ...}."""
    name = "MMO_TIER_LIMITS_JSON"
    if not raw.strip():
        return {}
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(items, dict):
        raise ConfigError(f"{name} must be a JSON object keyed by complexity ({', '.join(LEVELS)})")
    limits = {}
    for level, item in items.items():
        where = f"{name}: {level}"
        if level not in LEVELS:
            raise ConfigError(f"{name}: {level!r} is not a complexity (one of {', '.join(LEVELS)})")
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object with max_tokens and/or concurrency")
        unknown = sorted(set(item) - {"max_tokens", "concurrency"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (max_tokens, concurrency)")
        limit = TierLimit(_whole(item, "max_tokens", where, max(1024, max_tokens)),
                          _whole(item, "concurrency", where, 8))
        if limit.max_tokens < max_tokens:
            # Every query that does not ask for max_tokens would be refused.
            raise ConfigError(f"{where}: 'max_tokens' {limit.max_tokens} is below MMO_MAX_TOKENS "
                              f"{max_tokens} (the default of a query): raise it or lower MMO_MAX_TOKENS")
        limits[level] = limit
    return limits


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    searxng = env.get("MMO_SEARXNG_URL", "").strip()
    max_tokens = _number(env, "MMO_MAX_TOKENS", 256, int, 1)
    api_keys = _api_keys(env)
    return Settings(
        instances=_instances(env.get("MMO_TIERS_JSON")),
        redis_url=_redis_url(_secret(env, "MMO_REDIS_URL")),
        llama_api_key=_secret(env, "MMO_LLAMA_API_KEY") or None,
        faiss_dir=env.get("MMO_FAISS_DIR", "").strip() or "/data/faiss",
        searxng_url=_http_url(searxng, "MMO_SEARXNG_URL") if searxng else None,
        cors_origins=_origins(env.get("MMO_CORS_ORIGINS", "")),
        cache_ttl=_number(env, "MMO_CACHE_TTL", 3600, int, 0),
        request_timeout=_number(env, "MMO_REQUEST_TIMEOUT", 120.0, float, 0.1),
        tier_wait=_number(env, "MMO_TIER_WAIT", 0.0, float, 0.0),
        max_tokens=max_tokens,
        drain_delay=_number(env, "MMO_DRAIN_DELAY", 0.0, float, 0.0),
        api_keys=api_keys,
        auth=_auth(env, api_keys),
        allowed_origins=_origins(env.get("MMO_ALLOWED_ORIGINS", ""), "MMO_ALLOWED_ORIGINS"),
        max_body_bytes=_number(env, "MMO_MAX_BODY_BYTES", 65536, int, 1024),
        tier_limits=_tier_limits(env.get("MMO_TIER_LIMITS_JSON", ""), max_tokens),
        queue_timeout=_number(env, "MMO_QUEUE_TIMEOUT", 10.0, float, 0.0),
        redis_timeout=_number(env, "MMO_REDIS_TIMEOUT", 0.05, float, 0.001),
        breaker_seconds=_number(env, "MMO_REDIS_BREAKER_SECONDS", 5.0, float, 0.0),
    )
