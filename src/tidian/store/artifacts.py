"""Artifacts by URL: where a run's weights and files live, local or remote, through fsspec.

The artifacts location is a local folder (the default, ``tidian-runs/`` beside a SQLite
ledger), a shared filesystem path, or any URL fsspec knows: ``s3://bucket/prefix`` (with the
``s3`` extra; endpoint and keys from the usual AWS variables or ``FSSPEC_S3_ENDPOINT_URL``),
``gs://…``, ``memory://…`` (tests). Every node of a cluster must see the same location.

An artifact is a *folder* (a seed's model: weights, spec, ONNX files, reports). Writing one is
all-or-nothing (:func:`writing`): the writer fills a fresh local temporary folder, then commits
it — a rename on a local filesystem; on a remote one, an upload followed by a ``.complete``
marker that names the attempt, written last. Readers (:func:`local`) use a folder only once it
is committed; a remote folder is downloaded once per committed attempt into a local cache, so
everything that reads models (torch, ONNX Runtime) works on local files.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tidian.exceptions import DataError, require
from tidian.store.processes import process_alive

MARKER = ".complete"


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL of a filesystem other than the local one."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def _plain(location: str | os.PathLike) -> str:
    text = str(location)
    return text[len("file://") :] if text.startswith("file://") else text


def join(base: str | os.PathLike, *parts: str) -> str | Path:
    """``base/part/...``: a Path for a local location, a URL string for a remote one."""
    if not is_remote(base):
        return Path(_plain(base), *parts)
    return "/".join([str(base).rstrip("/"), *parts])


def filesystem(location: str | os.PathLike) -> tuple[Any, str]:
    """The fsspec filesystem of ``location`` and its path there."""
    import fsspec

    text = str(location)
    if text.startswith("s3://"):
        require("s3fs", "s3", "artifacts on s3://")
    try:
        return fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as err:
        raise DataError(
            f"cannot use the artifacts location {text!r}: {err}. Give a folder, or a URL of a "
            "filesystem fsspec knows (s3://… needs `pip install 'tidian[s3]'`)."
        ) from None


def exists(location: str | os.PathLike) -> bool:
    """Whether a file or folder exists at ``location`` (a remote folder: once committed)."""
    if not is_remote(location):
        return Path(_plain(location)).exists()
    fs, path = filesystem(location)
    return bool(fs.exists(path))


def makedirs(location: str | os.PathLike) -> None:
    """Make the folder ``location`` (a no-op on object stores, which have no folders)."""
    if not is_remote(location):
        Path(_plain(location)).mkdir(parents=True, exist_ok=True)
        return
    fs, path = filesystem(location)
    fs.makedirs(path, exist_ok=True)


def write_text(location: str | os.PathLike, text: str) -> None:
    """One small file, written whole."""
    if not is_remote(location):
        Path(_plain(location)).write_text(text)
        return
    fs, path = filesystem(location)
    with fs.open(path, "w") as f:
        f.write(text)


def _commit_id(location: str) -> str | None:
    fs, path = filesystem(location)
    try:
        with fs.open(f"{path.rstrip('/')}/{MARKER}", "r") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def committed(location: str | os.PathLike) -> bool:
    """Whether the artifact folder at ``location`` is complete (written by :func:`writing`)."""
    if not is_remote(location):
        return Path(_plain(location)).is_dir()
    return _commit_id(str(location)) is not None


def cache_root() -> Path:
    """Where remote artifacts are downloaded: ``$TIDIAN_ARTIFACT_CACHE``, else the user's
    cache folder."""
    explicit = os.environ.get("TIDIAN_ARTIFACT_CACHE")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_cache_dir("tidian")) / "artifacts"


def local(location: str | os.PathLike) -> Path:
    """A local folder holding the artifact at ``location``: the folder itself when local;
    for a remote one, a cached download of its committed attempt (downloaded once). Raises
    DataError when a remote artifact is missing or not committed."""
    if not is_remote(location):
        return Path(_plain(location))
    url = str(location).rstrip("/")
    commit = _commit_id(url)
    if commit is None:
        raise DataError(
            f"no complete artifact at {url!r} (it was never written, or its writer stopped "
            "before committing it); resume the run that makes it."
        )
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    target = cache_root() / key / commit
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{commit}.", dir=target.parent))
    try:
        fs, path = filesystem(url)
        fs.get(f"{path}/", f"{tmp}/", recursive=True)
        with contextlib.suppress(FileNotFoundError):
            (tmp / MARKER).unlink()
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(target)
        except OSError:  # another process downloaded it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextlib.contextmanager
def writing(location: str | os.PathLike) -> Iterator[Path]:
    """A new, empty local folder to fill; when the block ends without error it becomes the
    artifact at ``location`` (replacing what was there), and when it fails it is removed.

    Each call has its own temporary name, so two attempts at one artifact never share one.
    Local: the folder is made beside ``location`` and renamed into place. Remote: it is made
    in the temporary directory, uploaded, and committed by a marker naming this attempt,
    written last — a reader never takes a half-written artifact for a whole one."""
    attempt = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if not is_remote(location):
        target = Path(_plain(location))
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(target)
        tmp = target.parent / f".{target.name}.{attempt}.tmp"
        tmp.mkdir()  # (not mkdtemp: its 0700 mode would outlive the rename)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        swap(tmp, target)
        return
    tmp = Path(tempfile.mkdtemp(prefix="tidian-artifact-"))
    try:
        yield tmp
        fs, path = filesystem(location)
        path = path.rstrip("/")
        if fs.exists(f"{path}/{MARKER}"):
            fs.rm_file(f"{path}/{MARKER}")  # the previous attempt stops counting first
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.put(f"{tmp}/", f"{path}/", recursive=True)
        with fs.open(f"{path}/{MARKER}", "w") as f:
            f.write(attempt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap(new: Path, target: Path) -> None:
    """Put the local folder ``new`` at ``target`` in one step: a reader sees the old folder
    whole or the new one whole, never a mix. An old folder at ``target`` is removed.

    Linux exchanges the two names atomically (renameat2 with RENAME_EXCHANGE, which Python's
    os module does not expose); elsewhere, or on a filesystem without it, the old folder is
    renamed aside first, leaving a moment with no folder at ``target`` (never a mixed one)."""
    if not target.exists():
        new.rename(target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now the old folder
        return
    aside = new.with_suffix(".old")  # .NAME.ATTEMPT.old
    target.rename(aside)
    new.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    libc = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc, use_errno=True), "renameat2", None) if libc else None
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def _remove_abandoned(target: Path) -> None:
    """Temporary folders beside ``target`` that a killed writer on this machine left behind
    (named ``.NAME.HOST-PID-….tmp`` / ``.old``; its process is gone)."""
    host = socket.gethostname()
    for stray in target.parent.glob(f".{glob.escape(target.name)}.{glob.escape(host)}-*"):
        pid = stray.name[len(target.name) + len(host) + 3 :].split("-", 1)[0]
        if stray.suffix in (".tmp", ".old") and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stray, ignore_errors=True)
