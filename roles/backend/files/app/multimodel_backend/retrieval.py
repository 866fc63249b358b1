"""FAISS retrieval over every index in MMO_FAISS_DIR.

An index is a pair of files: ``<name>.faiss`` (any FAISS index whose vectors come from
``embedder.embed``; build_index writes an exact inner-product index) and ``<name>.meta.json``
(a JSON list of ``{"id", "text", "source"}``, one per vector, in index order).

Indexes are loaded at startup and reloaded when either file changes (mtime, size or inode), so an
operator can drop in or rebuild an index without restarting the backend. ``IndexStore.fingerprint``
names the indexes in use (their names, sizes and mtimes): it is part of the answer cache's keys,
so an answer built on an older index is never served once a rebuild is loaded.
"""

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss

from .embedder import embed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedIndex:
    index: Any  # a faiss.Index
    passages: list[dict[str, Any]]
    signature: tuple


def _signature(*paths: str) -> tuple:
    stats = [os.stat(p) for p in paths]
    return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)  # a rename changes the inode


def _load(faiss_path: str, meta_path: str) -> LoadedIndex:
    signature = _signature(faiss_path, meta_path)
    index = faiss.read_index(faiss_path)
    with open(meta_path, encoding="utf-8") as handle:
        passages = json.load(handle)
    if not isinstance(passages, list) or not all(isinstance(p, dict) and "text" in p for p in passages):
        raise ValueError("meta.json must be a list of {\"id\", \"text\", \"source\"} objects")
    if len(passages) != index.ntotal:
        # Usually a rebuild caught half-way (one file replaced, not yet the other).
        raise ValueError(f"{index.ntotal} vectors but {len(passages)} passages")
    return LoadedIndex(index, passages, signature)


def _fingerprint(indexes: dict[str, LoadedIndex]) -> str:
    """A short hash of the loaded indexes' names, sizes and mtimes (not the inode: copying
    the same files elsewhere is the same index)."""
    material = sorted((name, [(mtime, size) for _inode, mtime, size in loaded.signature])
                      for name, loaded in indexes.items())
    return hashlib.sha256(json.dumps(material).encode("utf-8")).hexdigest()[:16]


class IndexStore:
    def __init__(self, directory: str, reload_interval: float = 2.0) -> None:
        self.directory = directory
        self.reload_interval = reload_interval
        self.indexes: dict[str, LoadedIndex] = {}  # name -> LoadedIndex; replaced whole, never mutated, so searches need no lock
        self._checked = float("-inf")
        self.fingerprint = _fingerprint({})
        self._refresh_lock = threading.Lock()

    def refresh(self) -> None:
        """Load new and changed indexes, forget deleted ones. A broken index keeps its
        previous version (if any) and is retried on the next refresh."""
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is refreshing right now
        try:
            self._checked = time.monotonic()
            try:
                names = sorted(f[:-len(".faiss")] for f in os.listdir(self.directory) if f.endswith(".faiss"))
            except OSError as exc:
                if self.indexes:
                    log.warning("cannot list index directory %s: %s", self.directory, exc.strerror)
                names = []
            current = {}
            for name in names:
                faiss_path = os.path.join(self.directory, name + ".faiss")
                meta_path = os.path.join(self.directory, name + ".meta.json")
                old = self.indexes.get(name)
                try:
                    if old and old.signature == _signature(faiss_path, meta_path):
                        current[name] = old
                        continue
                    current[name] = _load(faiss_path, meta_path)
                    log.info("loaded index %s: %d passages, dim %d", name, current[name].index.ntotal,
                             current[name].index.d)
                except (OSError, ValueError, RuntimeError) as exc:  # faiss raises RuntimeError
                    log.warning("index %s not loaded: %s", name, exc)
                    if old:
                        current[name] = old
            self.indexes = current
            self.fingerprint = _fingerprint(current)
        finally:
            self._refresh_lock.release()

    def refresh_if_due(self) -> None:
        if time.monotonic() - self._checked >= self.reload_interval:
            self.refresh()

    def search(self, query: str, k: int = 4) -> list[dict[str, Any]]:
        """Top-k passages over all indexes by cosine similarity; passages sharing no
        feature with the query (score <= 0) are left out."""
        self.refresh_if_due()
        hits = []
        vectors = {}  # one embedding per dimension in use
        for name, loaded in self.indexes.items():
            dim = loaded.index.d
            if dim not in vectors:
                vectors[dim] = embed([query], dim)
            scores, ids = loaded.index.search(vectors[dim], min(k, loaded.index.ntotal))
            for score, idx in zip(scores[0], ids[0]):
                if idx >= 0 and score > 1e-6:
                    passage = loaded.passages[idx]
                    hits.append({"id": str(passage.get("id", idx)), "text": passage["text"],
                                 "source": passage.get("source", ""), "index": name,
                                 "score": round(float(score), 4)})
        hits.sort(key=lambda hit: hit["score"], reverse=True)
        return hits[:k]


def _atomic_write(path: str, write: Callable[[str], Any]) -> None:
    """write(tmp_path) then rename over path, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the backend may run as another user
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_index(directory: str, name: str, passages: list[dict[str, Any]], dim: int) -> int:
    """Embed passages ({"id", "text", "source"}) and write <name>.faiss + <name>.meta.json."""
    index = faiss.IndexFlatIP(dim)  # exact search; fine up to a few hundred thousand passages
    if passages:
        index.add(embed([p["text"] for p in passages], dim))
    os.makedirs(directory, exist_ok=True)
    meta = json.dumps(passages, ensure_ascii=False).encode("utf-8")

    def write_meta(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(meta)

    # Two renames are not atomic together: a refresh in between sees a count mismatch (and
    # keeps the old pair) or, at worst, pairs old vectors with new texts until the next
    # refresh notices the .faiss changed too.
    _atomic_write(os.path.join(directory, name + ".meta.json"), write_meta)
    _atomic_write(os.path.join(directory, name + ".faiss"), lambda tmp: faiss.write_index(index, tmp))
    return index.ntotal
