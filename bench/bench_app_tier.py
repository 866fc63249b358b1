#!/usr/bin/env python
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Requests per second and p50/p99 latency of the app tier on a host site.yml deployed:
through Caddy (HTTPS) and the backend, for cached and uncached queries, against calling
llama-server directly with the same generation. Prints a table; asserts nothing.

Run it on that host (stdlib only):
  python bench_app_tier.py [--requests 40] [--concurrency 4] [--max-tokens 8]
`make bench` runs it inside the app_tier Molecule instance.
"""

import argparse
import json
import ssl
import statistics
import threading
import time
import urllib.request
import uuid

CA = '/var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt'
# What the roles wrote on the host: the site's API keys (one per line) and the model servers' key.
SITE_KEYS = '/etc/multimodel/backend/api_keys'
LLAMA_KEY_ENV = '/etc/llama-server/api-key.env'


def first_key(path):
    """The first key in a keys file (SITE_KEYS) or a KEY=VALUE file (LLAMA_KEY_ENV); None without one."""
    try:
        with open(path, encoding='utf-8') as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith('#'):
                    return line.split('=', 1)[1] if '=' in line else line
    except FileNotFoundError:
        pass
    return None


def bearer(key):
    return {'Authorization': f'Bearer {key}'} if key else {}


def post(url, body, context=None, headers=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method='POST',
                                     headers=dict({'Content-Type': 'application/json'}, **(headers or {})))
    with urllib.request.urlopen(request, timeout=120, context=context) as answer:
        data = json.loads(answer.read())
        if answer.status != 200:
            raise RuntimeError(f'HTTP {answer.status}')
    return data


def run(make_call, requests, concurrency):
    """Run `requests` calls over `concurrency` threads; return (wall seconds, latencies, errors)."""
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(requests))

    def worker():
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            start = time.perf_counter()
            try:
                make_call(number)
            except Exception as error:  # pylint: disable=broad-except
                with lock:
                    errors.append(repr(error))
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker) for dummy in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, errors


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--requests', type=int, default=40)
    parser.add_argument('--concurrency', type=int, default=4)
    parser.add_argument('--max-tokens', type=int, default=8)
    parser.add_argument('--site', default='https://localhost')
    parser.add_argument('--llama', default='http://127.0.0.1:8080', help='one fast-tier llama-server')
    parser.add_argument('--alias', default='q2-fast')
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=CA)
    site_auth, llama_auth = bearer(first_key(SITE_KEYS)), bearer(first_key(LLAMA_KEY_ENV))
    run_id = uuid.uuid4().hex[:8]
    prompt = 'Summarise the benefits of caching answers number {}'

    def direct(number):
        post(args.llama + '/v1/chat/completions',
             {'model': args.alias, 'max_tokens': args.max_tokens,
              'messages': [{'role': 'user', 'content': prompt.format(f'{run_id}-d{number}')}]}, headers=llama_auth)

    def uncached(number):
        post(args.site + '/api/query', {'query': prompt.format(f'{run_id}-u{number}'), 'mode': 'simple',
                                        'max_tokens': args.max_tokens}, context, site_auth)

    cached_query = {'query': prompt.format(f'{run_id}-cached'), 'mode': 'simple', 'max_tokens': args.max_tokens}
    post(args.site + '/api/query', cached_query, context, site_auth)  # warm the cache entry

    def cached(number):
        if not post(args.site + '/api/query', cached_query, context, site_auth)['cached']:
            raise RuntimeError('expected a cached answer')

    rows = []
    for label, call in (('llama-server direct (Q2_FAST_1)', direct),
                        ('Caddy + backend, uncached', uncached),
                        ('Caddy + backend, cached', cached)):
        wall, latencies, errors = run(call, args.requests, args.concurrency)
        rows.append((label, len(latencies), len(errors), len(latencies) / wall,
                     statistics.median(latencies) * 1000 if latencies else float('nan'),
                     percentile(latencies, 0.99) * 1000 if latencies else float('nan')))

    print(f'App tier: {args.requests} requests per row, concurrency {args.concurrency}, '
          f'max_tokens {args.max_tokens} (uncached queries are new prompts, served by the fast tier)')
    print(f"{'path':<34} {'ok':>4} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for label, ok, failed, rps, p50, p99 in rows:
        print(f'{label:<34} {ok:>4} {failed:>6} {rps:>8.1f} {p50:>8.1f} {p99:>8.1f}')
    print(f'overhead of Caddy + backend over llama-server (p50, uncached): {rows[1][4] - rows[0][4]:+.1f} ms')


if __name__ == '__main__':
    main()
