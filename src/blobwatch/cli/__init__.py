"""The ``blobwatch`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function; heavy
imports (torch, matplotlib, astropy) happen inside the command handlers, so ``--help`` is
instant.  Errors a user can act on (`blobwatch.errors.BlobwatchError`, and `OSError` from a path
that cannot be read or written) print one line and exit 2.

Log lines go to stderr in the pipeline style (`LOG_FORMAT`); ``--config``, ``-v``, ``-q`` and
``--log-file`` are accepted before or after the subcommand.  Every command refuses a bad config
file (`blobwatch.config`).  A mistake in the arguments prints the usage of the
subcommand it was made in.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from blobwatch import __version__
from blobwatch.errors import BlobwatchError
from blobwatch.names import one_line

#: Modules under ``blobwatch.cli`` that contribute subcommands, in help order.
COMMAND_MODULES = (
    "simulate",
    "data",
    "train",
    "tune",
    "predict",
    "regress",
    "research",
    "monitor",
    "web",
    "demo",
    "config",
)


#: Log line format of the instrument team's pipelines:
#: ``2026-12-02 14:03:11,205 - blobwatch.monitor - INFO - ...``.
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def _add_common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--config``, ``-v``, ``-q`` and ``--log-file``; on a subcommand they default to "not
    given", so the same option given before the subcommand still counts."""
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $BLOBWATCH_CONFIG, or blobwatch.toml in the working "
        "folder if there is one)",
        **unset,
    )
    loud = group.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="also show debug log lines", **unset)
    loud.add_argument("-q", "--quiet", action="store_true", help="show only warnings and errors", **unset)
    group.add_argument(
        "--log-file", metavar="FILE", help="also append the log lines to FILE (e.g. for a cron job)", **unset
    )


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _every_subcommand(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    action = _subparsers(parser)
    for sub in dict.fromkeys((action.choices if action else {}).values()):
        yield sub
        yield from _every_subcommand(sub)


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (nested) subcommand parser that ``args`` came from, or ``parser`` itself."""
    action = _subparsers(parser)
    if action is None:
        return parser
    name = getattr(args, action.dest, None)
    return _chosen(action.choices[name], args) if name in action.choices else parser


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="blobwatch",
        description="Find new WFC3/IR blobs in CSM-monitor blob images.",
    )
    parser.add_argument("--version", action="version", version=f"blobwatch {__version__}")
    _add_common_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"blobwatch.cli.{name}")
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != f"blobwatch.cli.{name}":
                raise
            continue
        module.register(subparsers)
    for sub in _every_subcommand(parser):
        _add_common_options(sub, top=False)
    return parser


@contextlib.contextmanager
def logging_to(*, verbose: bool = False, quiet: bool = False, log_file: str | None = None) -> Iterator[None]:
    """Log INFO and above (``quiet``: WARNING; ``verbose``: also blobwatch's DEBUG lines) to
    stderr, and append them to ``log_file``, in `LOG_FORMAT`, for the ``with`` block.

    The handlers and levels are put back afterwards, so `main` can be called again (tests).
    """
    root, ours = logging.getLogger(), logging.getLogger("blobwatch")
    levels = root.level, ours.level
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))  # OSError: one line, exit 2
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    # debug lines of blobwatch only: those of matplotlib, apprise, ... would drown them
    ours.setLevel(logging.DEBUG if verbose else logging.NOTSET)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(levels[0])
        ours.setLevel(levels[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would blame the top level; the subcommand's usage is the useful one
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from blobwatch.config import config_file, load_config

        load_config(config_file(args.config))  # every command refuses a bad config file
        with logging_to(verbose=args.verbose, quiet=args.quiet, log_file=args.log_file):
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
