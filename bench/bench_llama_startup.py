#!/usr/bin/env python
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time from `systemctl restart llama-server@NAME` to healthy (model loaded, alias served),
per instance, on a host the llama_cpp_servers role deployed. Prints a table; asserts nothing.

Run it on that host (it needs systemctl and root):
  python bench/bench_llama_startup.py --api-key KEY [--runs 3] NAME=PORT:ALIAS [...]
`make bench` runs it inside the llama_cpp_servers Molecule instance.
"""

import argparse
import statistics
import subprocess
import time

# The same stdlib-only client model_health uses, loaded by path (no Ansible needed).
from bench_model_health import load_llama_server


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('instances', nargs='+', help='NAME=PORT:ALIAS')
    parser.add_argument('--api-key')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--timeout', type=float, default=120)
    args = parser.parse_args()

    ls = load_llama_server()
    options = ls.ProbeOptions(api_key=args.api_key, interval=0.01, request_timeout=5)
    rows = []
    for spec in args.instances:
        name, rest = spec.split('=', 1)
        port, alias = rest.split(':', 1)
        endpoint = ls.normalize_endpoints([{'name': name, 'url': 'http://127.0.0.1:%s' % port, 'alias': alias}])[0]
        times, unhealthy = [], 0
        for dummy in range(args.runs):
            # Back-to-back restarts trip systemd's start rate limit (5 in 10 s): clear it, it
            # is not what is being measured.
            subprocess.run(['systemctl', 'reset-failed', 'llama-server@%s' % name], check=False)
            started = time.monotonic()
            subprocess.run(['systemctl', 'restart', 'llama-server@%s' % name], check=True)
            result = ls.probe_endpoint(endpoint, options, args.timeout)
            if result['healthy']:
                times.append(time.monotonic() - started)
            else:
                unhealthy += 1
        rows.append((name, port, alias, times, unhealthy))

    print('llama-server restart to healthy (health 200 + alias in /v1/models), %d runs each' % args.runs)
    print('%-12s %6s %-10s %10s %10s %10s %9s' % ('instance', 'port', 'alias', 'median ms', 'min ms', 'max ms', 'unhealthy'))
    for name, port, alias, times, unhealthy in rows:
        if times:
            print('%-12s %6s %-10s %10.0f %10.0f %10.0f %9d' % (
                name, port, alias, statistics.median(times) * 1000, min(times) * 1000, max(times) * 1000, unhealthy))
        else:
            print('%-12s %6s %-10s %10s %10s %10s %9d' % (name, port, alias, '-', '-', '-', unhealthy))


if __name__ == '__main__':
    main()
