"""Small file helpers shared by every stage: results are written atomically, so an interrupted
run never leaves a truncated file that a later run would trust; a write that fails for want of
space says which file (:class:`vat_hf.errors.DiskFullError`) and leaves the old file whole; JSON
and JSON lines pass through the one redaction (:func:`vat_hf.redaction.redact`), so no config,
result or record carries a secret; and :func:`folder_lock` keeps a folder to one process."""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Union

import numpy as np

from vat_hf.errors import InUseError, VatHfError, disk_full, is_disk_full
from vat_hf.redaction import redact

PathLike = Union[str, os.PathLike]


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to Python, NaN/inf to None (JSON has no NaN).

    >>> to_jsonable({"a": np.float32(0.5), "b": [np.nan, np.int64(2)], "c": np.arange(2)})
    {'a': 0.5, 'b': [None, 2], 'c': [0, 1]}
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it
    would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``:
    readers see the old file or the whole new one, never a part."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(path, err) from err
        raise
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); the result gets a plain file's mode, as open() gives.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, Exception) and not isinstance(err, VatHfError) and is_disk_full(err):
            raise disk_full(path, err) from err
        raise
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`), fsynced before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


_RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths in one step (Linux >= 3.15)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` atomically; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0
    return ok


def atomic_write_dir(path: PathLike, build: Callable[[Path], Any]) -> Path:
    """Build a directory with ``build(tmp_dir)`` beside ``path``, then put it in place of ``path``.

    The old directory is never deleted first: where Linux can swap two paths in one step
    (``renameat2(RENAME_EXCHANGE)``), readers see the whole old directory or the whole new one;
    elsewhere the old one is renamed aside, the new one renamed in, and only then is the old one
    removed, so an interruption leaves either directory whole (at worst under the aside name,
    ``.<name>.old-<pid>``, beside it). A failed ``build`` leaves ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700, as mkdir would have made it
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, VatHfError) and is_disk_full(err):
            raise disk_full(path, err) from err
        raise
    if not path.exists():
        os.replace(tmp, path)
        return path
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
        return path
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, aside)
    os.replace(tmp, path)
    shutil.rmtree(aside, ignore_errors=True)
    return path


def write_json(path: PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON, atomically, without secrets (:func:`vat_hf.redaction.redact`)."""
    return atomic_write_text(path, json.dumps(redact(to_jsonable(obj)), indent=2, ensure_ascii=False) + "\n")


def read_json(path: PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: PathLike, records: Iterable[Mapping]) -> Path:
    """One JSON line per record, atomically, without secrets (:func:`vat_hf.redaction.redact`)."""
    lines = [json.dumps(redact(to_jsonable(r)), ensure_ascii=False) for r in records]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def iter_jsonl(path: PathLike) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg}); the line starts {line[:60]!r}") from None


def read_jsonl(path: PathLike) -> List[dict]:
    return list(iter_jsonl(path))


# ---------------------------------------------------------------------------------------------
# One process per folder

LOCK_FILE = ".vat-hf.lock"
LOCK_OWNER_FILE = ".vat-hf.lock.owner.json"


def _owner_text(folder: Path) -> str:
    for _ in range(20):  # the holder writes its note just after taking the lock
        try:
            owner = json.loads((folder / LOCK_OWNER_FILE).read_text(encoding="utf-8"))
            return (f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}: "
                    f"{owner.get('command')}")
        except (OSError, ValueError, AttributeError):
            time.sleep(0.1)
    return "it has not recorded which it is"


@contextlib.contextmanager
def folder_lock(folder: PathLike, what: str = "output folder"):
    """Hold an exclusive lock on ``folder`` (created if needed) for the ``with`` block, or fail
    at once with :class:`vat_hf.errors.InUseError` naming the process that holds it (pid, host,
    start time, command, from ``.vat-hf.lock.owner.json``).

    The lock is ``filelock``'s (``flock`` on ``.vat-hf.lock``): the system drops it when its
    process ends however it ends, ``kill -9`` included, so a lock is never left stale. Another
    process's lock on the same folder is refused, and so is a second lock from the same process
    (a nested ``folder_lock`` on one folder is a bug).
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_FILE), is_singleton=False, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InUseError(f"{what} {folder} is in use by another vat-hf process ({_owner_text(folder)})",
                         fix=f"wait for that process to finish (or stop it), or use another {what}") from None
    try:
        try:
            atomic_write_text(folder / LOCK_OWNER_FILE, json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        except OSError:
            pass  # the lock holds without its note (a full disk, say); the run's own writes will report it
        yield folder
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_OWNER_FILE)
        lock.release()
        if created:  # a run that stopped before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink(missing_ok=True)
                folder.rmdir()  # only when empty
