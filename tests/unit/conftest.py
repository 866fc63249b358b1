# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest setup for the unit tests.

1. Make ``ansible_collections.multimodel.orchestration`` importable from this checkout,
   whatever directory it lives in, without putting a symlink inside the repository.
2. Provide the fake servers of support/ as fixtures: ``fake_llama_server`` (a canned
   llama.cpp llama-server), ``raw_server`` (not HTTP), ``refused_url`` (nothing listens),
   and ``self_signed_cert`` for https.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from support.fake_llama import FakeLlamaServer
from support.servers import RawServer, started
from support.servers import refused_url as refused

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _link_checkout(base):
    """Make base/ansible_collections/multimodel/orchestration a symlink to this checkout;
    return False when a real directory (e.g. an installed copy) is in the way."""
    namespace = os.path.join(base, 'ansible_collections', 'multimodel')
    link = os.path.join(namespace, 'orchestration')
    os.makedirs(namespace, exist_ok=True)
    if os.path.realpath(link) == ROOT:
        return True
    if os.path.lexists(link) and not os.path.islink(link):
        return False
    if os.path.islink(link):
        os.unlink(link)  # a stale link to another checkout
    try:
        os.symlink(ROOT, link)
    except FileExistsError:
        pass  # another pytest process made it at the same moment
    return os.path.realpath(link) == ROOT


def _collections_dir():
    """A directory holding ansible_collections/multimodel/orchestration -> this checkout."""
    parent = os.path.dirname(ROOT)
    # Already inside a collection tree (e.g. ansible-test units): use it as is.
    if os.path.basename(parent) == 'multimodel' \
            and os.path.basename(os.path.dirname(parent)) == 'ansible_collections':
        return os.path.dirname(os.path.dirname(parent))
    # `make setup` links the checkout there too (ansible.cfg's collections_path).
    base = os.path.join(ROOT, '.venv', 'collections')
    if os.path.isdir(os.path.join(ROOT, '.venv')) and _link_checkout(base):
        return base
    base = tempfile.mkdtemp(prefix='mmo-unit-collections-')
    atexit.register(shutil.rmtree, base, True)  # rmtree removes the link, not the checkout
    _link_checkout(base)
    return base


sys.path.insert(0, _collections_dir())


@pytest.fixture
def fake_llama_server():
    """Factory: fake_llama_server(name='llama', **knobs) -> a running FakeLlamaServer
    (support/fake_llama.py), closed after the test."""
    with started(FakeLlamaServer) as start:
        yield start


@pytest.fixture
def raw_server():
    """Factory: raw_server(reply=b'') -> a RawServer answering every connection with reply."""
    with started(RawServer) as start:
        yield start


@pytest.fixture
def refused_url():
    return refused()


@pytest.fixture(scope='session')
def self_signed_cert(tmp_path_factory):
    """(certfile, keyfile) of a self-signed certificate for 127.0.0.1, made with openssl."""
    if not shutil.which('openssl'):
        pytest.skip('openssl is not installed')
    directory = tmp_path_factory.mktemp('tls')
    cert, key = str(directory / 'cert.pem'), str(directory / 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
                    '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
                   check=True, capture_output=True)
    return cert, key
