# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the reference backend's tests (roles/backend/files/app).

Everything is real except llama-server: Redis is a throwaway redis-server with a password,
the backend runs in uvicorn on a loopback port, and llama-server is a canned HTTP server
(llama-server cannot run on this host) answering with llama-server's real formats.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from types import SimpleNamespace

import pytest

from support.fake_searxng import FakeSearxng
from support.servers import free_port, refused_url, started, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
APP_DIR = os.path.join(ROOT, 'roles', 'backend', 'files', 'app')
sys.path.insert(0, APP_DIR)
# The role copies APP_DIR into the image: keep __pycache__ out of it (here and in the
# uvicorn and build_index subprocesses the tests start).
sys.dont_write_bytecode = True
os.environ['PYTHONDONTWRITEBYTECODE'] = '1'

import httpx  # noqa: E402 (after the path set-up, like the imports the tests make)
import redis  # noqa: E402
import uvicorn  # noqa: E402

from multimodel_backend.api import create_app  # noqa: E402
from multimodel_backend.config import Instance, Settings  # noqa: E402


# --- Redis ------------------------------------------------------------------------------

class RedisServer:
    """A throwaway redis-server on a random loopback port, with a password."""

    def __init__(self):
        binary = shutil.which('redis-server')
        if not binary:
            pytest.fail('redis-server is not installed: apt-get install -y redis-server')
        self.password = 'pw-' + secrets.token_hex(12)
        self.dir = tempfile.mkdtemp(prefix='mmo-redis-')
        for attempt in range(5):  # the port is free when picked, but another process may take it
            self.port = free_port()
            self.process = subprocess.Popen(
                [binary, '--port', str(self.port), '--bind', '127.0.0.1', '--requirepass', self.password,
                 '--save', '', '--appendonly', 'no', '--dir', self.dir, '--logfile', ''],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.url = f'redis://:{self.password}@127.0.0.1:{self.port}/0'
            self.client = redis.Redis.from_url(self.url, decode_responses=True)
            try:
                wait_for(self._answers, timeout=5, what='redis-server')
                return
            except AssertionError:
                self.process.kill()
                self.process.wait()
        raise RuntimeError('could not start redis-server')

    def _answers(self):
        if self.process.poll() is not None:
            raise AssertionError('redis-server exited')
        try:
            return self.client.ping()
        except redis.exceptions.ConnectionError:
            return False

    def close(self):
        self.client.close()
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisSwitch:
    """A TCP proxy in front of the test's redis-server whose behaviour the test switches:
    'forward' (Redis answers), 'blackhole' (connections are accepted and never answered: a
    hung Redis or a firewall dropping packets), 'reset' (accepted, then closed at once).
    connections counts the connections clients opened."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.mode = 'forward'
        self.connections = 0
        self.held = []  # sockets of connections left unanswered or being forwarded
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, password):
        return f'redis://:{password}@127.0.0.1:{self.port}/0'

    def _accept(self):
        while True:
            try:
                conn, _address = self.listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            if self.mode == 'reset':
                conn.close()
            elif self.mode == 'blackhole':
                self.held.append(conn)
            else:
                upstream = socket.create_connection(('127.0.0.1', self.target_port))
                self.held += [conn, upstream]
                for source, sink in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_connections(self):
        """Close every connection as a restarting Redis does (the listener stays)."""
        held, self.held = self.held, []
        for sock in held:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()
        for sock in self.held:
            sock.close()


@pytest.fixture
def redis_switch(redis_db):
    """A RedisSwitch in front of the test's (emptied) redis-server."""
    switch = RedisSwitch(redis_db.port)
    yield switch
    switch.close()


@pytest.fixture(scope='session')
def redis_server():
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def redis_db(redis_server):
    """The session's redis-server, emptied for this test."""
    redis_server.client.flushall()
    return redis_server


# --- canned servers ---------------------------------------------------------------------

@pytest.fixture
def servers(fake_llama_server):
    """Factory of canned servers, all closed after the test: servers.llama(name, **knobs)
    (a FakeLlamaServer, support/fake_llama.py), servers.searxng(results), servers.refused()
    (a URL where nothing listens)."""
    with started(FakeSearxng) as searxng:
        yield SimpleNamespace(llama=fake_llama_server, searxng=searxng, refused=refused_url)


# --- the backend ------------------------------------------------------------------------------

def _tiers(simple, moderate, complex_):
    """Instances for the three levels from lists of URLs (names like the role's: Q2_FAST_1...)."""
    instances = []
    for prefix, level, alias, urls in (('Q2_FAST', 'simple', 'q2-fast', simple),
                                       ('Q3_SYNTH', 'moderate', 'q3-synth', moderate),
                                       ('Q4_DEEP', 'complex', 'q4-deep', complex_)):
        for number, url in enumerate(urls, 1):
            instances.append(Instance(f'{prefix}_{number}', url, level, alias))
    return tuple(instances)


class RunningBackend:
    """create_app(settings) served by a real uvicorn on a loopback port, in a thread."""

    def __init__(self, settings):
        self.settings = settings
        self.app = create_app(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(('127.0.0.1', 0))
        self.url = 'http://127.0.0.1:%d' % sock.getsockname()[1]
        self.ws_url = self.url.replace('http://', 'ws://') + '/ws'
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, lifespan='on'))
        self.thread = threading.Thread(target=self.server.run, kwargs={'sockets': [sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), what='uvicorn')
        assert self.server.started, 'the backend did not start'
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def query(self, query, **fields):
        return self.http.post('/api/query', json=dict(fields, query=query))

    def close(self):
        self.http.close()
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def backend(redis_db, tmp_path):
    """Factory: backend(instances, **settings) -> a RunningBackend (stopped after the test).
    Redis is the test's redis-server; MMO_FAISS_DIR a fresh tmp_path/faiss."""
    started = []

    def start(instances, **overrides):
        # redis_timeout: the production 50 ms is a cache miss on a loaded test host (2 cores,
        # many processes); tests of the deadline and breaker set their own.
        options = dict(instances=instances, redis_url=redis_db.url, faiss_dir=str(tmp_path / 'faiss'),
                       request_timeout=5.0, redis_timeout=2.0)
        options.update(overrides)
        started.append(RunningBackend(Settings(**options)))
        return started[-1]

    yield start
    for running in started:
        running.close()


@pytest.fixture
def stack(servers, backend):
    """The usual deployment: two simple instances, one moderate, one complex, all healthy."""
    class Stack:
        fast1 = servers.llama('Q2_FAST_1')
        fast2 = servers.llama('Q2_FAST_2')
        synth = servers.llama('Q3_SYNTH_1')
        deep = servers.llama('Q4_DEEP_1')

    Stack.backend = backend(_tiers([Stack.fast1.url, Stack.fast2.url], [Stack.synth.url], [Stack.deep.url]))
    return Stack


def _build_index(directory, name, docs, *extra):
    """Run the real CLI: python -m multimodel_backend.build_index DIR NAME docs.jsonl."""
    with tempfile.NamedTemporaryFile('w', suffix='.jsonl', encoding='utf-8') as handle:
        for doc in docs:
            handle.write(json.dumps(doc) + '\n')
        handle.flush()
        return subprocess.run([sys.executable, '-m', 'multimodel_backend.build_index', str(directory), name,
                               handle.name, *extra], cwd=APP_DIR, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def tiers():
    """tiers(simple_urls, moderate_urls, complex_urls) -> Settings.instances."""
    return _tiers


@pytest.fixture
def build_index():
    """build_index(dir, name, docs, *cli_args) -> CompletedProcess of the real CLI."""
    return _build_index


@pytest.fixture
def app_dir():
    """roles/backend/files/app: run `python -m multimodel_backend...` from here."""
    return APP_DIR


@pytest.fixture
def wait_until():
    """wait_until(predicate, timeout=10, what=...): poll until predicate() is true."""
    return wait_for
