"""What a query looks like on the wire (POST /api/query and each WebSocket message)."""

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A passage prepended to the prompt and returned as one of an answer's "sources":
# {"id", "text", "source", "index", "score"} (web results also have a "title").
Source = dict[str, Any]


class QueryRequest(BaseModel):
    # strict: "true" is not a bool and "12" is not an int; extra keys are typos, not options.
    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)

    query: str = Field(min_length=1, max_length=8000)
    mode: Literal["auto", "simple", "moderate", "complex"] = "auto"
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    use_retrieval: bool = False
    use_web: bool = False


def describe_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic errors as one line: 'query: String should have at least 1 character'."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
