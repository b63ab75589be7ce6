"""Atomic file writes: a crash never leaves a half-written output file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from blobwatch.names import bounded_name

#: Longest part of the final file name kept in a temporary file's name (bytes).
_TMP_NAME_BYTES = 100


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic.
    On an exception the temporary file is removed and ``path`` is left untouched.  An
    `OSError` creating or replacing the file names ``path`` (not the temporary file).
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{bounded_name(final.name, _TMP_NAME_BYTES)}."  # within the 255-byte name limit
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise _about(exc, final) from None
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared and served
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, final)
        except OSError as exc:
            raise _about(exc, final) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _about(exc: OSError, final: Path) -> OSError:
    """The same error, naming the output the user asked for rather than the temporary file."""
    return type(exc)(exc.errno, f"cannot write the file ({exc.strerror or exc})", str(final))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
