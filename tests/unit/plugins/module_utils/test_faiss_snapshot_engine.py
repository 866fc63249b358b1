# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the FAISS snapshot engine on real files and real faiss-cpu indexes: snapshots,
writers that rewrite an index during a copy, corrupt snapshots, a full disk, retention, restore,
and the command line the backups role's job runs."""

import builtins
import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import faiss
import numpy
import pytest

from ansible_collections.multimodel.orchestration.plugins.module_utils import faiss_snapshot as fs

ENGINE = fs.__file__


def write_index(directory, name, count, dim=16, seed=0, layout='backend', generation=None):
    """A Flat inner-product index of count random vectors and its metadata (one entry per
    vector, each carrying the generation), written the way the backend writes them: metadata
    first, each to a temporary file renamed into place."""
    rng = numpy.random.default_rng(seed)
    index = faiss.IndexFlatIP(dim)
    index.add(rng.random((count, dim), dtype='float32'))
    index_suffix, meta_suffix = ('.faiss', '.meta.json') if layout == 'backend' else ('.index', '_metadata.json')
    meta = [{'id': i, 'text': 'passage %d' % i, 'generation': generation} for i in range(count)]
    meta_path = os.path.join(directory, name + meta_suffix)
    with open(meta_path + '.tmp', 'w') as handle:
        json.dump(meta, handle)
    os.rename(meta_path + '.tmp', meta_path)
    index_path = os.path.join(directory, name + index_suffix)
    faiss.write_index(index, index_path + '.tmp')
    os.rename(index_path + '.tmp', index_path)
    return index_path, meta_path


def sha256(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def tree(top):
    """{relpath: sha256 or 'dir'} of a directory, hidden .mmo- entries included."""
    found = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), top)] = 'dir'
        for name in files:
            found[os.path.relpath(os.path.join(directory, name), top)] = sha256(os.path.join(directory, name))
    return found


def fill_disk_at_copy(monkeypatch, number):
    """Make the number-th file copy write half of its bytes, then fail with ENOSPC."""
    real_copy, calls = fs._copy_data, []

    def copy_until_full(fd_in, fd_out, size):
        calls.append(size)
        if len(calls) == number:
            os.write(fd_out, b'\0' * (size // 2))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_copy(fd_in, fd_out, size)

    monkeypatch.setattr(fs, '_copy_data', copy_until_full)


@pytest.fixture
def source(tmp_path):
    """A FAISS directory with two backend-layout indexes, one of the other layout, and a
    subdirectory with a plain file."""
    directory = tmp_path / 'faiss'
    directory.mkdir()
    write_index(str(directory), 'docs', 200, seed=1)
    write_index(str(directory), 'faq', 30, dim=8, seed=2)
    write_index(str(directory), 'legacy', 50, seed=3, layout='issue')
    (directory / 'notes').mkdir()
    (directory / 'notes' / 'README.txt').write_text('indexes of the backend\n')
    return str(directory)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / 'snapshots')


def test_snapshot_writes_whole_checksummed_snapshot(source, root):
    result = fs.snapshot(source, root)
    assert result['changed'] and result['created'] == result['snapshot']
    path = os.path.join(root, result['created'])
    assert sorted(os.listdir(root)) == ['.lock', result['created']]  # no temporary directory left
    manifest = json.load(open(os.path.join(path, 'MANIFEST.json')))
    assert manifest['source'] == source
    data = os.path.join(path, 'data')
    copied = {rel: item for rel, item in manifest['files'].items() if item['type'] == 'file'}
    assert sorted(copied) == ['docs.faiss', 'docs.meta.json', 'faq.faiss', 'faq.meta.json', 'legacy.index',
                              'legacy_metadata.json', 'notes/README.txt']
    for rel, item in copied.items():
        assert sha256(os.path.join(data, rel)) == sha256(os.path.join(source, rel)) == item['sha256']
        assert item['size'] == os.path.getsize(os.path.join(source, rel))
        assert item['stat']['ino'] == os.stat(os.path.join(source, rel)).st_ino
    notes = os.stat(os.path.join(source, 'notes'))
    assert manifest['files']['notes'] == {'type': 'dir', 'mode': stat.S_IMODE(notes.st_mode),
                                          'uid': notes.st_uid, 'gid': notes.st_gid}
    assert manifest['indexes']['docs'] == {'index': 'docs.faiss', 'metadata': 'docs.meta.json', 'ntotal': 200,
                                           'dimension': 16, 'metadata_entries': 200, 'checked_with': 'faiss'}
    assert manifest['indexes']['faq']['dimension'] == 8
    assert manifest['indexes']['legacy']['metadata'] == 'legacy_metadata.json'
    assert result['bytes'] == result['bytes_copied'] == manifest['total_bytes']
    assert fs.verify(root)['ok']


def test_unchanged_source_takes_no_snapshot_and_reads_no_file(source, root, monkeypatch):
    first = fs.snapshot(source, root)
    opened = []
    real_os_open, real_open = os.open, builtins.open

    def spy_os_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    def spy_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, 'open', spy_os_open)
    monkeypatch.setattr(builtins, 'open', spy_open)
    second = fs.snapshot(source, root)
    monkeypatch.undo()
    assert not second['changed'] and second['created'] is None
    assert second['snapshot'] == first['created'] and second['bytes_copied'] == 0
    assert second['indexes'] == first['indexes']
    assert [path for path in opened if path.startswith(source)] == []
    assert [path for path in opened if not path.startswith(root)] == []
    assert [entry['name'] for entry in fs.list_snapshots(root)] == [first['created']]


@pytest.mark.parametrize('how', ['touch', 'rewrite', 'new file', 'deleted file'])
def test_a_change_takes_a_new_snapshot(source, root, how):
    first = fs.snapshot(source, root)
    if how == 'touch':
        os.utime(os.path.join(source, 'notes', 'README.txt'), ns=(1, 1))
    elif how == 'rewrite':
        write_index(source, 'faq', 31, dim=8, seed=9)
    elif how == 'new file':
        write_index(source, 'more', 5, seed=4)
    else:
        os.unlink(os.path.join(source, 'notes', 'README.txt'))
    second = fs.snapshot(source, root)
    assert second['changed'] and second['created'] not in (None, first['created'])
    data = os.path.join(root, second['created'], 'data')
    assert tree(data) == tree(source)


@pytest.mark.parametrize('writer', ['rename', 'in place'])
def test_index_rewritten_during_the_copy_is_copied_again(source, root, monkeypatch, writer):
    """A writer thread rewrites docs (index and metadata, a new generation with another count)
    while the snapshot copies docs.faiss: the pair is copied again and matches the new one."""
    copying, rewritten = threading.Event(), threading.Event()
    real_copy = fs._copy_data
    calls = []

    def rewrite():
        copying.wait(10)
        if writer == 'rename':
            write_index(source, 'docs', 150, seed=7, generation=2)
        else:  # overwrite both files in place: same inodes, new size and mtime
            tmp = os.path.join(os.path.dirname(source), 'scratch')
            os.mkdir(tmp)
            write_index(tmp, 'docs', 150, seed=7, generation=2)
            for name in ('docs.meta.json', 'docs.faiss'):
                with open(os.path.join(tmp, name), 'rb') as new, open(os.path.join(source, name), 'r+b') as live:
                    live.truncate(0)
                    live.write(new.read())
        rewritten.set()

    def copy_while_writing(fd_in, fd_out, size):
        copied = real_copy(fd_in, fd_out, size)
        if os.readlink('/proc/self/fd/%d' % fd_in).endswith('docs.faiss'):
            calls.append(size)
            if len(calls) == 1:
                copying.set()
                assert rewritten.wait(10)
        return copied

    monkeypatch.setattr(fs, '_copy_data', copy_while_writing)
    thread = threading.Thread(target=rewrite)
    thread.start()
    result = fs.snapshot(source, root)
    thread.join()
    assert len(calls) == 2
    assert result['recopied'] == {'docs.faiss': 1, 'docs.meta.json': 1}
    assert result['indexes']['docs']['ntotal'] == result['indexes']['docs']['metadata_entries'] == 150
    data = os.path.join(root, result['created'], 'data')
    for name in ('docs.faiss', 'docs.meta.json'):
        assert sha256(os.path.join(data, name)) == sha256(os.path.join(source, name))
    assert {entry['generation'] for entry in json.load(open(os.path.join(data, 'docs.meta.json')))} == {2}
    assert faiss.read_index(os.path.join(data, 'docs.faiss')).ntotal == 150


def test_snapshots_under_a_busy_writer_never_mix_generations(source, root):
    """A writer rewrites docs over and over (each generation its own count) while snapshots are
    taken, until some copies were caught by a rewrite: every snapshot holds one generation, whole."""
    stop = threading.Event()
    generations = []

    def writer():
        generation = 0
        while not stop.is_set():
            generation += 1
            write_index(source, 'docs', 100 + generation % 50, seed=generation, generation=generation)
            generations.append(generation)
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    taken, recopies = [], 0
    deadline = time.monotonic() + 60
    try:
        while (len(taken) < 5 or not recopies) and time.monotonic() < deadline:
            result = fs.snapshot(source, root, retain_count=0, max_attempts=50)
            recopies += sum(result['recopied'].values())
            if result['created']:
                taken.append(result['created'])
    finally:
        stop.set()
        thread.join()
    assert recopies and len(generations) > 1
    for name in taken:
        data = os.path.join(root, name, 'data')
        meta = json.load(open(os.path.join(data, 'docs.meta.json')))
        (generation,) = {entry['generation'] for entry in meta}
        expected = 200 if generation is None else 100 + generation % 50  # None: the fixture's docs
        assert faiss.read_index(os.path.join(data, 'docs.faiss')).ntotal == len(meta) == expected
    assert all(fs.verify(root, name)['ok'] for name in taken)


def test_a_file_renamed_away_between_listing_and_stat_is_not_an_error(source, root, monkeypatch):
    """The writer's temporary file is listed, then renamed into place before the scan reads it:
    the snapshot goes on without it (what the busy-writer test hits by chance, here every time)."""
    tmp = os.path.join(source, 'docs.faiss.tmp')
    shutil.copy(os.path.join(source, 'docs.faiss'), tmp)
    real_scandir = os.scandir

    class Listing:
        def __init__(self, path):
            self.entries = list(real_scandir(path))
            if os.path.exists(tmp):
                os.unlink(tmp)  # gone after the listing, before any stat

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    with monkeypatch.context() as patch:
        patch.setattr(fs.os, 'scandir', lambda path: Listing(path) if path == source else real_scandir(path))
        result = fs.snapshot(source, root)
    assert result['created'] and 'docs.faiss.tmp' not in tree(result['path'])
    assert 'data/docs.faiss' in tree(result['path'])


def test_an_index_unchanged_since_the_last_snapshot_is_not_loaded_again(source, root, monkeypatch):
    first = fs.snapshot(source, root)
    os.utime(os.path.join(source, 'docs.faiss'))  # a new mtime, the same bytes
    write_index(source, 'faq', 31, dim=8, seed=9)
    checked = []
    real_check = fs.check_index

    def spy(index_path, *args, **kwargs):
        checked.append(os.path.basename(index_path))
        return real_check(index_path, *args, **kwargs)

    monkeypatch.setattr(fs, 'check_index', spy)
    second = fs.snapshot(source, root)
    assert second['created'] and checked == ['faq.faiss']
    assert second['indexes']['docs'] == first['indexes']['docs']
    assert second['indexes']['faq']['ntotal'] == 31


def test_index_that_disagrees_with_its_metadata_fails_and_leaves_nothing(source, root):
    index = faiss.read_index(os.path.join(source, 'faq.faiss'))
    with open(os.path.join(source, 'faq.meta.json'), 'w') as handle:
        json.dump([{'text': 'x'}] * (index.ntotal - 1), handle)
    with pytest.raises(fs.InconsistentIndex, match=r'faq\.faiss holds 30 vectors but its metadata .*faq\.meta\.json holds 29'):
        fs.snapshot(source, root, max_attempts=2)
    assert os.listdir(root) == ['.lock']


def test_missing_source_is_named(tmp_path, root):
    with pytest.raises(fs.SourceMissing, match='the FAISS directory %s/nowhere does not exist' % tmp_path):
        fs.snapshot(str(tmp_path / 'nowhere'), root)
    assert not os.path.exists(root)


def test_root_inside_the_source_is_refused(source):
    with pytest.raises(fs.SnapshotError, match='is inside the directory it snapshots'):
        fs.snapshot(source, os.path.join(source, 'backups'))


@pytest.mark.parametrize('where', ['data', 'fsync', 'manifest'])
def test_full_disk_leaves_no_partial_snapshot(source, root, monkeypatch, where):
    """The filesystem fills up half-way (the copy of the third file, the write-back of a copied
    file, or the manifest fails with ENOSPC after part of it was written): the error says so and
    the root holds only what it held."""
    kept = fs.snapshot(source, root)['created']
    write_index(source, 'docs', 300, seed=5)
    if where == 'data':
        fill_disk_at_copy(monkeypatch, 3)
    elif where == 'fsync':
        real_fsync = os.fsync

        def fsync_until_full(fd):
            if os.readlink('/proc/self/fd/%d' % fd).endswith('faq.faiss'):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(fs.os, 'fsync', fsync_until_full)
    else:
        real_write = fs._write_file

        def write_until_full(path, data, mode=0o644):
            if path.endswith('MANIFEST.json'):
                with open(path, 'wb') as handle:
                    handle.write(data[:10])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            return real_write(path, data, mode)

        monkeypatch.setattr(fs, '_write_file', write_until_full)
    with pytest.raises(fs.NoSpace, match='no space left in %s while writing the snapshot of %s' % (root, source)):
        fs.snapshot(source, root)
    assert sorted(os.listdir(root)) == ['.lock', kept]
    assert [entry['name'] for entry in fs.list_snapshots(root)] == [kept]


def test_full_disk_during_a_restore_leaves_the_live_files_as_they_were(source, root, tmp_path, monkeypatch):
    fs.snapshot(source, root)
    live = str(tmp_path / 'live')
    shutil.copytree(source, live)
    write_index(live, 'faq', 12, dim=8, seed=8)
    write_index(live, 'docs', 20, seed=8)
    before = tree(live)
    fill_disk_at_copy(monkeypatch, 2)
    with pytest.raises(fs.NoSpace, match='no space left in %s to restore snapshot .*; the live files are as before' % live):
        fs.restore(root, live)
    assert tree(live) == before  # no staging directory left either


def test_not_enough_free_space_fails_before_writing(source, root, monkeypatch):
    fs.snapshot(source, root)
    write_index(source, 'docs', 300, seed=5)

    class Full:
        f_bavail, f_frsize = 1, 4096

    monkeypatch.setattr(fs.os, 'statvfs', lambda path: Full())
    with pytest.raises(fs.NoSpace, match=r'bytes needed, 4096 free'):
        fs.snapshot(source, root)
    assert len(os.listdir(root)) == 2
    live = os.path.join(os.path.dirname(root), 'live')
    with pytest.raises(fs.NoSpace, match=r'no space left in %s to restore snapshot .* bytes needed, 4096 free' % live):
        fs.restore(root, live)
    assert not os.path.exists(live)


def test_retention_by_count_and_age(source, root, monkeypatch):
    clock = [1_800_000_000 * 10**9]
    monkeypatch.setattr(fs, '_now_ns', lambda: clock[0])
    names = []
    for day in range(6):
        clock[0] += 86400 * 10**9
        with open(os.path.join(source, 'notes', 'README.txt'), 'w') as handle:
            handle.write('day %d\n' % day)
        names.append(fs.snapshot(source, root, retain_count=0)['created'])
    assert len(set(names)) == 6
    assert fs.prune(root, retain_count=4, check=True) == names[:2][::-1]
    assert len(fs.list_snapshots(root)) == 6  # check mode removed nothing
    assert fs.prune(root, retain_count=4) == names[:2][::-1]
    # Age: older than 1.5 days at the last snapshot's time.
    assert fs.prune(root, retain_count=0, retain_days=1.5) == names[2:4][::-1]
    assert [entry['name'] for entry in fs.list_snapshots(root)] == names[4:][::-1]
    # The newest good snapshot is kept whatever its age, even when the newer one is bad.
    fs.mark_bad(root, names[5], 'test')
    clock[0] += 100 * 86400 * 10**9
    assert fs.prune(root, retain_count=1, retain_days=1) == [names[5]]
    assert [entry['name'] for entry in fs.list_snapshots(root)] == [names[4]]
    # snapshot() applies the retention too.
    open(os.path.join(source, 'notes', 'README.txt'), 'w').write('later\n')
    result = fs.snapshot(source, root, retain_count=1)
    assert result['pruned'] == [names[4]] and result['snapshots'] == [result['created']]


def test_bad_snapshot_is_never_the_newest_good(source, root):
    first = fs.snapshot(source, root)['created']
    write_index(source, 'faq', 40, dim=8, seed=11)
    second = fs.snapshot(source, root)['created']
    assert fs.newest_good(root) == second
    assert fs.mark_bad(root, second, 'sample search failed') == {'changed': True, 'snapshot': second,
                                                                 'reason': 'sample search failed'}
    assert fs.mark_bad(root, second, 'again')['changed'] is False
    assert fs.newest_good(root) == first
    assert [(e['name'], e['bad'], e['bad_reason']) for e in fs.list_snapshots(root)] == [
        (second, True, 'sample search failed'), (first, False, None)]
    # The source equals the bad snapshot, not the newest good one: a new snapshot is taken.
    third = fs.snapshot(source, root)
    assert third['changed'] and third['created'] not in (first, second)
    # Restoring without a name takes the newest good; a named bad one is refused.
    live = os.path.join(os.path.dirname(root), 'live')
    assert fs.restore(root, live)['snapshot'] == third['created']
    with pytest.raises(fs.SnapshotError, match='snapshot %s is marked bad \\(sample search failed\\)' % second):
        fs.restore(root, live, second)
    assert fs.clear_bad(root, second)['changed'] and not fs.list_snapshots(root)[1]['bad']


@pytest.mark.parametrize('damage', ['flipped byte', 'truncated', 'deleted', 'extra file'])
def test_corrupt_snapshot_is_refused_naming_the_file(source, root, tmp_path, damage):
    name = fs.snapshot(source, root)['created']
    live = str(tmp_path / 'live')
    shutil.copytree(source, live)
    write_index(live, 'faq', 12, dim=8, seed=8)  # the live data differs from the snapshot
    before = tree(live)
    victim = os.path.join(root, name, 'data', 'docs.faiss')
    if damage == 'flipped byte':
        with open(victim, 'r+b') as handle:
            handle.seek(100)
            byte = handle.read(1)
            handle.seek(100)
            handle.write(bytes([byte[0] ^ 1]))
        expected = 'does not match its sha256'
    elif damage == 'truncated':
        os.truncate(victim, 50)
        expected = 'has 50 bytes, the manifest says'
    elif damage == 'deleted':
        os.unlink(victim)
        expected = 'cannot be read'
    else:
        victim = os.path.join(root, name, 'data', 'planted.faiss')
        open(victim, 'w').write('x')
        expected = 'is not in the manifest'
    with pytest.raises(fs.CorruptSnapshot) as info:
        fs.restore(root, live)
    assert info.value.path == victim
    assert 'snapshot %s is corrupt, refusing to restore it: %s %s' % (name, victim, expected) in str(info.value)
    assert tree(live) == before
    report = fs.verify(root, name)
    assert not report['ok'] and any(victim in error for error in report['errors'])


@pytest.mark.parametrize('swap', ['contents', 'exchange'])
@pytest.mark.parametrize('live_exists', [True, False])
def test_corrupt_file_found_while_it_is_copied_changes_nothing(source, root, tmp_path, swap, live_exists):
    """A file the restore copies is checked as it is copied: a flipped byte there stops the
    restore before the first rename, and the staging directory goes away."""
    name = fs.snapshot(source, root)['created']
    live = str(tmp_path / 'live')
    if live_exists:
        shutil.copytree(source, live)
        write_index(live, 'faq', 12, dim=8, seed=8)  # faq.* differ: they are the ones copied
        before = tree(live)
    victim = os.path.join(root, name, 'data', 'faq.faiss')
    with open(victim, 'r+b') as handle:
        handle.seek(60)
        byte = handle.read(1)
        handle.seek(60)
        handle.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(fs.CorruptSnapshot) as info:
        fs.restore(root, live, swap=swap)
    assert info.value.path == victim
    assert str(info.value) == 'snapshot %s is corrupt, refusing to restore it: %s does not match its sha256 in the manifest' % (
        name, victim)
    if live_exists:
        assert tree(live) == before
    else:
        assert not os.path.exists(live)
    assert sorted(os.listdir(tmp_path)) == (['faiss', 'live', 'snapshots'] if live_exists else ['faiss', 'snapshots'])


def test_restore_swaps_the_contents_in_place(source, root, tmp_path):
    name = fs.snapshot(source, root)['created']
    live = str(tmp_path / 'live')
    shutil.copytree(source, live)
    write_index(live, 'faq', 12, dim=8, seed=8)
    write_index(live, 'stale', 3, seed=8)
    os.mkdir(os.path.join(live, 'old-dir'))
    open(os.path.join(live, 'old-dir', 'x'), 'w').write('x')
    inode = os.stat(live).st_ino
    holder = os.open(live, os.O_RDONLY | os.O_DIRECTORY)  # what a container's mount holds
    try:
        planned = fs.restore(root, live, check=True)
        assert planned['changed'] and os.path.exists(os.path.join(live, 'stale.faiss'))
        result = fs.restore(root, live)
        assert result['snapshot'] == name
        assert result['replaced'] == ['faq.faiss', 'faq.meta.json']
        assert result['removed'] == ['old-dir', 'stale.faiss', 'stale.meta.json']
        assert result['added'] == []
        assert {key: planned[key] for key in ('added', 'replaced', 'removed')} == \
            {key: result[key] for key in ('added', 'replaced', 'removed')}
        assert tree(live) == tree(source)  # no staging directory left either
        assert os.stat(live).st_ino == inode
        assert sorted(os.listdir('/proc/self/fd/%d' % holder)) == sorted(os.listdir(source))
    finally:
        os.close(holder)
    assert fs.inspect_indexes(live)['faq']['ntotal'] == 30
    again = fs.restore(root, live)
    assert not again['changed'] and not again['added'] + again['replaced'] + again['removed']


@pytest.mark.skipif(os.geteuid() != 0, reason='giving files away needs root')
@pytest.mark.parametrize('swap', ['contents', 'exchange'])
def test_restore_gives_back_owners_and_modes(source, root, tmp_path, swap):
    """The backend runs as a non-root user: restored files must be its own again."""
    os.chown(source, 4321, 4321)
    os.chmod(source, 0o750)
    os.chown(os.path.join(source, 'docs.faiss'), 4321, 4322)
    os.chmod(os.path.join(source, 'docs.faiss'), 0o640)
    os.chown(os.path.join(source, 'notes'), 4323, 4323)
    fs.snapshot(source, root)
    live = str(tmp_path / 'live')
    if swap == 'exchange':
        os.mkdir(live)
        os.chown(live, 4321, 4321)
    fs.restore(root, live, swap=swap)
    owners = {rel: (os.stat(os.path.join(live, rel)).st_uid, os.stat(os.path.join(live, rel)).st_gid,
                    stat.S_IMODE(os.stat(os.path.join(live, rel)).st_mode)) for rel in ('', 'docs.faiss', 'notes')}
    assert owners == {'': (4321, 4321, 0o750 if swap == 'contents' else 0o755), 'docs.faiss': (4321, 4322, 0o640),
                      'notes': (4323, 4323, 0o755)}


def test_restore_exchanges_the_directory(source, root, tmp_path):
    fs.snapshot(source, root)
    live = str(tmp_path / 'live')
    shutil.copytree(source, live)
    write_index(live, 'stale', 3, seed=8)
    inode = os.stat(live).st_ino
    result = fs.restore(root, live, swap='exchange')
    assert result['removed'] == ['stale.faiss', 'stale.meta.json']
    assert tree(live) == tree(source)
    assert os.stat(live).st_ino != inode
    assert sorted(os.listdir(tmp_path)) == ['faiss', 'live', 'snapshots']  # no staging left


def test_restore_into_a_new_scratch_directory_and_inspect(source, root, tmp_path):
    fs.snapshot(source, root)
    scratch = str(tmp_path / 'scratch' / 'faiss')
    assert fs.restore(root, scratch, check=True)['changed'] and not os.path.exists(scratch)
    result = fs.restore(root, scratch)
    assert result['changed'] and len(result['added']) == 8
    indexes = fs.inspect_indexes(scratch)
    assert {name: (info['ntotal'], info['dimension'], info['search']) for name, info in indexes.items()} == {
        'docs': (200, 16, True), 'faq': (30, 8, True), 'legacy': (50, 16, True)}


def test_unknown_snapshot_and_empty_root(source, root):
    with pytest.raises(fs.SnapshotNotFound, match='the snapshot root %s does not exist' % root):
        fs.restore(root, source)
    name = fs.snapshot(source, root)['created']
    with pytest.raises(fs.SnapshotNotFound, match='no snapshot 20990101T000000Z in %s \\(there are: %s\\)' % (root, name)):
        fs.restore(root, source, '20990101T000000Z')
    with pytest.raises(fs.SnapshotError, match="'../x' is not a snapshot name"):
        fs.mark_bad(root, '../x', 'no')


def test_without_faiss_the_header_is_read(source, root, monkeypatch):
    monkeypatch.setattr(fs, '_faiss', lambda: None)
    result = fs.snapshot(source, root)
    assert {name: (info['ntotal'], info['dimension'], info['checked_with']) for name, info in result['indexes'].items()} == {
        'docs': (200, 16, 'header'), 'faq': (30, 8, 'header'), 'legacy': (50, 16, 'header')}


def test_ivf_index_is_verified(tmp_path, root):
    source = str(tmp_path / 'ivf')
    os.mkdir(source)
    vectors = numpy.random.default_rng(0).random((500, 32), dtype='float32')
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(32), 32, 8)
    index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, os.path.join(source, 'big.index'))
    with open(os.path.join(source, 'big_metadata.json'), 'w') as handle:
        json.dump({'ids': list(range(500))}, handle)
    result = fs.snapshot(source, root)
    assert result['indexes']['big']['ntotal'] == 500 and result['indexes']['big']['metadata_entries'] == 500
    assert fs.verify(root)['indexes']['big']['search'] is True


def test_command_line(source, root, tmp_path, capsys):
    assert fs.main(['snapshot', '--source', source, '--root', root, '--keep', '3']) == 0
    taken = json.loads(capsys.readouterr().out)
    assert taken['changed'] and taken['created']
    assert fs.main(['verify', '--root', root]) == 0
    assert json.loads(capsys.readouterr().out)['ok'] is True
    assert fs.main(['mark-bad', '--root', root, '--name', taken['created'], '--reason', 'drill']) == 0
    capsys.readouterr()
    assert fs.main(['list', '--root', root]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed['newest_good'] is None and listed['snapshots'][0]['bad_reason'] == 'drill'
    assert fs.main(['restore', '--root', root, '--target', str(tmp_path / 'r')]) == 1
    failed = json.loads(capsys.readouterr().out)
    assert failed == {'failed': True, 'error': 'SnapshotNotFound', 'msg': 'no good snapshot in %s' % root, 'path': None}


def test_engine_runs_as_a_plain_script_without_ansible(source, tmp_path):
    """The backups role copies the file to the host and runs it as a script: no Ansible there."""
    script = str(tmp_path / 'faiss_snapshot.py')
    shutil.copy(ENGINE, script)
    code = 'import sys; sys.modules["ansible"] = None; sys.argv[0] = %r; import runpy; runpy.run_path(%r, run_name="__main__")' % (
        script, script)
    root = str(tmp_path / 'host-snapshots')
    run = subprocess.run([sys.executable, '-I', '-c', code, 'snapshot', '--source', source, '--root', root],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)['indexes']['docs']['ntotal'] == 200
    run = subprocess.run([sys.executable, '-I', script, 'restore', '--root', root, '--target', str(tmp_path / 'back')],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert tree(str(tmp_path / 'back')) == tree(source)
