"""The errors vat-hf shows to people: one base class, each error naming what is wrong and, where
there is one, the fix; and the one way every entry point shows them.

Every user-facing error is a :class:`VatHfError` (the data layer's ``ItemValidationError``, the
taxonomy's ``UnknownValueError``, the metric's ``VATInputError``, the recipe and training
config errors, ...). The entry points (``vat-hf``, ``python -m vat_hf.evaluate``,
``python -m vat_hf.train.sft``/``dpo``) run through :func:`run_main`: such an error is printed
as ``error: <message>`` (with its fix on the next line) and the process exits with status 1;
the traceback is shown only with ``-v``. A bug (any other exception) still shows its traceback.

Just above the bottom of the layers (it imports only :mod:`vat_hf.redaction`, so the messages it
prints carry no secret), so every layer can raise these without pointing up.
"""

from __future__ import annotations

import errno
import sys
import traceback
from typing import Callable, Optional, TextIO

from vat_hf.redaction import redact_text


class VatHfError(Exception):
    """Base of every user-facing vat-hf error. ``fix`` (optional) says what to do about it and is
    shown on a line of its own.

    >>> str(VatHfError("recipe r.yaml: unknown key 'lerning_rate'", fix="did you mean learning_rate?"))
    "recipe r.yaml: unknown key 'lerning_rate'\\n  fix: did you mean learning_rate?"
    """

    def __init__(self, message: str, fix: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class RecipeError(VatHfError, ValueError):
    """An experiment recipe key or value that cannot be used; names the file, line, key and the fix."""


class DiskFullError(VatHfError, OSError):
    """A write that failed for want of space (``ENOSPC``/``EDQUOT``), naming the file; what was
    written before is whole (every result is written atomically)."""


class InUseError(VatHfError, RuntimeError):
    """An output folder or adapter folder that another vat-hf process is using right now."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the device is full: an ``OSError`` with ``ENOSPC``/``EDQUOT``, or
    the ``RuntimeError`` torch raises when ``torch.save`` hits a full disk."""
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(err, RuntimeError) and "No space left on device" in str(err)


def disk_full(path, err: BaseException) -> DiskFullError:
    """The :class:`DiskFullError` of a failed write to ``path``."""
    return DiskFullError(f"no space left on the device of {path} ({type(err).__name__}: "
                         f"{getattr(err, 'strerror', None) or err}); nothing already written was lost",
                         fix="free space there (or write elsewhere) and run the same command again: "
                             "finished work is kept and reused")


def format_error(err: BaseException) -> str:
    """How an error is shown: ``error: <message>`` (secrets redacted), its fix on the next line.

    >>> format_error(VatHfError("data.max_scenes = -2: must be >= 1", fix="give a whole number >= 1"))
    'error: data.max_scenes = -2: must be >= 1\\n  fix: give a whole number >= 1'
    >>> format_error(FileNotFoundError(2, "No such file or directory", "pre.jsonl"))
    'error: pre.jsonl: No such file or directory'
    """
    if isinstance(err, OSError) and not isinstance(err, VatHfError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
        if err.filename2 is not None:
            text += f" (and {err.filename2})"
    else:
        text = str(err) or type(err).__name__
    return "error: " + redact_text(text)


def is_user_error(err: BaseException) -> bool:
    """Errors shown as ``error: ...`` (exit 1) rather than a traceback: every :class:`VatHfError`,
    and an ``OSError`` that names its file (a missing, unreadable or unwritable path)."""
    return isinstance(err, VatHfError) or (isinstance(err, OSError) and err.filename is not None)


def report_error(err: BaseException, verbose: bool = False, stream: Optional[TextIO] = None) -> int:
    """Print ``err`` the way every entry point does (the traceback first with ``verbose``) and
    return the exit status, 1."""
    stream = stream or sys.stderr
    if verbose:
        traceback.print_exception(type(err), err, err.__traceback__, file=stream)
    print(format_error(err), file=stream)
    stream.flush()
    return 1


def run_main(main: Callable[[], Optional[int]], verbose: bool = False) -> int:
    """Run an entry point's ``main``: its return value (0 for None) is the exit status; a user
    error (:func:`is_user_error`) is printed as ``error: ...`` and gives 1, the traceback only
    with ``verbose``; any other exception propagates with its traceback (a bug)."""
    try:
        return main() or 0
    except Exception as err:  # noqa: BLE001 - sorted by is_user_error; the rest re-raised
        if not is_user_error(err):
            raise
        return report_error(err, verbose)


def wants_verbose(argv) -> bool:
    """Whether ``-v``/``--verbose`` is among the arguments (for the entry points whose own
    parser has no such flag)."""
    return any(a in ("-v", "--verbose") for a in argv)
