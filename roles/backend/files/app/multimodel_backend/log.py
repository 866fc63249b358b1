"""The backend's logger, and the filter that keeps secrets out of its lines.

Every module logs under ``multimodel_backend`` (``llama`` under a child of it), so the one
handler set up here, with its redaction filter, sees every line the backend writes.
"""

import logging
import sys
from collections.abc import Iterable, Sequence

logger = logging.getLogger("multimodel_backend")


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    """Last line of defence: the code never logs secrets, and this masks any that slip in."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# uvicorn configures only its own loggers: ours gets one handler per process.
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))


def setup_logging(secrets: Sequence[str]) -> None:
    """Attach the handler once; mask the secrets of the latest app (one per process outside tests)."""
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
        logger.setLevel(logging.INFO)
    _handler.filters = [RedactSecrets(secrets)]
