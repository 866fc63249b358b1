"""`mmo-serve` (or `python -m multimodel_backend.serve`): uvicorn, same options, with a graceful drain.

uvicorn alone, on SIGTERM, closes its listening sockets at once and closes every WebSocket
with 1012 at once: a rolling deploy cuts streams, and requests the proxy still sends in the
seconds before its health check notices land on a closed port. Here the first SIGTERM (or
SIGINT) starts the app's drain instead (drain.py: /health answers 503, in-flight requests and
WebSocket queries go on, new requests are still served); uvicorn's own shutdown starts once
MMO_DRAIN_DELAY seconds have passed and nothing is in flight, or when
--timeout-graceful-shutdown seconds from the signal are up. A second SIGINT forces the exit.

With --workers N the parent (uvicorn's supervisor) passes SIGTERM on to every worker, each
draining on its own, and waits for them.
"""

import asyncio
import importlib
import logging
import math
import socket
import time
from types import FrameType

from uvicorn.server import Server
from uvicorn.supervisors.multiprocess import Process

from .drain import Drain

logger = logging.getLogger("uvicorn.error")


def find_drain(app: object) -> Drain | None:
    """The Drain of the app uvicorn serves (create_app's app.state.drain), under uvicorn's wrappers."""
    for _depth in range(16):  # ProxyHeadersMiddleware(FastAPI) and the like: a few levels at most
        if app is None:
            break
        drain = getattr(getattr(app, "state", None), "drain", None)
        if isinstance(drain, Drain):
            return drain
        app = getattr(app, "app", None)
    return None


class DrainingServer(Server):
    """uvicorn's Server whose shutdown waits for the app's drain first."""

    def _drain(self) -> Drain | None:
        return find_drain(getattr(self.config, "loaded_app", None)) if self.started else None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self._drain()
        if drain is not None and not drain.draining:
            drain.start()  # from now on /health answers 503
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = self._drain()
        if drain is not None and drain.draining:
            await self._wait_for(drain)
        await super().shutdown(sockets)

    async def _wait_for(self, drain: Drain) -> None:
        assert drain.since is not None
        timeout = self.config.timeout_graceful_shutdown
        deadline = None if timeout is None else drain.since + timeout
        logger.info("Draining: /health answers 503; exiting once %s s have passed and nothing is in flight "
                    "(%d now)%s", drain.delay, drain.active, "" if deadline is None else f", {timeout} s at most")
        while not drain.done() and not self.force_exit:
            if deadline is not None and time.monotonic() >= deadline:
                logger.error("Drain timeout (%s s) exceeded with %d request(s) in flight", timeout, drain.active)
                break
            await asyncio.sleep(0.1)
        if deadline is not None:
            # uvicorn's own wait for the connections gets what is left of the same timeout.
            self.config.timeout_graceful_shutdown = max(1, math.ceil(deadline - time.monotonic()))


class DrainingProcess(Process):
    """A --workers child process running a DrainingServer (pickled by name into the child)."""

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


def main(argv: list[str] | None = None) -> None:
    """uvicorn's command line, with DrainingServer for a single process and for every worker."""
    # uvicorn builds its Server (and its worker processes) from these module names.
    uvicorn_main = importlib.import_module("uvicorn.main")
    multiprocess = importlib.import_module("uvicorn.supervisors.multiprocess")
    uvicorn_main.Server = DrainingServer
    multiprocess.Process = DrainingProcess
    uvicorn_main.main.main(args=argv, prog_name="mmo-serve")


if __name__ == "__main__":
    # Run as multimodel_backend.serve, not __main__: the worker processes unpickle
    # DrainingProcess by its module's name.
    importlib.import_module("multimodel_backend.serve").main()
