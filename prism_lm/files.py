"""The two file rules every writer and reader of prism-lm follows.

- A directory that prism-lm writes (a checkpoint, a prepared data set) is complete or absent: it is
  built under a temporary sibling name and renamed into place, and an existing non-empty directory
  is never overwritten (``atomic_directory``).
- Every JSON file carries a ``format`` tag; reading one checks the tag and turns a missing,
  unreadable or foreign file into a one-line ``PrismError`` (``read_tagged_json``).
- What prism-lm writes follows the user's umask (``follow_umask``): ``mkdtemp`` makes 0700
  directories and safetensors 0600 files, which would keep colleagues out of shared runs and data.
- One writer per directory (``WriterLock``): an advisory ``flock`` on a lock file that names its
  holder; the kernel releases it when the holder dies, so a stale lock is simply taken over.
- Durable before visible: what a rename publishes (a directory, a replaced JSON file) is fsynced,
  files and directories, before the rename, and the parent after it, so a power cut cannot leave a
  renamed-in checkpoint with empty files, nor a prune delete the last durable one.
- A failed write (disk full, quota, permissions) is a ``PrismError`` naming the file (``disk_errors``):
  the OS error of a write on an open file carries no path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from prism_lm.errors import PrismError, warn


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(root: Path) -> None:
    """chmod ``root`` and everything below it to what the umask allows (dirs 777, files 666)."""
    mask = umask()
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def file_digest(path: Path) -> dict[str, Any]:
    """{"bytes", "sha256"} of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def fsync_path(path: Path) -> None:
    """fsync one file or directory (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems (old NFS, some FUSE) cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every directory, deepest first."""
    root = Path(root)
    dirs = [root]
    for path in root.rglob("*"):
        if path.is_dir():
            dirs.append(path)
        elif path.is_file():
            fsync_path(path)
    for directory in reversed(dirs):
        fsync_path(directory)


@contextlib.contextmanager
def disk_errors(what: str, path: str | Path, hint: str = ""):
    """Turn an OSError raised inside into a one-line ``PrismError`` naming ``what`` and ``path``."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc).strip().splitlines()[0] or type(exc).__name__
        raise PrismError(f"could not write {what} {path} ({reason}){'; ' + hint if hint else ''}") from None


def clean_temporaries(parent: Path, name: str) -> list[Path]:
    """Remove ``parent/.NAME.tmp-*`` left by a killed writer (call it holding the writer lock)."""
    removed = sorted(parent.glob(f".{name}.tmp-*")) if parent.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


class atomic_directory:  # noqa: N801 (used as a function: ``with atomic_directory(target) as tmp``)
    """Context manager: yields a temporary directory next to ``target``, renamed to it on success."""

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        if self.target.exists() and not self.target.is_dir():
            raise PrismError(f"{self.target} exists and is a file, not a directory")
        if self.target.exists() and any(self.target.iterdir()):
            raise PrismError(f"refusing to overwrite non-empty {self.target}")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            follow_umask(self.tmp)
            fsync_tree(self.tmp)
            if self.target.exists():  # an empty directory may stand in the way
                self.target.rmdir()
            os.replace(self.tmp, self.target)
        except OSError as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise PrismError(f"could not write {self.target} ({exc.strerror or exc}); nothing was written there") \
                from None
        fsync_path(self.target.parent)


def read_tagged_json(path: Path, fmt: str, what: str, missing: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``format`` is ``fmt``; ``what`` names it in errors.

    ``missing`` replaces the message for an absent file (say, which command makes one).
    """
    path = Path(path)
    if not path.is_file():
        raise PrismError(missing or f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PrismError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise PrismError(f"{path} is not {what} (expected format {fmt!r})")
    return data


def write_json(path: Path, data: dict[str, Any], indent: int | None = 2) -> None:
    path.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")


def replace_json(path: Path, data: dict[str, Any], fmt: str) -> None:
    """Write ``{"format": fmt, **data}`` to ``path`` atomically: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"format": fmt, **data}, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


class WriterLock:
    """Context manager: hold ``path`` (a lock file) exclusively, or raise PrismError naming the holder.

    The file names its holder while held and is removed on release; one still there with a holder
    in it was left by a process that died (the kernel released its flock), and is taken over.
    ``wait`` seconds > 0: wait that long for a holder to finish before refusing (a sweep job whose
    previous process is still saving its checkpoint after the sweep that started it was killed).
    """

    def __init__(self, path: Path, what: str, wait: float = 0.0):
        self.path, self.what, self.wait = Path(path), what, wait
        self.file = None

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline, said = time.monotonic() + self.wait, False
        while True:
            self.file = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.file.seek(0)
                holder = self.file.read().strip() or "another process"
                self.file.close()
                if time.monotonic() < deadline:
                    if not said:
                        warn(f"{self.what} is in use by {holder}; waiting up to {self.wait:.0f} s for it to finish")
                        said = True
                    time.sleep(0.2)
                    continue
                raise PrismError(f"{self.what} is in use by {holder}; wait for it to finish or use another one") \
                    from None
            try:  # the file we locked may have been removed by a holder releasing it meanwhile
                if os.stat(self.path).st_ino == os.fstat(self.file.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            self.file.close()
        self.file.seek(0)
        previous = self.file.read().strip()
        if previous:
            warn(f"taking over the lock on {self.what} left by {previous}, which is no longer running")
        try:
            with disk_errors("the lock file", self.path):
                self.file.seek(0)
                self.file.truncate()
                self.file.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                                f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
                self.file.flush()
        except PrismError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)  # before unlocking: a waiting opener then re-checks the inode
        fcntl.flock(self.file, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):  # a holder line that could not be written is not flushed again
            self.file.close()
