"""A deterministic feature-hashing text embedder (no model download needed).

No model hub is reachable where this runs, so retrieval uses the hashing trick instead of
a neural embedding model:

1. lower-case the text and split it into word tokens (``\\w+``, Unicode aware);
2. features = every token plus every pair of adjacent tokens (bigrams, "new york");
3. each feature is hashed with BLAKE2b (stable across processes and machines, unlike
   Python's ``hash``) to a bucket in ``[0, dim)`` and a sign (+1/-1, so collisions cancel
   out on average instead of piling up);
4. the bucket counts are L2-normalised, so an inner-product FAISS index ranks by cosine
   similarity.

It matches passages that share words and phrases with the query (a sparse lexical match,
like TF without IDF), not paraphrases. Indexes and queries must use the same embedder and
dimension: build indexes with ``python -m multimodel_backend.build_index``.
"""

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

DEFAULT_DIM = 1024
_TOKEN = re.compile(r"\w+")


def features(text: str) -> list[str]:
    tokens = _TOKEN.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


@lru_cache(maxsize=65536)  # frequent words are hashed once
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=9).digest()
    return int.from_bytes(digest[:8], "little") % dim, 1.0 if digest[8] & 1 else -1.0


def embed(texts: Sequence[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """Embed a list of strings as a (len(texts), dim) float32 matrix of unit rows
    (a text without any word stays all zeros)."""
    matrix = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for feature in features(text):
            column, sign = _bucket(feature, dim)
            matrix[row, column] += sign
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix
