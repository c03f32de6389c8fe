"""The run's secrets (API keys, storage credentials) kept out of every text it writes.

A secret is the value of one of the environment variables in `ENVIRONMENT` or of a secret config
option (`modalink.config.secret`), or a value read from a Prefect Secret block (`prefect_secret`).
`redact` replaces each of them (also URL-encoded) and the password of any `scheme://user:password@`
URL with `***`. Error messages, errors.log and the records go through it where they are written,
and importing this module makes every log record of the process go through it too (`redact_logs`),
whatever logger or handler (the terminal, Prefect's API) takes it, and the traceback of an
uncaught exception.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import traceback
from urllib.parse import quote, quote_plus

ENVIRONMENT = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PREFECT_API_KEY")
HIDDEN = "***"
MIN_LENGTH = 4  # shorter values would hide ordinary words
_PASSWORD_IN_URL = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_loaded: set[str] = set()  # values read from Prefect Secret blocks in this process


def secret_values() -> list[str]:
    """Every secret this process knows now, longest first, with its URL-encoded forms."""
    from modalink.config import secret_variables

    values = {os.environ.get(name) for name in (*ENVIRONMENT, *secret_variables())} | _loaded
    forms = {form for value in values if value and len(value) >= MIN_LENGTH
             for form in (value, quote_plus(value), quote(value, safe=""))}
    return sorted(forms, key=len, reverse=True)


def redact(text: object) -> str:
    """`text` with every secret of this process, and the passwords in URLs, replaced by `***`."""
    text = str(text)
    for value in secret_values():
        text = text.replace(value, HIDDEN)
    return _PASSWORD_IN_URL.sub(rf"\g<1>{HIDDEN}@", text)


@functools.cache
def prefect_secret(block_name: str) -> str:
    """The value of the Prefect Secret block `block_name` (read once per process), remembered for `redact`."""
    from modalink.config import ConfigError

    try:
        from prefect.blocks.system import Secret

        value = str(Secret.load(block_name).get())
    except Exception as exc:  # noqa: BLE001 - a missing block, no server: one line
        raise ConfigError(f"cannot read the Prefect Secret block {block_name!r}: {redact(exc)}") from None
    _loaded.add(value)
    return value


_install_lock = threading.Lock()


def redact_logs() -> None:
    """Make every log record created in this process carry its message, and its traceback, redacted
    (a no-op once done)."""
    with _install_lock:
        previous = logging.getLogRecordFactory()
        if getattr(previous, "redacts", False):
            return

        def factory(*args, **kwargs) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
                if record.exc_info and not record.exc_text:
                    record.exc_text = logging.Formatter().formatException(record.exc_info)
            except Exception:  # noqa: BLE001 - a record that cannot be formatted is the handler's to report
                return record
            record.msg, record.args = redact(message), ()
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            return record

        factory.redacts = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
        if sys.excepthook is sys.__excepthook__:
            sys.excepthook = _print_redacted


def _print_redacted(kind, error, trace) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, error, trace))))


redact_logs()
