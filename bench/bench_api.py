#!/usr/bin/env python
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway on a host site.yml deployed (the app_tier Molecule instance), through Caddy
with the site's API key: query latency with Redis up, stopped and hung, and requests per
second. Prints two tables; asserts nothing.

1. Latency of uncached queries (POST /api/query, simple level, one after another) with Redis
   up, then stopped (`docker stop mmo-redis`: the name no longer resolves), then hung
   (`docker pause mmo-redis`: connections open, nothing answers), each time put back. The
   backend skips its cache for a while after a failure (a breaker) and waits at most its
   Redis timeout, so a query costs about its uncached time whatever Redis does: the last
   column is the difference of the medians from "Redis up".
2. Requests per second through Caddy with auth on (N requests over C threads): cached and
   uncached /api/query, uncached /v1/chat/completions, and refused ones (no key: 401).

The queries run in the instance (bench's stack client, molecule/app_tier/tests/stack_client.py,
copied there); Redis is stopped and started from here. Run it on the controller:
  python bench/bench_api.py --instance app_tier-debian-testing [--requests 40] [--concurrency 4]
`bash bench/run-api-benches.sh` converges the instance, runs this, destroys it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'molecule', 'app_tier', 'tests'))
from stack_client import table  # noqa: E402 pylint: disable=wrong-import-position

CLIENT = '/usr/local/lib/mmo-stack-client.py'
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'molecule', 'app_tier', 'tests',
                      'stack_client.py')


class Bench:
    def __init__(self, args):
        self.args = args
        subprocess.run(['docker', 'cp', SOURCE, f'{args.instance}:{CLIENT}'], check=True)

    def sh(self, command, timeout=300):
        """A shell command in the instance: (exit status, stdout)."""
        done = subprocess.run(['docker', 'exec', self.args.instance, 'sh', '-c', command], capture_output=True,
                              text=True, timeout=timeout, check=False)
        return done.returncode, done.stdout.strip()

    def timed(self, spec, env=None):
        """stack_client.py timed SPEC in the instance: its result."""
        settings = ' '.join(f'-e {name}={value}' for name, value in (env or {}).items())
        done = subprocess.run(f"docker exec {settings} {self.args.instance} python3 {CLIENT} timed '{json.dumps(spec)}'",
                              shell=True, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            raise RuntimeError(f'the stack client failed: {done.stderr[-2000:]}')
        return json.loads(done.stdout)

    def redis_healthy(self):
        return self.sh("docker inspect --format '{{.State.Health.Status}}' mmo-redis")[1] == 'healthy'

    def until(self, check, limit=120.0):
        start = time.time()
        while not check():
            if time.time() - start > limit:
                raise RuntimeError('Redis did not come back healthy')
            time.sleep(0.5)

    def latency_row(self, label, spec):
        result = self.timed(spec)
        values = [seconds * 1000 for seconds in result['latencies']]
        if not values:
            return [label, 0, result['statuses'], '-', '-', '-', '-'], None
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
        return [label, len(values), sum(result['statuses'].values()), f'{values[0]:.1f}',
                f'{statistics.median(values):.1f}', f'{p90:.1f}', f'{max(values):.1f}'], statistics.median(values)

    def latencies(self):
        spec = {'requests': self.args.latency_requests, 'mode': 'simple', 'max_tokens': self.args.max_tokens}
        rows = []
        row, up = self.latency_row('Redis up', spec)
        rows.append(row + ['0.0'])
        for label, stop, start in (('Redis stopped (docker stop)', 'docker stop mmo-redis', 'docker start mmo-redis'),
                                   ('Redis hung (docker pause)', 'docker pause mmo-redis',
                                    'docker unpause mmo-redis')):
            status, dummy = self.sh(stop)
            if status != 0:
                raise RuntimeError(f'{stop} failed')
            try:
                row, median = self.latency_row(label, spec)
            finally:
                self.sh(start)
                self.until(self.redis_healthy)
            rows.append(row + ([f'{median - up:+.1f}'] if median is not None and up is not None else ['-']))
        return rows

    def throughput(self):
        base = {'requests': self.args.requests, 'concurrency': self.args.concurrency,
                'max_tokens': self.args.max_tokens, 'mode': 'simple'}
        rows = []
        for label, spec, env in (
                ('/api/query, cached', dict(base, cached=True), None),
                ('/api/query, uncached', base, None),
                ('/v1/chat/completions, uncached', dict(base, path='/v1/chat/completions'), None),
                ('/api/query, no key (401)', dict(base, expect=401), {'STACK_KEY_FILE': ''})):
            result = self.timed(spec, env)
            values = [seconds * 1000 for seconds in result['latencies']]
            rate = len(values) / result['seconds'] if result['seconds'] else 0.0
            rows.append([label, len(values), sum(result['statuses'].values()), f'{rate:.1f}',
                         f'{statistics.median(values):.1f}' if values else '-',
                         f'{max(values):.1f}' if values else '-'])
        return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--instance', default='app_tier-debian-testing')
    parser.add_argument('--requests', type=int, default=40, help='requests per throughput row')
    parser.add_argument('--concurrency', type=int, default=4)
    parser.add_argument('--latency-requests', type=int, default=20, help='queries per Redis state')
    parser.add_argument('--max-tokens', type=int, default=8)
    args = parser.parse_args()
    bench = Bench(args)
    print(table(f'Query latency through Caddy with Redis up, stopped and hung ({args.latency_requests} uncached '
                f'queries one after another, simple level, max_tokens {args.max_tokens}; ms)',
                ['Redis', 'answered', 'failed', 'first', 'p50', 'p90', 'max', 'p50 - up'], bench.latencies()))
    print()
    print(table(f'Requests per second through Caddy, auth on ({args.requests} requests over '
                f'{args.concurrency} threads, max_tokens {args.max_tokens})',
                ['request', 'answered', 'other', 'req/s', 'p50 ms', 'max ms'], bench.throughput()))


if __name__ == '__main__':
    main()
