"""File names are data: derive bounded path components from them."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

__all__ = ["bounded_name", "header_name", "one_line"]

#: Printable ASCII (what a FITS header value may hold) except ``%``, kept as is by `header_name`.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
#: Hex digits of the SHA-256 appended to a shortened name (after a ``-``).
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


def header_name(name: str) -> str:
    """``name`` as printable ASCII for a FITS header value, reversibly.

    Every other character (non-ASCII, newline, control) and ``%`` is percent-encoded as UTF-8
    (RFC 3986, `urllib.parse.quote`; undecodable file-name bytes as themselves), so
    ``urllib.parse.unquote(value, errors="surrogateescape")`` gives the name back.  Plain names
    are unchanged.  A long result is written by astropy on CONTINUE cards, not cut.
    """
    return quote(name, safe=_HEADER_SAFE, errors="surrogateescape")


def one_line(text: str) -> str:
    """``text`` with every unprintable character (newline, escape, ...) written as its Python
    escape (``\\n``, ``\\x1b``), so a message that names a file stays one line on a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
