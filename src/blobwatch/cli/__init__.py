"""The ``blobwatch`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function; heavy
imports (torch, matplotlib, astropy) happen inside the command handlers, so ``--help`` is
instant.  Errors a user can act on (`blobwatch.errors.BlobwatchError`, and `OSError` from a path
that cannot be read or written) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from blobwatch import __version__
from blobwatch.errors import BlobwatchError
from blobwatch.names import one_line

#: Modules under ``blobwatch.cli`` that contribute subcommands, in help order.
COMMAND_MODULES = ("simulate", "data", "train", "predict", "regress", "monitor", "web", "demo")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="blobwatch",
        description="Find new WFC3/IR blobs in CSM-monitor blob images.",
    )
    parser.add_argument("--version", action="version", version=f"blobwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"blobwatch.cli.{name}")
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != f"blobwatch.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BlobwatchError as exc:
        print(f"blobwatch: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave cannot be written or read (permission, a folder...)
        logging.getLogger("blobwatch").debug("file system error", exc_info=True)
        problem = exc.strerror or str(exc)
        message = f"{exc.filename}: {problem}" if exc.filename else problem
        print(f"blobwatch: error: {one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blobwatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
