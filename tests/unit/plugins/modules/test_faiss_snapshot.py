# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the faiss_snapshot module: main() with module args on real files and real
faiss-cpu indexes, in normal, check and diff mode."""

import hashlib
import json
import os
import shutil

import faiss
import numpy
import pytest


from ansible_collections.multimodel.orchestration.plugins.modules import faiss_snapshot
from support.modules import run_main


def run_module(capsys, args):
    """Run main() with args; return (exit code, parsed JSON)."""
    return run_main(capsys, faiss_snapshot.main, args)[:2]


def write_index(directory, name, count, dim=8, seed=0):
    index = faiss.IndexFlatL2(dim)
    index.add(numpy.random.default_rng(seed).random((count, dim), dtype='float32'))
    with open(os.path.join(directory, name + '.meta.json'), 'w') as handle:
        json.dump([{'id': i, 'text': 't%d' % i, 'source': ''} for i in range(count)], handle)
    faiss.write_index(index, os.path.join(directory, name + '.faiss'))


def digests(top):
    found = {}
    for directory, dummy, files in os.walk(top):
        for name in files:
            with open(os.path.join(directory, name), 'rb') as handle:
                found[os.path.relpath(os.path.join(directory, name), top)] = hashlib.sha256(handle.read()).hexdigest()
    return found


@pytest.fixture
def dirs(tmp_path):
    live = tmp_path / 'faiss'
    live.mkdir()
    write_index(str(live), 'docs', 40, seed=1)
    write_index(str(live), 'faq', 10, seed=2)
    return str(live), str(tmp_path / 'snapshots')


def test_present_takes_a_snapshot_then_reports_no_change(capsys, dirs):
    live, dest = dirs
    code, first = run_module(capsys, {'path': live, 'dest': dest})
    assert code == 0 and first['changed'] and first['created']
    assert first['indexes']['docs']['ntotal'] == 40 and first['indexes']['docs']['dimension'] == 8
    assert first['files'] == 4 and first['bytes'] == first['bytes_copied'] > 0
    assert first['snapshots'] == [first['snapshot']] and first['path'] == os.path.join(dest, first['snapshot'])
    assert 'diff' not in first
    code, second = run_module(capsys, {'path': live, 'dest': dest})
    assert code == 0 and not second['changed'] and not second['created']
    assert second['snapshot'] == first['snapshot'] and second['bytes_copied'] == 0


def test_present_check_mode_and_diff(capsys, dirs):
    live, dest = dirs
    code, planned = run_module(capsys, {'path': live, 'dest': dest, '_ansible_check_mode': True, '_ansible_diff': True})
    assert code == 0 and planned['changed'] and planned['created']
    assert not os.path.exists(dest)
    assert planned['diff']['before'] == {'snapshots': []}
    assert planned['diff']['after'] == {'snapshots': [planned['snapshot']]}
    code, first = run_module(capsys, {'path': live, 'dest': dest, 'retain_count': 1})
    write_index(live, 'faq', 11, seed=3)
    code, planned = run_module(capsys, {'path': live, 'dest': dest, 'retain_count': 1,
                                        '_ansible_check_mode': True, '_ansible_diff': True})
    assert code == 0 and planned['changed'] and planned['pruned'] == [first['snapshot']]
    assert planned['diff']['before'] == {'snapshots': [first['snapshot']]}
    assert planned['diff']['after'] == {'snapshots': [planned['snapshot']]}
    assert [name for name in os.listdir(dest) if not name.startswith('.')] == [first['snapshot']]
    code, taken = run_module(capsys, {'path': live, 'dest': dest, 'retain_count': 1, '_ansible_diff': True})
    assert code == 0 and taken['changed'] and taken['pruned'] == [first['snapshot']]
    assert taken['created'] and taken['diff']['after'] == {'snapshots': [taken['snapshot']]}
    assert [name for name in os.listdir(dest) if not name.startswith('.')] == [taken['snapshot']]


def test_restored_check_mode_diff_then_restore(capsys, dirs):
    live, dest = dirs
    code, taken = run_module(capsys, {'path': live, 'dest': dest})
    wanted = digests(live)
    write_index(live, 'faq', 3, seed=4)
    write_index(live, 'stray', 2, seed=5)
    changed = digests(live)
    args = {'path': live, 'dest': dest, 'state': 'restored', '_ansible_diff': True}
    code, planned = run_module(capsys, dict(args, _ansible_check_mode=True))
    assert code == 0 and planned['changed'] and planned['snapshot'] == taken['snapshot']
    assert planned['replaced'] == ['faq.faiss', 'faq.meta.json']
    assert planned['removed'] == ['stray.faiss', 'stray.meta.json'] and planned['added'] == []
    assert 'stray.faiss size:' in planned['diff']['before']
    assert 'docs.faiss %s\n' % wanted['docs.faiss'] in planned['diff']['before']
    assert planned['diff']['after'] == ''.join('%s %s\n' % (rel, wanted[rel]) for rel in sorted(wanted))
    assert digests(live) == changed
    code, restored = run_module(capsys, args)
    assert code == 0 and restored['changed'] and digests(live) == wanted
    code, again = run_module(capsys, args)
    assert code == 0 and not again['changed']


def test_restored_refuses_a_corrupt_snapshot_naming_the_file(capsys, dirs):
    live, dest = dirs
    code, taken = run_module(capsys, {'path': live, 'dest': dest})
    victim = os.path.join(dest, taken['snapshot'], 'data', 'faq.meta.json')
    with open(victim, 'a') as handle:
        handle.write(' ')
    shutil.rmtree(live)
    code, failed = run_module(capsys, {'path': live, 'dest': dest, 'state': 'restored', 'snapshot': taken['snapshot']})
    assert code == 1 and failed['failed']
    assert failed['msg'].startswith('snapshot %s is corrupt, refusing to restore it: %s has' % (taken['snapshot'], victim))
    assert failed['file'] == victim and failed['error'] == 'CorruptSnapshot'
    assert not os.path.exists(live)


def test_bad_marks_a_snapshot_with_check_mode_and_diff(capsys, dirs):
    live, dest = dirs
    code, taken = run_module(capsys, {'path': live, 'dest': dest})
    args = {'path': live, 'dest': dest, 'state': 'bad', 'snapshot': taken['snapshot'], 'reason': 'drill',
            '_ansible_diff': True}
    code, planned = run_module(capsys, dict(args, _ansible_check_mode=True))
    assert code == 0 and planned['changed']
    assert planned['diff']['before'] == {'bad': False} and planned['diff']['after'] == {'bad': True, 'reason': 'drill'}
    assert not os.path.exists(os.path.join(dest, taken['snapshot'], 'BAD'))
    code, marked = run_module(capsys, args)
    assert code == 0 and marked['changed'] and os.path.exists(os.path.join(dest, taken['snapshot'], 'BAD'))
    code, again = run_module(capsys, args)
    assert code == 0 and not again['changed'] and again['reason'] == 'drill'
    # The only snapshot is bad: state=present takes a new one although nothing changed.
    code, second = run_module(capsys, {'path': live, 'dest': dest})
    assert code == 0 and second['changed'] and second['created'] and second['snapshot'] != taken['snapshot']


@pytest.mark.parametrize('args, message', [
    ({'retain_count': -1}, 'retain_count must be 0 (no limit) or a number of snapshots to keep, got -1'),
    ({'retain_days': -2.5}, 'retain_days must be 0 (no limit) or a number of days, got -2.5'),
    ({'max_attempts': 0}, 'max_attempts must be at least 1, got 0'),
    ({'state': 'restored', 'snapshot': '../etc'}, "snapshot must be the name of a directory under dest"),
    ({'state': 'bad'}, 'state is bad but all of the following are missing: snapshot'),
    ({'swap': 'sideways'}, 'value of swap must be one of: contents, exchange, got: sideways'),
])
def test_bad_values_are_named(capsys, dirs, args, message):
    live, dest = dirs
    code, failed = run_module(capsys, dict({'path': live, 'dest': dest}, **args))
    assert code == 1 and message in failed['msg']
    assert not os.path.exists(dest)


def test_missing_source_and_unknown_snapshot(capsys, tmp_path, dirs):
    live, dest = dirs
    code, failed = run_module(capsys, {'path': str(tmp_path / 'gone'), 'dest': dest})
    assert code == 1 and failed['msg'] == 'the FAISS directory %s does not exist (or is not a directory)' % (tmp_path / 'gone')
    assert failed['error'] == 'SourceMissing'
    run_module(capsys, {'path': live, 'dest': dest})
    code, failed = run_module(capsys, {'path': live, 'dest': dest, 'state': 'restored', 'snapshot': '20200101T000000Z'})
    assert code == 1 and failed['msg'].startswith('no snapshot 20200101T000000Z in %s' % dest)


def test_unreadable_live_file_fails_cleanly(capsys, dirs, monkeypatch):
    """An operating system error (here a live file that cannot be read) is a failure naming the
    file, not a traceback."""
    live, dest = dirs
    run_module(capsys, {'path': live, 'dest': dest})
    write_index(live, 'faq', 11, seed=3)  # docs.faiss keeps the snapshot's size: the restore reads it to compare
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if os.fspath(path) == os.path.join(live, 'docs.faiss'):
            raise PermissionError(13, 'Permission denied', os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, 'open', refuse)
    code, failed = run_module(capsys, {'path': live, 'dest': dest, 'state': 'restored'})
    assert code == 1 and failed['file'] == os.path.join(live, 'docs.faiss')
    assert failed['msg'] == "restored failed: [Errno 13] Permission denied: '%s'" % os.path.join(live, 'docs.faiss')
