#!/usr/bin/env python
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time model_health probing of 1 llama-server endpoint against N endpoints probed concurrently
(and, as a baseline, the same N probed one after another).

Each probe does what `model_health` does with generate=true: GET /health, GET /v1/models and
a short POST /v1/completions. The script only measures and prints a table; it asserts no
timing. It exits 1 when a probe was unhealthy (the numbers would be meaningless).

Usage:
  python bench/bench_model_health.py URL [URL ...] [--runs 5] [--max-tokens 8]
                                     [--alias NAME] [--api-key KEY] [--slots]
Example, four llama-servers started by a test:
  python bench/bench_model_health.py http://127.0.0.1:18081 http://127.0.0.1:18082 \
      http://127.0.0.1:18083 http://127.0.0.1:18084
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_UTILS = os.path.join(os.path.dirname(HERE), 'plugins', 'module_utils', 'llama_server.py')


def load_llama_server():
    # The client is stdlib-only: load it by path, so neither Ansible nor the collection
    # layout (ansible_collections/...) is needed to run the benchmark.
    spec = importlib.util.spec_from_file_location('llama_server', MODULE_UTILS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_scenario(ls, endpoints, options, runs, timeout, concurrent):
    """Probe the endpoints `runs` times, concurrently (as model_health does) or one after
    another (the baseline); return per-run wall times and all results."""
    walls, results = [], []
    for dummy in range(runs):
        started = time.monotonic()
        if concurrent:
            batch = ls.probe_endpoints(endpoints, options, timeout)
        else:
            batch = [ls.probe_endpoint(endpoint, options, timeout) for endpoint in endpoints]
        walls.append(time.monotonic() - started)
        results.extend(batch)
    return walls, results


def median_of(results, key):
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, pattern='%.3f'):
    return '-' if value is None else pattern % value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('urls', nargs='+', help='llama-server base URLs, e.g. http://127.0.0.1:8080')
    parser.add_argument('--runs', type=int, default=5, help='probe runs per scenario (default 5)')
    parser.add_argument('--max-tokens', type=int, default=8, help='tokens of the test generation (default 8)')
    parser.add_argument('--alias', help='model alias every server must serve (default: any)')
    parser.add_argument('--api-key', default=os.environ.get('LLAMA_API_KEY'),
                        help='API key (default: $LLAMA_API_KEY)')
    parser.add_argument('--slots', action='store_true', help='also read /slots, like check_slots=true')
    parser.add_argument('--timeout', type=float, default=60, help='probe deadline in seconds (default 60)')
    args = parser.parse_args(argv)
    if args.runs < 1 or args.max_tokens < 1:
        parser.error('--runs and --max-tokens must be at least 1')

    ls = load_llama_server()
    try:
        endpoints = ls.normalize_endpoints(
            [{'name': 'ep%d' % i, 'url': url, 'alias': args.alias} for i, url in enumerate(args.urls, 1)])
    except ValueError as exc:
        parser.error(str(exc))
    options = ls.ProbeOptions(api_key=args.api_key, generate=True, max_tokens=args.max_tokens,
                              check_slots=args.slots, interval=0.2, use_proxy=False)

    # One untimed round first: the first generation of a llama-server includes warm-up work.
    ls.probe_endpoints(endpoints, options, args.timeout)

    scenarios = [('1 endpoint', endpoints[:1], True)]
    if len(endpoints) > 1:
        scenarios.append(('%d sequential' % len(endpoints), endpoints, False))
        scenarios.append(('%d concurrent' % len(endpoints), endpoints, True))
    rows = []
    unhealthy = []
    for label, group, concurrent in scenarios:
        walls, results = run_scenario(ls, group, options, args.runs, args.timeout, concurrent)
        unhealthy.extend(ls.failure_summary(r) for r in results if not r['healthy'])
        rows.append((label, len(group), args.runs, min(walls), statistics.median(walls), max(walls),
                     median_of(results, 'elapsed_s'), median_of(results, 'latency_ms'),
                     median_of(results, 'tokens_per_second')))

    header = ('scenario', 'endpoints', 'runs', 'wall_min_s', 'wall_median_s', 'wall_max_s',
              'endpoint_p50_s', 'gen_latency_ms_p50', 'tokens_per_s_p50')
    table = [header] + [
        (label, str(n), str(runs), fmt(wmin), fmt(wmed), fmt(wmax), fmt(ep), fmt(lat, '%.1f'), fmt(tps, '%.1f'))
        for label, n, runs, wmin, wmed, wmax, ep, lat, tps in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print('wall_*: one probe run over all the endpoints of the scenario; endpoint_p50_s: median time of '
          'one endpoint probe (health + models + %d-token generation%s)' % (args.max_tokens, ' + slots' if args.slots else ''))
    if unhealthy:
        print('UNHEALTHY (numbers above are not meaningful):', file=sys.stderr)
        for line in sorted(set(unhealthy)):
            print('  ' + line, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
