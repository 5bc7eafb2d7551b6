"""Secrets never written: the one redaction every vat-hf writer applies.

A Hub token given in a training recipe's ``overrides`` (``hub_token``), an API key of a served
model (``api_key``), a password or an ``Authorization`` header must reach the code that uses it
and nothing else: not the experiment's ``config.json``, a result file's provenance, a model
card, the recipe copy beside an adapter, a log line or an error message. :func:`redact` is the
one function that strips them; :func:`vat_hf.io.write_json`/``write_jsonl`` (so every result,
config, record and training-info file), the model card, the recipe copy, the log handlers of the
command line (:class:`RedactingFilter`) and the error printer (:func:`vat_hf.errors.run_main`)
all go through it.

Two rules, both needed:

* by **key**: the value of a key that names a secret (:data:`SECRET_KEY`: ``token``, ``*_token``,
  ``*_key``, ``api_key``, ``password``, ``secret``, ``authorization``, ``cookie``, ...) is
  replaced by :data:`REDACTED`, at any depth; ``None`` and empty values stay as they are (a
  config then still shows that none was given). Counts such as ``n_tokens`` or
  ``max_batch_tokens`` are not secrets and are kept.
* by **shape**: strings that look like credentials wherever they appear (in an error message,
  a log line, a free-text field): Hugging Face tokens (``hf_...``), OpenAI-style keys
  (``sk-...``), GitHub tokens and ``Bearer ...`` headers (:data:`SECRET_TEXT`).

A leaf module: it imports nothing of vat-hf, so every layer (``io``, ``errors``) can use it.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping

REDACTED = "<redacted>"

SECRET_KEY = re.compile(
    r"[_\-.](?:token|key|apikey|password|passwd|passphrase|secret|credentials?|authorization|auth|cookie)$"
    r"|^(?:token|apikey|password|passwd|passphrase|secret|authorization|auth|cookie|credentials?)$",
    re.IGNORECASE,
)
"""Keys whose values are secrets: ``hub_token``, ``api_key``, ``HF_TOKEN``, ``x-api-key``,
``Authorization``, ``db_password``... but not ``n_tokens``, ``max_batch_tokens``, ``key`` (the
judgment cache's item key) or ``token_ids`` (nor the special tokens of :data:`NOT_SECRET_KEY`)."""

NOT_SECRET_KEY = re.compile(r"^(?:eos|bos|pad|unk|sep|cls|mask|additional_special|chat_template)_tokens?$", re.IGNORECASE)
"""A tokenizer's special tokens (``eos_token: "<|im_end|>"``, TRL's ``pad_token``): text, not credentials."""

SECRET_TEXT = re.compile(
    r"\bhf_[A-Za-z0-9]{20,}"                         # Hugging Face user/organisation tokens
    r"|\bsk-[A-Za-z0-9_\-]{20,}"                     # OpenAI-style API keys
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"                 # GitHub tokens
    r"|(?<=Bearer )[A-Za-z0-9._~+/\-]{8,}=*"         # an Authorization header's credential
)
"""Strings that are credentials wherever they occur."""


def is_secret_key(key: Any) -> bool:
    """Whether ``key`` names a secret.

    >>> [is_secret_key(k) for k in ("hub_token", "api_key", "Authorization", "HF_TOKEN", "x-api-key", "password")]
    [True, True, True, True, True, True]
    >>> [is_secret_key(k) for k in ("n_tokens", "max_batch_tokens", "key", "token_ids", "monkey", "pad_token_id", "eos_token")]
    [False, False, False, False, False, False, False]
    """
    return isinstance(key, str) and bool(SECRET_KEY.search(key)) and not NOT_SECRET_KEY.match(key)


def redact_text(text: str) -> str:
    """``text`` with every credential-shaped substring replaced by :data:`REDACTED`.

    >>> redact_text("push failed with token hf_abcdefghijklmnopqrstuvwxyz0123 (Bearer abc.def-123456)")
    'push failed with token <redacted> (Bearer <redacted>)'
    """
    return SECRET_TEXT.sub(REDACTED, text) if isinstance(text, str) else text


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (mappings, lists, tuples, strings, anything else as it is) without
    secrets: values under a secret key (:func:`is_secret_key`) become :data:`REDACTED` unless
    they are empty, and credential-shaped strings (:data:`SECRET_TEXT`) are cut out of every
    string, keys included.

    >>> redact({"overrides": {"hub_token": "hf_abcdefghijklmnopqrstuvwxyz0123", "learning_rate": 1e-4},
    ...         "api_key": None, "note": "token hf_abcdefghijklmnopqrstuvwxyz0123", "n_tokens": 12})
    {'overrides': {'hub_token': '<redacted>', 'learning_rate': 0.0001}, 'api_key': None, 'note': 'token <redacted>', 'n_tokens': 12}
    """
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            clean_key = redact_text(key) if isinstance(key, str) else key
            if is_secret_key(key) and value not in (None, "", {}, []):
                out[clean_key] = REDACTED
            else:
                out[clean_key] = redact(value)
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (installed on the handlers of the
    command line and the entry points, so no log line carries a secret)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: logging.Logger = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)
    that has none yet; a filter on the handler sees the records of every logger below it."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
