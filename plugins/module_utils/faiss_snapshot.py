# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Snapshots of a FAISS index directory: take, verify, prune, mark bad, restore.

Standard library only (faiss is imported lazily, when it is importable), Linux, and no Ansible
import, so that the same file is the engine of the ``faiss_snapshot`` module and, copied to a
host as a plain ``faiss_snapshot.py``, of its scheduled backup job (``main(argv)`` is its command
line). Private to this collection: not a public API.

Layout of a snapshot root ``ROOT``::

    ROOT/.lock                 flock(2): every operation on ROOT holds it
    ROOT/.tmp-<name>/          a snapshot being written (or a pruned one being removed)
    ROOT/<name>/data/...       the files of the source directory, same relative paths and modes
    ROOT/<name>/MANIFEST.json  sha256, size and source stat of every file; indexes' ntotal and dimension
    ROOT/<name>/BAD            present when the snapshot is marked bad (JSON: reason, time)

A snapshot is written under ``.tmp-<name>``, fsynced, and renamed to ``<name>``: it exists
whole or not at all. Index pairs are ``<name>.faiss`` + ``<name>.meta.json`` (the reference
backend's layout) and ``<name>.index`` + ``<name>_metadata.json``; other files are copied as
they are. Names that start with ``.mmo-`` are never snapshotted (a restore stages there).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

FORMAT = 1
MANIFEST = 'MANIFEST.json'
BAD = 'BAD'
DATA = 'data'
LOCK = '.lock'
TMP_PREFIX = '.tmp-'
EXCLUDED_PREFIX = '.mmo-'
RESTORE_PREFIX = '.mmo-restore-'
# (index suffix, metadata suffix): <name><index suffix> pairs with <name><metadata suffix>.
PAIRS = (('.faiss', '.meta.json'), ('.index', '_metadata.json'))
CHUNK = 8 << 20
NAME_FORMAT = '%Y%m%dT%H%M%SZ'
RENAME_EXCHANGE = 2
# Index groups copied at once: each keeps two cores busy (the copy, and the sha256 beside it).
WORKERS = max(1, min(4, (os.cpu_count() or 2) // 2))


class SnapshotError(Exception):
    """Any failure; the message names the path or value at fault."""


class SourceMissing(SnapshotError):
    """The directory to snapshot does not exist."""


class NoSpace(SnapshotError):
    """The snapshot root's filesystem is full (nothing partial is left behind)."""


class CorruptSnapshot(SnapshotError):
    """A file of a snapshot does not match its manifest."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


class SnapshotNotFound(SnapshotError):
    """No such snapshot, or no good one."""


class SourceUnstable(SnapshotError):
    """A file kept changing during every copy attempt."""


class InconsistentIndex(SnapshotError):
    """An index and its metadata disagree (or the index cannot be read)."""


# ---------------------------------------------------------------- small helpers

def _now_ns():
    return time.time_ns()


def _iso(ns):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(ns / 1e9))


def _key(st):
    """What proves a file unchanged: device, inode, size, mtime and ctime."""
    return {'dev': st.st_dev, 'ino': st.st_ino, 'size': st.st_size,
            'mtime_ns': st.st_mtime_ns, 'ctime_ns': st.st_ctime_ns}


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_space(error):
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_file(path, data, mode=0o644):
    """Write bytes to a new file and fsync it (the write path of manifests and markers)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path, data):
    tmp = '%s.tmp-%d' % (path, os.getpid())
    try:
        _write_file(tmp, data)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(path))


def _check_name(name):
    if not name or '/' in name or name.startswith('.') or name in ('..',):
        raise SnapshotError("'%s' is not a snapshot name (a directory name under the snapshot root, "
                            "not hidden, without '/')" % name)
    return name


@contextlib.contextmanager
def _locked(root, create=True):
    """Hold ROOT/.lock (exclusive). Without create, a missing ROOT is not made (check mode)."""
    if not os.path.isdir(root):
        if not create:
            yield
            return
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
        except OSError as error:
            raise SnapshotError('cannot create the snapshot root %s: %s' % (root, error.strerror)) from error
    try:
        fd = os.open(os.path.join(root, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise SnapshotError('cannot lock the snapshot root %s: %s' % (root, error)) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading directories

def _scan(top):
    """{relpath: (kind, stat or link target)} of a directory tree; kind file, dir or symlink.
    Names that start with .mmo- are left out, and so are sockets, fifos and devices."""
    found = {}

    def walk(directory, prefix):
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda item: item.name):
                if entry.name.startswith(EXCLUDED_PREFIX):
                    continue
                rel = prefix + entry.name
                # A writer renames its temporary file away between the listing and the
                # stat: a name that is gone is not part of what this scan sees (the
                # scan before the copy and the one after it then differ, so it retries).
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        found[rel] = ('symlink', os.readlink(entry.path))
                    elif stat.S_ISDIR(st.st_mode):
                        found[rel] = ('dir', st)
                        walk(entry.path, rel + '/')
                    elif stat.S_ISREG(st.st_mode):
                        found[rel] = ('file', st)
                except FileNotFoundError:
                    continue

    walk(top, '')
    return found


def index_pairs(files):
    """[(name, index relpath, metadata relpath or None)] of the index files among relpaths."""
    files = set(files)
    pairs = []
    for rel in sorted(files):
        for index_suffix, meta_suffix in PAIRS:
            if rel.endswith(index_suffix):
                name = rel[:-len(index_suffix)]
                meta = name + meta_suffix
                pairs.append((name, rel, meta if meta in files else None))
    return pairs


def _groups(files):
    """Files to copy together: each index with its metadata, every other file alone."""
    groups, paired = [], set()
    for dummy, index, meta in index_pairs(files):
        # Metadata first: the backend writes it first, so a pair caught between its two
        # renames shows as a changed index, not as an old metadata file.
        group = [meta, index] if meta else [index]
        groups.append(group)
        paired.update(group)
    groups.extend([rel] for rel in sorted(files) if rel not in paired)
    return groups


# ---------------------------------------------------------------- index checks

def _faiss():
    try:
        import faiss  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return faiss


def read_header(path):
    """(ntotal, dimension) from a FAISS index file's header, without faiss."""
    with open(path, 'rb') as handle:
        head = handle.read(24)
    if len(head) < 16:
        raise InconsistentIndex('%s is not a FAISS index: %d bytes' % (path, len(head)))
    fourcc = head[:4]
    if fourcc.startswith(b'IB'):  # binary indexes: d, code_size, ntotal
        dimension, dummy, ntotal = struct.unpack('<iiq', head[4:20])
    else:  # float indexes: d, ntotal, then two unused int64 and the rest
        dimension, ntotal = struct.unpack('<iq', head[4:16])
    if not (fourcc.isalnum() and 0 < dimension < (1 << 24) and ntotal >= 0):
        raise InconsistentIndex('%s is not a FAISS index (header %r, d %d, ntotal %d)' % (path, fourcc, dimension, ntotal))
    return ntotal, dimension


def metadata_entries(path):
    """How many entries a metadata file holds: a JSON list, or the list under one of the usual keys
    of an object; None when it has no recognisable list."""
    try:
        with open(path, 'rb') as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise InconsistentIndex('metadata %s is not readable JSON: %s' % (path, error)) from error
    if isinstance(data, list):
        return len(data)
    if isinstance(data, dict):
        for key in ('passages', 'documents', 'docs', 'metadata', 'items', 'entries', 'ids', 'texts'):
            if isinstance(data.get(key), list):
                return len(data[key])
        for key in ('ntotal', 'count'):
            if isinstance(data.get(key), int):
                return data[key]
    return None


def _search_once(faiss, index):
    """Run a k=1 search (for a stored vector when it can be reconstructed); whether the ids it
    returns are ids of the index."""
    import numpy  # pylint: disable=import-outside-toplevel
    if index.ntotal == 0:
        return True
    if isinstance(index, faiss.IndexBinary):
        query = numpy.zeros((1, index.d // 8), dtype='uint8')
    else:
        try:
            query = index.reconstruct(0).reshape(1, -1)
        except RuntimeError:
            query = numpy.zeros((1, index.d), dtype='float32')
    dummy, labels = index.search(query, 1)
    return bool(((labels >= -1) & (labels < index.ntotal)).all())


def _faiss_message(error):
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def check_index(index_path, meta_path, full=False, search=False, entries=None):
    """{ntotal, dimension, metadata_entries, checked_with, search}; raises InconsistentIndex when
    the index cannot be read or its metadata does not hold one entry per vector.
    With faiss: loaded memory-mapped when possible (full=True: read whole, and searched when search).
    entries: the metadata's entry count when the caller already has it (a 1-tuple)."""
    faiss = _faiss()
    info = {'checked_with': 'header', 'search': False}
    if faiss is None:
        info['ntotal'], info['dimension'] = read_header(index_path)
    else:
        info['checked_with'] = 'faiss'
        index = None
        flag = getattr(faiss, 'IO_FLAG_MMAP_IFC', None)
        try:
            if not full and flag is not None:
                try:
                    index = faiss.read_index(index_path, flag)
                except RuntimeError:
                    index = None
            if index is None:
                try:
                    index = faiss.read_index(index_path)
                except RuntimeError:
                    index = faiss.read_index_binary(index_path)
        except RuntimeError as error:
            raise InconsistentIndex('faiss cannot read %s: %s' % (index_path, _faiss_message(error))) from error
        info['ntotal'], info['dimension'] = int(index.ntotal), int(index.d)
        if search:
            try:
                info['search'] = _search_once(faiss, index)
            except RuntimeError as error:
                raise InconsistentIndex('a search in %s fails: %s' % (index_path, _faiss_message(error))) from error
            if not info['search']:
                raise InconsistentIndex('a search in %s returns ids outside 0..%d' % (index_path, index.ntotal - 1))
    if entries is not None:
        info['metadata_entries'] = entries[0]
    else:
        info['metadata_entries'] = metadata_entries(meta_path) if meta_path else None
    if info['metadata_entries'] is not None and info['metadata_entries'] != info['ntotal']:
        raise InconsistentIndex('%s holds %d vectors but its metadata %s holds %d entries'
                                % (index_path, info['ntotal'], meta_path, info['metadata_entries']))
    return info


def inspect_indexes(directory, search=True):
    """{name: check_index(...)} of every index in a directory (read whole, searched when asked)."""
    files = [rel for rel, (kind, dummy) in _scan(directory).items() if kind == 'file']
    result = {}
    for name, index, meta in index_pairs(files):
        info = check_index(os.path.join(directory, index), meta and os.path.join(directory, meta),
                           full=True, search=search)
        info.update(index=index, metadata=meta)
        result[name] = info
    return result


# ---------------------------------------------------------------- copying

def _copy_data(fd_in, fd_out, size):
    """Copy size bytes from offset 0 (in the kernel when it can). The write path of snapshots."""
    offset = 0
    kernel = hasattr(os, 'copy_file_range')
    while offset < size:
        if kernel:
            try:
                done = os.copy_file_range(fd_in, fd_out, min(size - offset, 1 << 30), offset, offset)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) or offset:
                    raise
                kernel = False
                continue
        else:
            data = os.pread(fd_in, min(size - offset, CHUNK), offset)
            done = 0
            while done < len(data):
                done += os.pwrite(fd_out, data[done:], offset + done)
        if done == 0:
            return offset  # the file shrank: the caller sees its stat changed
        offset += done
    return offset


def _hash_fd(fd, size, digest):
    buffer = bytearray(min(CHUNK, max(size, 1)))
    offset = 0
    while offset < size:
        view = memoryview(buffer)[:min(len(buffer), size - offset)]
        got = os.preadv(fd, [view], offset)
        if got == 0:
            return
        digest.update(view[:got])
        offset += got


def sha256_file(path):
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        _hash_fd(fd, os.fstat(fd).st_size, digest)
    finally:
        os.close(fd)
    return digest.hexdigest()


class _Syncer:
    """fsync(2) and close copied files in a background thread, so that the disk writes back one
    file while the next one is copied and hashed. finish() waits for all and raises the first
    error (a full disk can show only at fsync)."""

    def __init__(self):
        self._queue = []
        self._errors = []
        self._condition = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return
                fd = self._queue.pop(0)
            try:
                if not self._errors:
                    os.fsync(fd)
            except OSError as error:
                self._errors.append(error)
            finally:
                os.close(fd)

    def add(self, fd):
        with self._condition:
            self._queue.append(fd)
            self._condition.notify()

    def finish(self):
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()
        if self._errors:
            raise self._errors[0]


def _copy_file(src, dst, expect=None, mode=None, syncer=None):
    """Copy src to the new file dst, hashing the source in a second thread meanwhile; dst is
    fsynced now, or by the syncer when one is given.
    Returns (sha256, key of src, stat of src); sha256 None when src is not the file expected or changed."""
    fd_in = os.open(src, os.O_RDONLY)
    try:
        st = os.fstat(fd_in)
        before = _key(st)
        if expect is not None and before != expect:
            return None, before, st
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            digest, failures = hashlib.sha256(), []

            def hash_source():
                try:
                    _hash_fd(fd_in, before['size'], digest)
                except OSError as error:
                    failures.append(error)

            hasher = threading.Thread(target=hash_source) if before['size'] >= CHUNK else None
            if hasher is None:
                hash_source()
            else:
                hasher.start()
            try:
                _copy_data(fd_in, fd_out, before['size'])
            finally:
                if hasher is not None:
                    hasher.join()
            if failures:
                raise failures[0]
            os.fchmod(fd_out, stat.S_IMODE(mode) if mode is not None else 0o644)
            if syncer is None:
                os.fsync(fd_out)
        except BaseException:
            os.close(fd_out)
            raise
        if syncer is None:
            os.close(fd_out)
        else:
            syncer.add(fd_out)
        after = _key(os.fstat(fd_in))
    finally:
        os.close(fd_in)
    if after != before:
        return None, after, st
    return digest.hexdigest(), before, st


# ---------------------------------------------------------------- snapshots

def _read_manifest(path):
    with open(os.path.join(path, MANIFEST), 'rb') as handle:
        return json.load(handle)


def _entries(root):
    """Complete snapshots of ROOT with their manifests, newest first."""
    found = []
    if not os.path.isdir(root):
        return found
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith('.') or not os.path.isdir(path):
            continue
        try:
            manifest = _read_manifest(path)
        except (OSError, ValueError):
            continue  # not a snapshot (or one whose manifest is gone: verify() reports it by name)
        bad = None
        if os.path.exists(os.path.join(path, BAD)):
            try:
                with open(os.path.join(path, BAD), 'rb') as handle:
                    bad = json.load(handle).get('reason') or 'marked bad'
            except (OSError, ValueError, AttributeError):
                bad = 'marked bad'
        found.append({'name': name, 'path': path, 'manifest': manifest, 'bad': bad})
    found.sort(key=lambda entry: (entry['manifest'].get('created_ns', 0), entry['name']), reverse=True)
    return found


def _public(entry):
    manifest = entry['manifest']
    files = [item for item in manifest.get('files', {}).values() if item.get('type') == 'file']
    return {'name': entry['name'], 'path': entry['path'], 'created': manifest.get('created'),
            'created_ns': manifest.get('created_ns'), 'bad': entry['bad'] is not None,
            'bad_reason': entry['bad'], 'bytes': sum(item['size'] for item in files), 'files': len(files)}


def list_snapshots(root):
    """[{name, path, created, created_ns, bad, bad_reason, bytes, files}], newest first."""
    return [_public(entry) for entry in _entries(root)]


def newest_good(root):
    for entry in _entries(root):
        if entry['bad'] is None:
            return entry['name']
    return None


def _unchanged(scan, manifest):
    recorded = manifest.get('files', {})
    if set(scan) != set(recorded):
        return False
    for rel, (kind, value) in scan.items():
        item = recorded[rel]
        if item.get('type') != kind:
            return False
        if kind == 'file' and item.get('stat') != _key(value):
            return False
        if kind == 'symlink' and item.get('target') != value:
            return False
    return True


def _new_name(root, now_ns):
    base = time.strftime(NAME_FORMAT, time.gmtime(now_ns / 1e9))
    name, count = base, 1
    while os.path.lexists(os.path.join(root, name)) or os.path.lexists(os.path.join(root, TMP_PREFIX + name)):
        count += 1
        name = '%s-%d' % (base, count)
    return name


def _remove_stale(root):
    for name in os.listdir(root):
        if name.startswith(TMP_PREFIX):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _count_in_background(path):
    """Start counting a metadata file's entries in a thread (the JSON parse overlaps the copy of
    its index); returns a function that waits and gives the count (or raises the error)."""
    outcome = []

    def count():
        try:
            outcome.append((metadata_entries(path),))
        except InconsistentIndex as error:
            outcome.append(error)

    thread = threading.Thread(target=count)
    thread.start()

    def result():
        thread.join()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    return result


def _previous_info(previous, name, index, meta, items, verify):
    """The previous snapshot's info of this index when the files named in items are byte for
    byte the same there (same sha256) and it was checked at least as thoroughly: the work of
    loading and counting them need not be done again."""
    if not previous or (verify and not previous.get('verified')):
        return None
    info = previous.get('indexes', {}).get(name)
    if not info or info.get('index') != index or info.get('metadata') != meta:
        return None
    for rel, item in items.items():
        if previous.get('files', {}).get(rel, {}).get('sha256') != item['sha256']:
            return None
    return dict(info)


def _copy_group(source, data, group, scan, attempts, verify, recopied, previous=None, syncer=None):
    """Copy the files of one group until none changed during the copy (and, verified, the index
    agrees with its metadata). Returns ({relpath: manifest item}, (name, index info) or None);
    ({}, None) when the whole group was deleted meanwhile. The third value is recopied:
    {relpath: extra copies}."""
    problem = None
    pairs = index_pairs(group)
    name, index, meta = pairs[0] if pairs else (None, None, None)
    for attempt in range(attempts):
        if attempt:
            for rel in group:
                recopied[rel] = recopied.get(rel, 0) + 1
            time.sleep(min(0.05 * (2 ** attempt), 1.0))
        problem = SourceUnstable('%s kept changing while it was copied (%d attempts)'
                                 % (', '.join(os.path.join(source, rel) for rel in group), attempts))
        before = {}
        for rel in group:
            with contextlib.suppress(FileNotFoundError):
                before[rel] = _key(os.stat(os.path.join(source, rel)))
        if not before:
            return {}, None, recopied
        if len(before) < len(group):
            continue
        items, counted = {}, None
        for rel in group:
            dst = os.path.join(data, rel)
            if os.path.lexists(dst):
                os.unlink(dst)
            try:
                digest, key, st = _copy_file(os.path.join(source, rel), dst, before[rel], scan[rel][1].st_mode, syncer)
            except FileNotFoundError:
                digest = None
            if digest is None:
                break
            items[rel] = {'type': 'file', 'size': key['size'], 'sha256': digest, 'mode': stat.S_IMODE(st.st_mode),
                          'uid': st.st_uid, 'gid': st.st_gid, 'stat': key}
            if rel == meta and verify:
                known = _previous_info(previous, name, index, meta, {meta: items[meta]}, verify)
                counted = (lambda entries=known['metadata_entries']: (entries,)) if known else _count_in_background(dst)
        else:
            try:
                after = {rel: _key(os.stat(os.path.join(source, rel))) for rel in group}
            except FileNotFoundError:
                after = None
            if after != before:
                if counted:
                    with contextlib.suppress(InconsistentIndex):
                        counted()
                continue
            if not pairs:
                return items, None, recopied
            info = _previous_info(previous, name, index, meta, items, verify)
            if info is not None:
                return items, (name, info), recopied
            try:
                if verify:
                    info = check_index(os.path.join(data, index), meta and os.path.join(data, meta),
                                       entries=counted() if counted else None)
                else:
                    info = {'checked_with': 'header', 'search': False, 'metadata_entries': None}
                    info['ntotal'], info['dimension'] = read_header(os.path.join(data, index))
            except InconsistentIndex as error:
                # Maybe caught between the writer's two renames: copy again. Named by the source.
                problem = InconsistentIndex(str(error).replace(data + '/', source.rstrip('/') + '/'))
                continue
            info.update(index=index, metadata=meta)
            del info['search']
            return items, (name, info), recopied
        if counted:
            with contextlib.suppress(InconsistentIndex):
                counted()
    raise problem


def _write_snapshot(source, root, name, scan, verify, attempts, now_ns, previous=None):
    tmp = os.path.join(root, TMP_PREFIX + name)
    data = os.path.join(tmp, DATA)
    os.makedirs(data)
    files, indexes, recopied = {}, {}, {}
    for rel, (kind, value) in scan.items():
        if kind == 'dir':
            os.makedirs(os.path.join(data, rel), exist_ok=True)
            os.chmod(os.path.join(data, rel), stat.S_IMODE(value.st_mode))
            files[rel] = {'type': 'dir', 'mode': stat.S_IMODE(value.st_mode), 'uid': value.st_uid, 'gid': value.st_gid}
        elif kind == 'symlink':
            os.symlink(value, os.path.join(data, rel))
            files[rel] = {'type': 'symlink', 'target': value}
    syncer = _Syncer()
    groups = _groups([rel for rel, (kind, dummy) in scan.items() if kind == 'file'])
    # The biggest first, a few at a time: sha256 runs on one core per file.
    groups.sort(key=lambda group: -sum(scan[rel][1].st_size for rel in group))
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        futures = [pool.submit(_copy_group, source, data, group, scan, attempts, verify, {}, previous, syncer)
                   for group in groups]
        for future in as_completed(futures):
            items, index, extra = future.result()
            files.update(items)
            recopied.update(extra)
            if index:
                indexes[index[0]] = index[1]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(OSError):
            syncer.finish()
        raise
    pool.shutdown(wait=True)
    syncer.finish()
    top = os.stat(source)
    manifest = {'format': FORMAT, 'name': name, 'created': _iso(now_ns), 'created_ns': now_ns,
                'source': os.path.abspath(source), 'files': dict(sorted(files.items())),
                'top': {'mode': stat.S_IMODE(top.st_mode), 'uid': top.st_uid, 'gid': top.st_gid},
                'indexes': indexes, 'recopied': recopied, 'verified': bool(verify),
                'total_bytes': sum(item['size'] for item in files.values() if item['type'] == 'file')}
    for rel in sorted((rel for rel, item in files.items() if item['type'] == 'dir'), reverse=True):
        _fsync_dir(os.path.join(data, rel))
    _fsync_dir(data)
    _write_file(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode())
    _fsync_dir(tmp)
    os.rename(tmp, os.path.join(root, name))
    _fsync_dir(root)
    return manifest


def _prune(root, retain_count, retain_days, check, now_ns, keep=(), pending=None):
    """Apply the retention; pending names the snapshot check mode would have taken (the newest)."""
    entries = _entries(root)
    if pending is not None:
        entries.insert(0, {'name': pending, 'bad': None, 'manifest': {'created_ns': now_ns}})
    newest = next((entry['name'] for entry in entries if entry['bad'] is None), None)
    oldest_ns = now_ns - int(retain_days * 86400e9) if retain_days else None
    removed = []
    for position, entry in enumerate(entries):
        if entry['name'] == newest or entry['name'] in keep:
            continue
        too_many = retain_count and position >= retain_count
        too_old = oldest_ns is not None and entry['manifest'].get('created_ns', 0) < oldest_ns
        if too_many or too_old:
            removed.append(entry['name'])
            if not check:
                # Renamed first, so a half-removed snapshot never looks like a snapshot.
                doomed = os.path.join(root, TMP_PREFIX + 'pruned-' + entry['name'])
                os.rename(entry['path'], doomed)
                shutil.rmtree(doomed)
    if removed and not check:
        _fsync_dir(root)
    return removed


def _check_retention(retain_count, retain_days):
    if not isinstance(retain_count, int) or retain_count < 0:
        raise SnapshotError('retain_count must be 0 (no limit) or a positive number of snapshots, got %r' % (retain_count,))
    if not isinstance(retain_days, (int, float)) or retain_days < 0:
        raise SnapshotError('retain_days must be 0 (no limit) or a positive number of days, got %r' % (retain_days,))


def snapshot(source, root, retain_count=7, retain_days=0, verify=True, check=False, max_attempts=5):
    """Take a snapshot of source under root unless nothing changed since the newest good one;
    then prune. See the module's documentation for the returned dict."""
    started = time.monotonic()
    _check_retention(retain_count, retain_days)
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise SnapshotError('max_attempts must be at least 1, got %r' % (max_attempts,))
    if not os.path.isdir(source):
        raise SourceMissing('the FAISS directory %s does not exist (or is not a directory)' % source)
    if os.path.abspath(root).startswith(os.path.abspath(source).rstrip('/') + '/'):
        raise SnapshotError('the snapshot root %s is inside the directory it snapshots (%s)' % (root, source))
    with _locked(root, create=not check):
        now_ns = _now_ns()
        try:
            scan = _scan(source)
        except OSError as error:
            raise SourceMissing('cannot read the FAISS directory %s: %s' % (source, error)) from error
        entries = _entries(root)
        newest = next((entry for entry in entries if entry['bad'] is None), None)
        total = sum(value.st_size for kind, value in scan.values() if kind == 'file')
        result = {'changed': False, 'created': None, 'snapshot': None, 'path': None, 'files': 0,
                  'bytes': total, 'bytes_copied': 0, 'recopied': {}, 'indexes': {}}
        if newest is not None and _unchanged(scan, newest['manifest']):
            manifest = newest['manifest']
            result.update(snapshot=newest['name'], path=newest['path'], indexes=manifest.get('indexes', {}))
        elif check:
            result.update(changed=True, created=_new_name(root, now_ns) if os.path.isdir(root) else
                          time.strftime(NAME_FORMAT, time.gmtime(now_ns / 1e9)))
            result.update(snapshot=result['created'], path=os.path.join(root, result['created']), bytes_copied=total)
        else:
            _remove_stale(root)
            usage = os.statvfs(root)
            free = usage.f_bavail * usage.f_frsize
            if total > free:
                raise NoSpace('no space left for a snapshot of %s in %s: %d bytes needed, %d free'
                              % (source, root, total, free))
            name = _new_name(root, now_ns)
            try:
                manifest = _write_snapshot(source, root, name, scan, verify, max_attempts, now_ns,
                                           newest and newest['manifest'])
            except BaseException as error:
                shutil.rmtree(os.path.join(root, TMP_PREFIX + name), ignore_errors=True)
                if _no_space(error):
                    raise NoSpace('no space left in %s while writing the snapshot of %s (%s); nothing of it was kept'
                                  % (root, source, error)) from error
                if isinstance(error, OSError) and not isinstance(error, SnapshotError):
                    raise SnapshotError('cannot snapshot %s into %s: %s' % (source, root, error)) from error
                raise
            copied = sum(item['size'] * (1 + manifest['recopied'].get(rel, 0))
                         for rel, item in manifest['files'].items() if item['type'] == 'file')
            result.update(changed=True, created=name, snapshot=name, path=os.path.join(root, name),
                          indexes=manifest['indexes'], recopied=manifest['recopied'], bytes_copied=copied)
        result['files'] = sum(1 for kind, dummy in scan.values() if kind == 'file')
        keep = (result['created'],) if result['created'] else ()
        if check and not os.path.isdir(root):
            result['pruned'] = []
        else:
            pending = result['created'] if check else None
            result['pruned'] = _prune(root, retain_count, retain_days, check, now_ns, keep, pending)
        names = [entry['name'] for entry in _entries(root)]
        if check:
            names = ([result['created']] if result['created'] else []) + [name for name in names if name not in result['pruned']]
        result['snapshots'] = names
        result['changed'] = result['changed'] or bool(result['pruned'])
        result['duration'] = round(time.monotonic() - started, 3)
        return result


def prune(root, retain_count=7, retain_days=0, check=False):
    """Remove snapshots beyond retain_count or older than retain_days (never the newest good one)."""
    _check_retention(retain_count, retain_days)
    if not os.path.isdir(root):
        return []
    with _locked(root):
        return _prune(root, retain_count, retain_days, check, _now_ns())


def _find(root, name):
    entries = _entries(root)
    if name is None:
        for entry in entries:
            if entry['bad'] is None:
                return entry
        raise SnapshotNotFound('no good snapshot in %s' % root)
    _check_name(name)
    for entry in entries:
        if entry['name'] == name:
            return entry
    path = os.path.join(root, name)
    if os.path.isdir(path):
        raise CorruptSnapshot(os.path.join(path, MANIFEST), 'snapshot %s has no readable manifest %s'
                              % (name, os.path.join(path, MANIFEST)))
    raise SnapshotNotFound('no snapshot %s in %s (there are: %s)' % (name, root, ', '.join(e['name'] for e in entries) or 'none'))


def _mismatch(path):
    return '%s does not match its sha256 in the manifest' % path


def _checksum_errors(entry, staged=()):
    """Every entry of a snapshot against its manifest: [(path, message)], in path order. The
    files in staged are only looked at (type, size): the restore that copies them checks their
    sha256 as it copies, so each byte is hashed once."""
    data = os.path.join(entry['path'], DATA)
    files = entry['manifest'].get('files', {})
    errors, to_hash = [], []
    for rel, item in sorted(files.items()):
        path = os.path.join(data, rel)
        kind = item.get('type')
        if kind == 'file':
            try:
                st = os.lstat(path)
            except OSError as error:
                errors.append((path, '%s cannot be read: %s' % (path, error.strerror)))
                continue
            if not stat.S_ISREG(st.st_mode):
                errors.append((path, '%s is not a regular file' % path))
            elif st.st_size != item['size']:
                errors.append((path, '%s has %d bytes, the manifest says %d' % (path, st.st_size, item['size'])))
            elif rel not in staged:
                to_hash.append((path, item['sha256']))
        elif kind == 'dir' and not os.path.isdir(path):
            errors.append((path, 'directory %s is missing' % path))
        elif kind == 'symlink' and (not os.path.islink(path) or os.readlink(path) != item.get('target')):
            errors.append((path, 'symlink %s is missing or points elsewhere' % path))
    try:
        present = _scan(data)
    except OSError as error:
        return sorted(errors + [(data, 'cannot read %s: %s' % (data, error.strerror))])
    errors.extend((os.path.join(data, rel), '%s is not in the manifest' % os.path.join(data, rel))
                  for rel in present if rel not in files)

    def check(job):
        path, expected = job
        try:
            return None if sha256_file(path) == expected else (path, _mismatch(path))
        except OSError as error:
            return (path, '%s cannot be read: %s' % (path, error.strerror))

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        errors.extend(error for error in pool.map(check, to_hash) if error)
    return sorted(errors)


def verify(root, name=None, search=True):
    """Check every checksum of a snapshot, then load (and search) each of its indexes."""
    with _locked(root, create=False):
        entry = _find(root, name)
        errors = [message for dummy, message in _checksum_errors(entry)]
        indexes = {}
        if not errors:
            try:
                indexes = inspect_indexes(os.path.join(entry['path'], DATA), search=search)
            except SnapshotError as error:
                errors.append(str(error))
        return {'ok': not errors, 'snapshot': entry['name'], 'path': entry['path'], 'errors': errors,
                'bad': entry['bad'] is not None, 'indexes': indexes}


def mark_bad(root, name, reason, check=False):
    """Mark a snapshot bad: it stays (for inspection) but is never the newest good one."""
    _check_name(name)
    with _locked(root, create=False):
        entry = _find(root, name)
        if entry['bad'] is not None:
            return {'changed': False, 'snapshot': name, 'reason': entry['bad']}
        if not check:
            _atomic_write(os.path.join(entry['path'], BAD),
                          json.dumps({'reason': reason or 'marked bad', 'time': _iso(_now_ns())}).encode())
        return {'changed': True, 'snapshot': name, 'reason': reason or 'marked bad'}


def clear_bad(root, name, check=False):
    _check_name(name)
    with _locked(root, create=False):
        entry = _find(root, name)
        if entry['bad'] is None:
            return {'changed': False, 'snapshot': name}
        if not check:
            os.unlink(os.path.join(entry['path'], BAD))
            _fsync_dir(entry['path'])
        return {'changed': True, 'snapshot': name}


# ---------------------------------------------------------------- restore

def _live_state(target, files):
    """{relpath: sha256, 'dir', 'symlink:<target>' or 'size:<n>'} of the live directory: a file is
    hashed only when its size equals the snapshot's."""
    state = {}
    if not os.path.isdir(target):
        return state
    for rel, (kind, value) in _scan(target).items():
        if kind == 'dir':
            state[rel] = 'dir'
        elif kind == 'symlink':
            state[rel] = 'symlink:' + value
        else:
            item = files.get(rel) or {}
            same_size = item.get('type') == 'file' and item.get('size') == value.st_size
            state[rel] = sha256_file(os.path.join(target, rel)) if same_size else 'size:%d' % value.st_size
    return state


def _wanted_state(files):
    wanted = {}
    for rel, item in files.items():
        if item['type'] == 'file':
            wanted[rel] = item['sha256']
        elif item['type'] == 'dir':
            wanted[rel] = 'dir'
        else:
            wanted[rel] = 'symlink:' + item['target']
    return wanted


def _place_order(rels):
    """Files in the order they replace the live ones: plain files, then metadata, then indexes."""
    indexes = {index for dummy, index, meta in index_pairs(rels)}
    metas = {meta for dummy, index, meta in index_pairs(rels) if meta}
    return sorted(rels, key=lambda rel: (rel in indexes, rel in metas, rel))


def _own(path, item):
    """Give a restored entry the owner it had (when running as root, which can)."""
    if os.geteuid() == 0 and 'uid' in item:
        os.lchown(path, item['uid'], item['gid'])


def _stage(entry, staging, rels):
    """Copy the given entries of a snapshot into staging (dirs made as needed), fsynced, each
    file's sha256 checked against the manifest as it is copied."""
    data = os.path.join(entry['path'], DATA)
    files = entry['manifest']['files']
    copies = []
    for rel in sorted(rels):
        item = files[rel]
        dst = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if item['type'] == 'dir':
            os.makedirs(dst, exist_ok=True)
            os.chmod(dst, item['mode'])
            _own(dst, item)
        elif item['type'] == 'symlink':
            os.symlink(item['target'], dst)
            _own(dst, item)
        else:
            copies.append(rel)

    def copy(rel):
        item, src, dst = files[rel], os.path.join(data, rel), os.path.join(staging, rel)
        digest, dummy, dummy2 = _copy_file(src, dst, mode=item['mode'], syncer=syncer)
        if digest != item['sha256']:
            raise CorruptSnapshot(src, _mismatch(src))
        _own(dst, item)

    syncer = _Syncer()
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for future in [pool.submit(copy, rel) for rel in sorted(copies, key=lambda rel: -files[rel]['size'])]:
                future.result()
    except BaseException:
        with contextlib.suppress(OSError):
            syncer.finish()
        raise
    syncer.finish()
    for directory, dummy, dummy2 in os.walk(staging):
        _fsync_dir(directory)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _swap_contents(entry, target, plan):
    """Stage the new and changed entries inside target (same filesystem even when target is a
    mount point), then rename each into place: every file is at any time whole, old or new."""
    files = entry['manifest']['files']
    staging = os.path.join(target, RESTORE_PREFIX + str(os.getpid()))
    for name in os.listdir(target):
        if name.startswith(RESTORE_PREFIX):
            shutil.rmtree(os.path.join(target, name), ignore_errors=True)
    os.mkdir(staging, 0o700)
    try:
        _stage(entry, staging, plan['added'] + plan['replaced'])
        for rel in sorted(rel for rel in plan['added'] + plan['replaced'] if files[rel]['type'] == 'dir'):
            path = os.path.join(target, rel)
            if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
                os.unlink(path)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, files[rel]['mode'])
            _own(path, files[rel])
        for rel in _place_order([rel for rel in plan['added'] + plan['replaced'] if files[rel]['type'] != 'dir']):
            path = os.path.join(target, rel)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)  # a directory where the snapshot has a file
            os.rename(os.path.join(staging, rel), path)
        # What the snapshot does not have goes last; an index before its metadata.
        for rel in reversed(_place_order(plan['removed'])):
            _remove(os.path.join(target, rel))
        for directory in sorted({os.path.dirname(os.path.join(target, rel)) for rel in files} | {target}):
            if os.path.isdir(directory):
                _fsync_dir(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _renameat2_exchange(first, second):
    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, 'renameat2', None)
    if function is None:
        raise SnapshotError('swap=exchange needs renameat2(2) (glibc 2.28 or later)')
    at_fdcwd = -100
    if function(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), second)


def _swap_directory(entry, target):
    """Stage the whole snapshot next to target and exchange the two directories in one
    renameat2(RENAME_EXCHANGE): the path shows the old tree or the new one, nothing between."""
    if os.path.ismount(target):
        raise SnapshotError('swap=exchange cannot replace %s: it is a mount point (use swap=contents)' % target)
    parent = os.path.dirname(os.path.abspath(target))
    staging = os.path.join(parent, RESTORE_PREFIX + os.path.basename(target) + '-' + str(os.getpid()))
    _remove(staging)
    os.mkdir(staging, 0o700)
    try:
        _stage(entry, staging, list(entry['manifest']['files']))
        if os.path.isdir(target):
            st = os.stat(target)
            os.chmod(staging, stat.S_IMODE(st.st_mode))
            _own(staging, {'uid': st.st_uid, 'gid': st.st_gid})
            _renameat2_exchange(staging, target)
        else:
            top = entry['manifest'].get('top', {'mode': 0o755})
            os.chmod(staging, top['mode'])
            _own(staging, top)
            os.rename(staging, target)
        _fsync_dir(parent)
    finally:
        _remove(staging)


def _existing_parent(path):
    path = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def restore(root, target, name=None, check=False, swap='contents'):
    """Restore a named (or the newest good) snapshot into target, after checking every checksum."""
    started = time.monotonic()
    if swap not in ('contents', 'exchange'):
        raise SnapshotError("swap must be 'contents' or 'exchange', got %r" % (swap,))
    if not os.path.isdir(root):
        raise SnapshotNotFound('the snapshot root %s does not exist' % root)
    with _locked(root):
        entry = _find(root, name)
        if name is not None and entry['bad'] is not None:
            raise SnapshotError('snapshot %s is marked bad (%s): restore another one, or clear the mark first'
                                % (name, entry['bad']))
        files = entry['manifest']['files']
        if os.path.lexists(target) and not os.path.isdir(target):
            raise SnapshotError('cannot restore into %s: it exists and is not a directory' % target)
        before = _live_state(target, files)
        after = _wanted_state(files)
        plan = {'added': sorted(rel for rel in after if rel not in before),
                'replaced': sorted(rel for rel in after if rel in before and before[rel] != after[rel]),
                'removed': sorted(rel for rel in before if rel not in after)}
        # A removed directory takes its contents with it.
        plan['removed'] = [rel for rel in plan['removed']
                           if not any(rel.startswith(other + '/') for other in plan['removed'])]
        changed = any(plan.values()) or not os.path.isdir(target)
        staged = set()
        if changed and not check:
            staged = set(files) if swap == 'exchange' else set(plan['added'] + plan['replaced'])
        # Every checksum is checked before the live directory changes: here, or (each staged
        # file) as it is copied to the staging directory, before the first rename.
        errors = _checksum_errors(entry, staged)
        if errors:
            raise CorruptSnapshot(errors[0][0], 'snapshot %s is corrupt, refusing to restore it: %s'
                                  % (entry['name'], errors[0][1]))
        if changed and not check:
            need = sum(files[rel]['size'] for rel in staged if files[rel]['type'] == 'file')
            usage = os.statvfs(target if os.path.isdir(target) else _existing_parent(target))
            if need > usage.f_bavail * usage.f_frsize:
                raise NoSpace('no space left in %s to restore snapshot %s: %d bytes needed, %d free; the live files are '
                              'as before' % (target, entry['name'], need, usage.f_bavail * usage.f_frsize))
            made = not os.path.isdir(target)
            try:
                if swap == 'exchange':
                    _swap_directory(entry, target)
                else:
                    if made:
                        top = entry['manifest'].get('top', {'mode': 0o755})
                        os.makedirs(target, mode=top['mode'])
                        os.chmod(target, top['mode'])
                        _own(target, top)
                    _swap_contents(entry, target, plan)
            except CorruptSnapshot as error:
                if made and swap == 'contents':
                    shutil.rmtree(target, ignore_errors=True)
                raise CorruptSnapshot(error.path, 'snapshot %s is corrupt, refusing to restore it: %s'
                                      % (entry['name'], error)) from error
            except OSError as error:
                if _no_space(error):
                    raise NoSpace('no space left in %s to restore snapshot %s (%s); the live files are as before'
                                  % (target, entry['name'], error)) from error
                raise SnapshotError('cannot restore snapshot %s into %s: %s' % (entry['name'], target, error)) from error
        total = sum(item['size'] for item in files.values() if item['type'] == 'file')
        return dict(plan, changed=changed, snapshot=entry['name'], target=target, before=before, after=after,
                    files=sum(1 for item in files.values() if item['type'] == 'file'), bytes=total,
                    indexes=entry['manifest'].get('indexes', {}), duration=round(time.monotonic() - started, 3))


# ---------------------------------------------------------------- command line

def _parser():
    parser = argparse.ArgumentParser(prog='faiss_snapshot', description='Snapshots of a FAISS index directory.')
    commands = parser.add_subparsers(dest='command', required=True)

    def retention(sub):
        sub.add_argument('--keep', type=int, default=7, help='snapshots to keep (0: no limit)')
        sub.add_argument('--max-age-days', type=float, default=0, help='remove snapshots older than this (0: never)')

    sub = commands.add_parser('snapshot', help='take a snapshot (none when nothing changed), then prune')
    sub.add_argument('--source', required=True)
    sub.add_argument('--root', required=True)
    sub.add_argument('--no-verify', action='store_true')
    sub.add_argument('--check', action='store_true')
    retention(sub)
    sub = commands.add_parser('restore', help='restore a snapshot (default: the newest good one)')
    sub.add_argument('--root', required=True)
    sub.add_argument('--target', required=True)
    sub.add_argument('--name')
    sub.add_argument('--swap', choices=('contents', 'exchange'), default='contents')
    sub.add_argument('--check', action='store_true')
    sub = commands.add_parser('verify', help='check checksums, load and search every index (exit 1 when not ok)')
    sub.add_argument('--root', required=True)
    sub.add_argument('--name')
    sub.add_argument('--no-search', action='store_true')
    sub = commands.add_parser('mark-bad', help='mark a snapshot bad')
    sub.add_argument('--root', required=True)
    sub.add_argument('--name', required=True)
    sub.add_argument('--reason', required=True)
    sub = commands.add_parser('clear-bad', help='take the bad mark off a snapshot')
    sub.add_argument('--root', required=True)
    sub.add_argument('--name', required=True)
    sub = commands.add_parser('list', help='the snapshots, newest first')
    sub.add_argument('--root', required=True)
    sub = commands.add_parser('prune', help='apply the retention')
    sub.add_argument('--root', required=True)
    sub.add_argument('--check', action='store_true')
    retention(sub)
    return parser


def main(argv=None):
    """Command line: one JSON object on stdout; exit 0, 1 on a SnapshotError (or verify not ok), 2 usage."""
    args = _parser().parse_args(argv)
    try:
        if args.command == 'snapshot':
            result = snapshot(args.source, args.root, args.keep, args.max_age_days, not args.no_verify, args.check)
        elif args.command == 'restore':
            result = restore(args.root, args.target, args.name, args.check, args.swap)
            result.pop('before')
            result.pop('after')
        elif args.command == 'verify':
            result = verify(args.root, args.name, not args.no_search)
        elif args.command == 'mark-bad':
            result = mark_bad(args.root, args.name, args.reason)
        elif args.command == 'clear-bad':
            result = clear_bad(args.root, args.name)
        elif args.command == 'list':
            result = {'snapshots': list_snapshots(args.root), 'newest_good': newest_good(args.root)}
        else:
            result = {'pruned': prune(args.root, args.keep, args.max_age_days, args.check)}
    except (SnapshotError, OSError) as error:
        sys.stdout.write(json.dumps({'failed': True, 'msg': str(error), 'error': type(error).__name__,
                                     'path': getattr(error, 'path', None) or getattr(error, 'filename', None)}) + '\n')
        return 1
    sys.stdout.write(json.dumps(result, sort_keys=True) + '\n')
    return 1 if result.get('ok') is False else 0


if __name__ == '__main__':
    raise SystemExit(main())
