"""File names are data: derive bounded path components from them."""

from __future__ import annotations

import hashlib

__all__ = ["bounded_name"]

#: Bytes of the SHA-256 hex digest appended to a shortened name (after a ``-``).
_HASH_CHARS = 12


def bounded_name(name: str, max_bytes: int) -> str:
    """``name`` if its UTF-8 form has at most ``max_bytes`` bytes, else a prefix plus a hash.

    The shortened form is the longest whole-character prefix that fits with ``-`` and the first
    12 hex digits of the SHA-256 of the full name, so two long names that differ only at the end
    stay apart.  Bytes that are not UTF-8 (a Linux file name may hold any) are dropped from the
    prefix, never from the hash.

    Parameters
    ----------
    name : str
        A file name or stem (may contain any character).
    max_bytes : int
        Largest result in UTF-8 bytes (at least 13 + 1).
    """
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= max_bytes and raw.decode("utf-8", "ignore") == name:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:_HASH_CHARS]
    head = raw[: max_bytes - _HASH_CHARS - 1].decode("utf-8", "ignore")
    return f"{head}-{digest}"
