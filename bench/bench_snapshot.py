#!/usr/bin/env python
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time the faiss_snapshot engine on a ~1 GB index set against a plain `cp` of the same files.

Builds SIZE MiB of FAISS Flat indexes (4 indexes, random vectors, each with its backend-style
metadata), then, per run, in this order on the same filesystem: `cp -r` of the set, `cp -r` then
`sync` of the copied files (what a copy that is on disk costs), a snapshot (sha256, fsync,
verification with faiss when importable), an unchanged re-snapshot, a verify (checksums, full
load and a search of each index), a restore into an empty directory, and a restore over a live
directory in which one index changed. Prints a table of medians; the snapshot throughput is given
as a ratio of the plain cp's (goal >= 0.8) and of cp + sync's. It asserts no timing and exits 0.

Usage:
  python bench/bench_snapshot.py [--size-mib 1024] [--runs 3] [--dir /var/tmp] [--keep]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = ['?']
ENGINE = os.path.join(os.path.dirname(HERE), 'plugins', 'module_utils', 'faiss_snapshot.py')


def load_engine():
    # Stdlib-only engine: imported as the plain file the backups role's job runs, without Ansible.
    sys.path.insert(0, os.path.dirname(ENGINE))
    import faiss_snapshot  # pylint: disable=import-outside-toplevel
    return faiss_snapshot


def build_set(directory, size_mib, indexes=4, dim=256):
    import faiss  # pylint: disable=import-outside-toplevel
    import numpy  # pylint: disable=import-outside-toplevel
    os.makedirs(directory)
    per_index = size_mib * (1 << 20) // indexes // (dim * 4)
    rng = numpy.random.default_rng(0)
    for number in range(indexes):
        index = faiss.IndexFlatIP(dim)
        for start in range(0, per_index, 50000):
            index.add(rng.random((min(50000, per_index - start), dim), dtype='float32'))
        name = os.path.join(directory, 'set%d' % number)
        with open(name + '.meta.json', 'w') as handle:
            json.dump([{'id': i, 'text': 'passage %d' % i, 'source': ''} for i in range(per_index)], handle)
        faiss.write_index(index, name + '.faiss')
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))


def timed(function):
    started = time.monotonic()
    result = function()
    return time.monotonic() - started, result


def run(argv):
    subprocess.run(argv, check=True)


def copy_and_sync(source, copy, files):
    run(['cp', '-r', source, copy])
    run(['sync'] + [os.path.join(copy, name) for name in files])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size-mib', type=int, default=1024)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--dir', default='/var/tmp', help='where the set and the copies go (one filesystem)')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    fs = load_engine()
    work = tempfile.mkdtemp(prefix='mmo-bench-snapshot-', dir=args.dir)
    source = os.path.join(work, 'faiss')
    times = {}

    def record(label, seconds):
        times.setdefault(label, []).append(seconds)

    try:
        built, total = timed(lambda: build_set(source, args.size_mib))
        print('built %d files, %.0f MiB in %.1f s under %s (faiss %s)' % (
            len(os.listdir(source)), total / (1 << 20), built, work,
            'importable' if fs._faiss() else 'NOT importable: header checks only'), file=sys.stderr)
        files = sorted(os.listdir(source))
        for number in range(args.runs):
            copy = os.path.join(work, 'cp')
            record('cp -r', timed(lambda: run(['cp', '-r', source, copy]))[0])
            shutil.rmtree(copy)
            record('cp -r + sync', timed(lambda: copy_and_sync(source, copy, files))[0])
            shutil.rmtree(copy)
            paths = [os.path.join(source, name) for name in files]
            record('sha256 of the set, one thread', timed(lambda: [fs.sha256_file(path) for path in paths])[0])
            root = os.path.join(work, 'snapshots')
            seconds, result = timed(lambda: fs.snapshot(source, root, retain_count=0))
            assert result['created'], result
            record('snapshot', seconds)
            seconds, again = timed(lambda: fs.snapshot(source, root, retain_count=0))
            assert not again['changed'], again
            record('unchanged re-snapshot', seconds)
            seconds, report = timed(lambda: fs.verify(root))
            assert report['ok'], report
            record('verify (sha256 + faiss load + search)', seconds)
            target = os.path.join(work, 'restored')
            seconds, restored = timed(lambda: fs.restore(root, target))
            assert restored['changed'], restored
            record('restore into an empty directory', seconds)
            with open(os.path.join(target, 'set0.meta.json'), 'a') as handle:
                handle.write(' ')
            os.unlink(os.path.join(target, 'set1.faiss'))
            seconds, restored = timed(lambda: fs.restore(root, target))
            assert restored['replaced'] == ['set0.meta.json'] and restored['added'] == ['set1.faiss'], restored
            record('restore over live, 2 files differ', seconds)
            shutil.rmtree(target)
            shutil.rmtree(root)
            print('run %d of %d done' % (number + 1, args.runs), file=sys.stderr)
            with open('/proc/loadavg') as handle:
                LOAD[0] = ' '.join(handle.read().split()[:3])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    median = {label: statistics.median(values) for label, values in times.items()}
    mib = total / (1 << 20)
    print()
    print('faiss_snapshot on %.0f MiB (%d indexes + metadata), median of %d runs' % (mib, len(files) // 2, args.runs))
    print('| %-40s | %8s | %9s | %-28s |' % ('operation', 'seconds', 'MiB/s', 'vs'))
    print('|%s|%s|%s|%s|' % ('-' * 42, '-' * 10, '-' * 11, '-' * 30))
    for label, seconds in median.items():
        note = ''
        if label == 'snapshot':
            note = '%.2f x cp, %.2f x cp+sync' % (median['cp -r'] / seconds, median['cp -r + sync'] / seconds)
        elif label == 'unchanged re-snapshot':
            note = 'goal < 1 s (%.1f ms)' % (seconds * 1000)
        throughput = '' if label == 'unchanged re-snapshot' else '%.0f' % (mib / seconds)
        print('| %-40s | %8.3f | %9s | %-28s |' % (label, seconds, throughput, note))
    print()
    print('snapshot throughput ratio to cp: %.2f (goal >= 0.8); to cp + sync: %.2f' % (
        median['cp -r'] / median['snapshot'], median['cp -r + sync'] / median['snapshot']))
    print('%d CPUs, load average before the last run %s (the snapshot hashes every byte: sha256 on one'
          ' core bounds one file\'s copy)' % (os.cpu_count(), LOAD[0]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
