"""The ASGI entry point: `uvicorn multimodel_backend.main:app`.

The package, by concern: config.py (settings from MMO_*), schemas.py (the query on the
wire), service.py (how a query is answered: routing.py, the Redis cache of cache.py, the
tier limits of limits.py, sources from retrieval.py and SearXNG, llama.py's instances),
api.py (the routes), openai_api.py (the OpenAI-compatible /v1 API), auth.py (API keys and
the body limit), drain.py and serve.py (graceful drain), metrics.py (Prometheus), log.py
(the logger and its secret redaction).
"""

import sys

from fastapi import FastAPI

from .api import create_app
from .config import ConfigError, load_settings


def __getattr__(name: str) -> FastAPI:
    """`uvicorn multimodel_backend.main:app` builds the app from the environment here, on
    first access, so tests can import this module and build apps from their own settings.

    A bad configuration stops with one clear line and exit status 3, uvicorn's "startup
    failed" status, which also stops a --workers supervisor instead of restarting workers."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"multimodel_backend: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    app = create_app(settings)
    globals()["app"] = app
    return app
