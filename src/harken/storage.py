"""Where harken's files live: written atomically on local disk, read from local disk or object storage.

Checkpoints, manifests, reports, plots and synthesised audio all go through ``atomic_write``: the data is
written to a temporary file in the same folder, flushed to disk, and renamed over the target.

Manifests and the audio (or tar shards) they list may also be URLs that fsspec reads: ``s3://`` (with
``s3fs``), ``gs://`` (``gcsfs``), ``az://`` (``adlfs``), ``http(s)://`` (``aiohttp``) and others. pathlib
turns ``s3://bucket/key`` into ``s3:/bucket/key``, so a path keeps its URL that way through harken and
``remote_url`` gives it back. Credentials and endpoints come from each library's usual settings (for S3:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``, and ``FSSPEC_S3_ENDPOINT_URL`` for another
S3 service).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/+(.*)$")  # a scheme of two letters or more: not C:/


class RemoteError(OSError):
    """An object that cannot be read; one line naming its URL."""


def remote_url(path: str | Path) -> str | None:
    """The URL ``path`` names (``s3://bucket/key``, also when pathlib made it ``s3:/bucket/key``), or None
    for a local path."""
    match = _URL.match(str(path))
    if match is None:
        return None
    scheme, rest = match.groups()
    return f"file:///{rest}" if scheme.lower() == "file" else f"{scheme}://{rest}"


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:  # no library for the scheme, or an unknown scheme
        raise RemoteError(f"{url}: {error}") from None


@contextmanager
def _asking(url: str) -> Iterator[None]:
    """Storage libraries' own errors as one-line RemoteErrors naming ``url``."""
    try:
        yield
    except FileNotFoundError:
        raise RemoteError(f"{url}: no such object") from None
    except RemoteError:
        raise
    except Exception as error:  # each storage library raises its own types
        text = str(error).strip()
        raise RemoteError(f"{url}: {type(error).__name__}: {text.splitlines()[0] if text else ''}") from None


def read_remote(url: str, start: int | None = None, end: int | None = None) -> bytes:
    """The bytes of the object at ``url`` (``start``:``end`` only: one ranged request)."""
    filesystem, path = _filesystem(url)
    with _asking(url):
        data = filesystem.cat_file(path, start=start, end=end)
    if start is not None and end is not None and len(data) != end - start:
        raise RemoteError(
            f"{url}: asked for bytes {start}-{end}, got {len(data):,} (a server that ignores Range requests)"
        )
    return bytes(data)


def remote_size(url: str) -> int:
    filesystem, path = _filesystem(url)
    with _asking(url):
        return int(filesystem.size(path))


def open_remote(url: str, unbuffered: bool = False) -> IO[bytes]:
    """The object at ``url`` as a seekable binary file: each read a ranged request, buffered in blocks
    (``unbuffered``: exactly what is read is fetched, for scattered small reads)."""
    filesystem, path = _filesystem(url)
    options: dict[str, Any] = {"cache_type": "none"} if unbuffered else {"block_size": 1 << 20}
    with _asking(url):
        return filesystem.open(path, "rb", **options)


def remote_exists(url: str) -> bool:
    """Whether the object is there; RemoteError when the storage cannot be asked (credentials, network)."""
    filesystem, path = _filesystem(url)
    with _asking(url):
        try:
            return bool(filesystem.isfile(path))
        except FileNotFoundError:
            return False


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: setting it later would race with other threads' files


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
