#!/usr/bin/env python
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults and deploys under load, on a host site.yml deployed (the app_tier Molecule instance).

Queries through Caddy in a loop (POST /api/query on every tier, and WebSocket streams during
deploys) while one thing happens at a time. Prints two tables, the queries answered, failed
and cut, and the recovery or deploy seconds; asserts nothing (the app_tier suite asserts).

Faults: kill -9 of llama-server@Q2_FAST_1 (recovery: it answers /health again), docker stop
then start of one backend replica (start to healthy), docker restart of Redis (to PONG),
docker restart of the host container itself (to every unit and container healthy and a query
answered; probe queries once a second). Deploys: site.yml rolling the backend replicas
(backend_cache_ttl changed, then back) and reloading Caddy (a header added, then removed).

Run it on the controller, with the collection installed where ansible-playbook finds it:
  python bench/bench_faults.py --instance app_tier-debian-testing --inventory INVENTORY
`bash bench/run-fault-benches.sh` converges the instance, runs this, destroys it.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'molecule', 'app_tier', 'tests'))
from stack_client import RemoteLoad, table  # noqa: E402 pylint: disable=wrong-import-position

CLIENT = '/usr/local/lib/mmo-stack-client.py'
CONTAINERS = ['mmo-redis', 'mmo-searxng', 'mmo-backend-1', 'mmo-backend-2', 'mmo-caddy']
LLAMA = {'Q2_FAST_1': 8080, 'Q2_FAST_2': 8081, 'Q3_SYNTH': 8082, 'Q4_DEEP': 8083}
HEALTH = ("k=$(sed -n 's/^LLAMA_API_KEY=//p' /etc/llama-server/*.env 2>/dev/null | head -n 1 | tr -d '\"'); "
          "curl -fsS -m 2 ${k:+-H \"Authorization: Bearer $k\"} http://127.0.0.1:%d/health")


class Bench:
    def __init__(self, args):
        self.args = args

    def sh(self, command, timeout=120):
        """A shell command in the instance: (exit status, stdout)."""
        try:
            done = subprocess.run(['docker', 'exec', self.args.instance, 'sh', '-c', command], capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return 124, ''
        return done.returncode, done.stdout.strip()

    def until(self, check, limit=300.0):
        """Seconds until check() holds (polled), or None past limit."""
        start = time.time()
        while not check():
            if time.time() - start > limit:
                return None
            time.sleep(0.2)
        return time.time() - start

    def pid(self, instance):
        return self.sh(f'systemctl show -p MainPID --value llama-server@{instance}')[1]

    def healthy(self, name):
        return self.sh(f"docker inspect --format '{{{{.State.Health.Status}}}}' {name}")[1] == 'healthy'

    def query_ok(self):
        body = json.dumps({'query': f'are you there {uuid.uuid4().hex[:8]}', 'mode': 'simple', 'max_tokens': 8})
        status, out = self.sh(f"STACK_TIMEOUT=10 python3 {CLIENT} post /api/query '{body}'", 30)
        return status == 0 and json.loads(out)['status'] == 200

    def load(self, ws=(), max_tokens=8, timeout=30):
        return RemoteLoad(self.args.instance, CLIENT, {'http': ['simple', 'simple', 'moderate', 'complex'],
                                                       'ws': list(ws), 'max_tokens': max_tokens, 'timeout': timeout,
                                                       'pause': 0.2})

    def under_load(self, fault, recovered, load_options=None):
        """Run fault() then wait for recovered() while the load runs; (load, recovery seconds)."""
        load = self.load(**(load_options or {}))
        time.sleep(3)
        fault()
        recovery = self.until(recovered)
        time.sleep(2)
        load.stop()
        return load, recovery

    def playbook(self, extra_vars, tags):
        command = ['ansible-playbook', '-i', self.args.inventory, '--limit', self.args.instance, self.args.playbook,
                   '--extra-vars', json.dumps(extra_vars), '--tags', tags]
        return subprocess.run(command, capture_output=True, text=True, check=False).returncode

    def faults(self):
        rows = []
        pid = self.pid('Q2_FAST_1')
        load, seconds = self.under_load(
            lambda: self.sh(f'kill -9 {pid}'),
            lambda: self.pid('Q2_FAST_1') not in ('0', pid) and self.sh(HEALTH % LLAMA['Q2_FAST_1'])[0] == 0)
        rows.append(('kill -9 llama-server@Q2_FAST_1', load, seconds, 'kill -> new MainPID answers /health'))

        def stop_start():
            self.sh('docker stop mmo-backend-1')
            time.sleep(5)
            self.sh('docker start mmo-backend-1')
        load, seconds = self.under_load(stop_start, lambda: self.healthy('mmo-backend-1'))
        rows.append(('docker stop (5 s), start mmo-backend-1', load, seconds, 'start -> healthy'))

        password = self.sh('cat /etc/multimodel/redis/password')[1]
        load, seconds = self.under_load(
            lambda: self.sh('docker restart mmo-redis'),
            lambda: self.sh(f'docker exec -e REDISCLI_AUTH={password} mmo-redis redis-cli PING')[1] == 'PONG')
        rows.append(('docker restart mmo-redis', load, seconds, 'restart done -> PONG'))
        table_rows = [(label, load.count('http', 'ok'), load.count('http', 'failed'), self.fmt(seconds), what)
                      for label, load, seconds, what in rows]
        if not self.args.skip_host_restart:
            table_rows.append(self.host_restart())
        return table_rows

    def host_restart(self):
        subprocess.run(['docker', 'restart', '--time', '30', self.args.instance], check=False,
                       stdout=subprocess.DEVNULL)
        probes = {True: 0, False: 0}

        def back():
            time.sleep(1)
            answered = self.query_ok()
            probes[answered] += 1
            return (answered and all(self.sh(HEALTH % port)[0] == 0 for port in LLAMA.values())
                    and all(self.healthy(name) for name in CONTAINERS))
        seconds = self.until(back)
        return (f'docker restart {self.args.instance}', probes[True], probes[False], self.fmt(seconds),
                'boot -> all healthy, a query answered (1 probe/s)')

    def deploys(self):
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'roles', 'caddy', 'defaults',
                               'main.yml'), encoding='utf-8') as source:
            headers = self.caddy_headers(source.read())
        changes = [('backend roll (backend_cache_ttl 1800)', {'backend_cache_ttl': 1800}, 'backend_configure,backend_run'),
                   ('backend roll (backend_cache_ttl back)', {}, 'backend_configure,backend_run'),
                   ('Caddy reload (a header added)', {'caddy_security_headers': dict(headers, **{'X-Bench': '1'})},
                    'caddy_configure,caddy_run'),
                   ('Caddy reload (the header removed)', {}, 'caddy_configure,caddy_run')]
        rows = []
        for label, extra_vars, tags in changes:
            load = self.load(ws=['simple', 'moderate'], max_tokens=768, timeout=90)
            time.sleep(3)
            start = time.time()
            status = self.playbook(extra_vars, tags)
            seconds = time.time() - start
            time.sleep(3)
            load.stop()
            rows.append((label + ('' if status == 0 else f' (site.yml FAILED, exit {status})'),
                         load.count('http', 'ok'), load.count('http', 'failed'), load.count('ws', 'ok'),
                         load.count('ws', 'cut'), load.count('ws', 'failed'), load.count('ws', 'reconnected'),
                         f'{seconds:.1f}'))
        return rows

    @staticmethod
    def caddy_headers(defaults):
        """caddy_security_headers from the role's defaults (PyYAML comes with Ansible)."""
        import yaml  # pylint: disable=import-outside-toplevel
        return yaml.safe_load(defaults)['caddy_security_headers']

    @staticmethod
    def fmt(seconds):
        return 'not back' if seconds is None else f'{seconds:.1f}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--instance', default='app_tier-debian-testing')
    parser.add_argument('--inventory', required=True, help="the Molecule scenario's inventory")
    parser.add_argument('--playbook', default='molecule/app_tier/converge.yml')
    parser.add_argument('--skip-host-restart', action='store_true')
    args = parser.parse_args()
    bench = Bench(args)
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'molecule', 'app_tier', 'tests',
                          'stack_client.py')
    subprocess.run(['docker', 'cp', source, f'{args.instance}:{CLIENT}'], check=True)
    deploys = bench.deploys()
    print(table('Deploys under load: long queries (4 loops) and WebSocket streams (2 loops) through Caddy',
                ('deploy', 'http ok', 'http failed', 'ws ok', 'ws cut', 'ws failed', 'ws reopened', 'deploy s'),
                deploys))
    print()
    print(table('Faults under load: queries through Caddy (4 loops: simple x2, moderate, complex)',
                ('fault', 'queries ok', 'failed', 'recovery s', 'recovery is'), bench.faults()))


if __name__ == '__main__':
    main()
