"""Build a retrieval index the backend can load.

    python -m multimodel_backend.build_index DIR NAME docs.jsonl [--dim 1024]

docs.jsonl has one JSON object per line: {"text": ..., "id": ..., "source": ...}; only
"text" is required (id defaults to the line number, source to ""). Writes DIR/NAME.faiss
and DIR/NAME.meta.json atomically; a running backend picks them up within seconds.
"""

import argparse
import json
import sys
from collections.abc import Sequence

from .embedder import DEFAULT_DIM
from .retrieval import write_index


def read_docs(path: str) -> list[dict[str, str]]:
    passages = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise SystemExit(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not doc["text"].strip():
                raise SystemExit(f"{path}:{number}: needs a non-empty string \"text\"")
            passages.append({"id": str(doc.get("id", number)), "text": doc["text"],
                             "source": str(doc.get("source", ""))})
    return passages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multimodel_backend.build_index",
                                     description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("directory", help="index directory (MMO_FAISS_DIR)")
    parser.add_argument("name", help="index name: writes NAME.faiss and NAME.meta.json")
    parser.add_argument("docs", help="JSON Lines file of {\"text\", \"id\", \"source\"}")
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM, help="embedding dimension (default %(default)s)")
    args = parser.parse_args(argv)
    if args.dim < 8:
        parser.error("--dim must be at least 8")
    if not args.name or "/" in args.name or args.name.startswith("."):
        parser.error("NAME must be a plain file name")
    try:
        count = write_index(args.directory, args.name, read_docs(args.docs), args.dim)
    except OSError as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"wrote {args.directory}/{args.name}.faiss and .meta.json: {count} passages, dim {args.dim}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
