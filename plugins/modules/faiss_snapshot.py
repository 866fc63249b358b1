#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


DOCUMENTATION = r"""
module: faiss_snapshot

short_description: Take, restore and mark snapshots of a FAISS index directory

version_added: 0.1.0

description:
  - Snapshots a directory of FAISS indexes (O(state=present)) under a snapshot root O(dest), restores one
    (O(state=restored)), or marks one bad (O(state=bad)).
  - Each index is a pair of files, C(<name>.faiss) with C(<name>.meta.json) (the reference backend's layout) or
    C(<name>.index) with C(<name>_metadata.json). Every other file and subdirectory is copied as it is; names that
    start with C(.mmo-) are left out.
  - A snapshot is written to a temporary directory C(DEST/.tmp-<name>), every file checksummed (sha256) into
    C(MANIFEST.json), fsynced, then renamed to C(DEST/<name>) (the UTC time, C(YYYYmmddTHHMMSSZ)), so it exists whole or
    not at all. On any error, a full disk included, nothing of it is left.
  - A file that changes while it is copied (its size, mtime, ctime or inode differ before and after) is copied again, with
    the other file of its pair, so no snapshot pairs an index with the wrong metadata.
  - With O(verify=true), each index is loaded with faiss (when importable on the target; otherwise its header is read) and
    its C(ntotal) and dimension are recorded in the manifest; its metadata must hold one entry per vector.
  - When no file changed since the newest good snapshot (same files, each with the size, mtime, ctime and inode the
    manifest recorded), no snapshot is taken and no file is read; RV(ignore:changed) is then V(false) unless retention
    removes one.
  - Retention by count (O(retain_count)) and by age (O(retain_days)); the newest good snapshot is always kept.
  - O(state=restored) checks every checksum of the snapshot first and refuses a corrupt one, naming the file. See
    O(swap) for what the live directory goes through.
  - The snapshot engine is the collection's C(faiss_snapshot) module_utils, the same code the C(backups) role's
    scheduled job runs on the host.
  - Requires nothing but the Python standard library on the target, and Linux; faiss (C(faiss-cpu)) is used when present.

attributes:
  check_mode:
    support: full
    description: Can run in check mode and return changed status prediction without modifying target.
    details:
      - Reports the snapshot it would take (or that it would take none), the snapshots retention would remove, and for a
        restore the files it would add, replace and remove. A restore in check mode still checks every checksum.
  diff_mode:
    support: full
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    details:
      - For O(state=present) the list of snapshots before and after; for O(state=restored) the live files (with their
        sha256) before and after; for O(state=bad) the mark.

options:
  path:
    description:
      - The live FAISS index directory, for example the host directory of the backend's C(mmo-backend-faiss) volume.
      - What O(state=present) snapshots, and what O(state=restored) replaces (it is created when missing).
    type: path
    required: true
  dest:
    description:
      - The snapshot root, one directory per snapshot. Created (mode 0700) when missing.
      - Must not be inside O(path).
    type: path
    required: true
  state:
    description:
      - V(present) takes a snapshot unless nothing changed since the newest good one, then applies the retention.
      - V(restored) restores O(snapshot) (default the newest good snapshot) into O(path).
      - V(bad) marks O(snapshot) bad (a C(BAD) file in it); it stays for inspection but is never the newest good one.
    type: str
    choices: [present, restored, bad]
    default: present
  snapshot:
    description:
      - Name of the snapshot to restore or mark bad. Required with O(state=bad).
      - With O(state=restored), a snapshot marked bad is refused.
    type: str
  reason:
    description:
      - Why the snapshot is bad, recorded in its C(BAD) mark (O(state=bad)).
    type: str
    default: marked bad
  retain_count:
    description:
      - How many snapshots to keep (the newest ones, bad ones included); V(0) for no limit.
    type: int
    default: 7
  retain_days:
    description:
      - Remove snapshots older than this many days; V(0) for no age limit.
    type: float
    default: 0
  verify:
    description:
      - Load each index of the new snapshot (with faiss when importable, memory-mapped when it can) and check its metadata
        holds one entry per vector; an index that disagrees with its metadata is copied again, then fails the task.
    type: bool
    default: true
  max_attempts:
    description:
      - How many times a file that keeps changing while it is copied is tried before the task fails.
    type: int
    default: 5
  swap:
    description:
      - How O(state=restored) replaces the live directory.
      - V(contents) stages the new and changed files inside O(path) (in C(.mmo-restore-<pid>), so on the same filesystem
        even when O(path) is a mount point, such as a Docker volume's C(_data) seen from a container), fsyncs them, then
        renames each into place and removes what the snapshot does not have. Every file is at any time either whole old
        or whole new, never partly written, and all new data is on disk before the first rename; for the short time of the
        renames a reader listing the directory may see some files new and others old (a metadata file is replaced before
        its index, the order the backend writes them in). A process that holds the directory open (a running container)
        sees the restored files.
      - V(exchange) stages the whole snapshot next to O(path) and swaps the two directories in one
        C(renameat2(RENAME_EXCHANGE)), so the path shows the old tree or the new one, nothing between. A process that holds
        the old directory (a running container's volume mount) keeps seeing the old one, so use it only when nothing
        uses the directory; refused when O(path) is a mount point.
    type: str
    choices: [contents, exchange]
    default: contents

notes:
  - Every operation holds an exclusive lock on C(DEST/.lock), so the module and the scheduled job never run at once.
  - A snapshot directory holds C(data/) (the files), C(MANIFEST.json) and, when marked bad, C(BAD).

seealso:
  - name: FAISS
    description: The similarity search library whose indexes are snapshotted.
    link: https://github.com/facebookresearch/faiss

author:
  - multimodel.orchestration contributors (@multimodel)
"""

EXAMPLES = r"""
- name: Snapshot the backend's FAISS volume, keeping 7 snapshots of at most 30 days
  multimodel.orchestration.faiss_snapshot:
    path: /var/lib/docker/volumes/mmo-backend-faiss/_data
    dest: /var/backups/multimodel/faiss
    retain_count: 7
    retain_days: 30
  register: faiss_snapshot

- name: Restore the newest good snapshot (with the backend replicas stopped)
  multimodel.orchestration.faiss_snapshot:
    path: /var/lib/docker/volumes/mmo-backend-faiss/_data
    dest: /var/backups/multimodel/faiss
    state: restored

- name: Restore a named snapshot
  multimodel.orchestration.faiss_snapshot:
    path: /var/lib/docker/volumes/mmo-backend-faiss/_data
    dest: /var/backups/multimodel/faiss
    state: restored
    snapshot: 20261202T030000Z

- name: Mark a snapshot bad, so that restores skip it
  multimodel.orchestration.faiss_snapshot:
    path: /var/lib/docker/volumes/mmo-backend-faiss/_data
    dest: /var/backups/multimodel/faiss
    state: bad
    snapshot: 20261202T030000Z
    reason: a sample search returned nothing
"""

RETURN = r"""
snapshot:
  description:
    - The snapshot taken (or, in check mode, that would be taken), the newest good one when nothing changed
      (O(state=present)), the one restored (O(state=restored)) or marked (O(state=bad)).
  returned: always
  type: str
  sample: 20261202T030000Z
path:
  description: Path of RV(snapshot).
  returned: always
  type: str
  sample: /var/backups/multimodel/faiss/20261202T030000Z
created:
  description: Whether a new snapshot was (or in check mode would be) taken.
  returned: when O(state=present)
  type: bool
  sample: true
files:
  description: Number of files in the snapshot.
  returned: when O(state=present) or O(state=restored)
  type: int
  sample: 4
bytes:
  description: Total size of the snapshot's files.
  returned: when O(state=present) or O(state=restored)
  type: int
  sample: 1073741824
bytes_copied:
  description: Bytes copied from O(path), recopies included; V(0) when nothing changed.
  returned: when O(state=present)
  type: int
  sample: 1073741824
recopied:
  description: Files copied again because they changed during the copy, with how many extra copies each took.
  returned: when O(state=present)
  type: dict
  sample: {"docs.faiss": 1, "docs.meta.json": 1}
indexes:
  description: The indexes of the snapshot as its manifest records them.
  returned: when O(state=present) or O(state=restored)
  type: dict
  sample:
    docs:
      index: docs.faiss
      metadata: docs.meta.json
      ntotal: 1000
      dimension: 256
      metadata_entries: 1000
      checked_with: faiss
pruned:
  description: Snapshots retention removed (or in check mode would remove).
  returned: when O(state=present)
  type: list
  elements: str
  sample: ["20261125T030000Z"]
snapshots:
  description: The snapshots after the task, newest first.
  returned: when O(state=present)
  type: list
  elements: str
  sample: ["20261202T030000Z", "20261201T030000Z"]
added:
  description: Entries of the snapshot that O(path) did not have.
  returned: when O(state=restored)
  type: list
  elements: str
  sample: ["docs.faiss"]
replaced:
  description: Entries of O(path) replaced by the snapshot's.
  returned: when O(state=restored)
  type: list
  elements: str
  sample: ["docs.meta.json"]
removed:
  description: Entries of O(path) the snapshot does not have, removed.
  returned: when O(state=restored)
  type: list
  elements: str
  sample: ["stale.faiss"]
reason:
  description: The bad mark's reason (the earlier one when the snapshot was already marked).
  returned: when O(state=bad)
  type: str
  sample: a sample search returned nothing
duration:
  description: Seconds the task took.
  returned: when O(state=present) or O(state=restored)
  type: float
  sample: 1.25
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.multimodel.orchestration.plugins.module_utils.faiss_snapshot import (
    SnapshotError,
    mark_bad,
    restore,
    snapshot,
)


def _lines(mapping):
    return ''.join('%s %s\n' % (key, mapping[key]) for key in sorted(mapping))


def run_present(module, params):
    result = snapshot(params['path'], params['dest'], params['retain_count'], params['retain_days'],
                      params['verify'], module.check_mode, params['max_attempts'])
    after = result['snapshots']
    before = [name for name in after if name != result['created']] + result['pruned']
    before.sort(reverse=True)
    diff = {'before': {'snapshots': before}, 'after': {'snapshots': after},
            'before_header': params['dest'], 'after_header': params['dest']}
    return dict(changed=result['changed'], snapshot=result['snapshot'], path=result['path'],
                created=result['created'] is not None, files=result['files'], bytes=result['bytes'],
                bytes_copied=result['bytes_copied'], recopied=result['recopied'], indexes=result['indexes'],
                pruned=result['pruned'], snapshots=after, duration=result['duration'], diff=diff)


def run_restored(module, params):
    result = restore(params['dest'], params['path'], params['snapshot'], module.check_mode, params['swap'])
    diff = {'before': _lines(result['before']), 'after': _lines(result['after']),
            'before_header': '%s (live)' % params['path'],
            'after_header': '%s (snapshot %s)' % (params['path'], result['snapshot'])}
    return dict(changed=result['changed'], snapshot=result['snapshot'], path=result['target'],
                files=result['files'], bytes=result['bytes'], indexes=result['indexes'], added=result['added'],
                replaced=result['replaced'], removed=result['removed'], duration=result['duration'], diff=diff)


def run_bad(module, params):
    result = mark_bad(params['dest'], params['snapshot'], params['reason'], module.check_mode)
    mark = {'bad': True, 'reason': result['reason']}
    diff = {'before': mark if not result['changed'] else {'bad': False}, 'after': mark,
            'before_header': params['snapshot'], 'after_header': params['snapshot']}
    return dict(changed=result['changed'], snapshot=params['snapshot'], reason=result['reason'],
                path='%s/%s' % (params['dest'].rstrip('/'), params['snapshot']), diff=diff)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            dest=dict(type='path', required=True),
            state=dict(type='str', choices=['present', 'restored', 'bad'], default='present'),
            snapshot=dict(type='str'),
            reason=dict(type='str', default='marked bad'),
            retain_count=dict(type='int', default=7),
            retain_days=dict(type='float', default=0),
            verify=dict(type='bool', default=True),
            max_attempts=dict(type='int', default=5),
            swap=dict(type='str', choices=['contents', 'exchange'], default='contents'),
        ),
        required_if=[('state', 'bad', ['snapshot'])],
        supports_check_mode=True,
    )
    params = module.params
    problems = []
    if params['retain_count'] < 0:
        problems.append('retain_count must be 0 (no limit) or a number of snapshots to keep, got %s' % params['retain_count'])
    if params['retain_days'] < 0:
        problems.append('retain_days must be 0 (no limit) or a number of days, got %s' % params['retain_days'])
    if params['max_attempts'] < 1:
        problems.append('max_attempts must be at least 1, got %s' % params['max_attempts'])
    name = params['snapshot']
    if name is not None and (not name or '/' in name or name.startswith('.')):
        problems.append("snapshot must be the name of a directory under dest (%s), not hidden and without '/', got '%s'"
                        % (params['dest'], name))
    if problems:
        module.fail_json(msg='; '.join(problems))
    runner = {'present': run_present, 'restored': run_restored, 'bad': run_bad}[params['state']]
    try:
        result = runner(module, params)
    except SnapshotError as error:
        module.fail_json(msg=str(error), error=type(error).__name__, file=getattr(error, 'path', None))
    except OSError as error:
        module.fail_json(msg='%s failed: %s' % (params['state'], error), error=type(error).__name__,
                         file=error.filename)
    if not module._diff:
        result.pop('diff')
    module.exit_json(**result)


if __name__ == '__main__':
    main()
