"""``blobwatch serve``: the review web app (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import os

from blobwatch.cli.monitor import add_location_options, locations
from blobwatch.errors import BlobwatchError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="the review web app (Today, review queue, blob map, history, JSON API)",
        description=(
            "Serve the review web app on top of the monitor's database. It binds to 127.0.0.1 "
            "by default; on any other address, confirm and reject need the write token from "
            "$BLOBWATCH_TOKEN, and the server refuses to start without one. It answers only "
            "requests whose Host header is a loopback name, the --host address or an "
            "--allowed-host name (400 to any other: a defence against DNS rebinding)."
        ),
    )
    add_location_options(parser)
    parser.add_argument(
        "--images", metavar="DIR", help="where to find blob images that moved since they were processed"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument(
        "--allowed-host",
        metavar="NAME",
        action="append",
        default=[],
        help="a host name the app answers to besides the loopback names and the "
        "--host address, e.g. the machine's name (repeatable)",
    )
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Start the app with uvicorn; refuse a non-loopback host without a write token."""
    from blobwatch.web.security import TOKEN_ENV, allowed_host_name, is_loopback

    token = os.environ.get(TOKEN_ENV) or None
    exposed = not is_loopback(args.host)
    if exposed and not token:
        raise BlobwatchError(
            f"--host {args.host} is reachable from other machines: set {TOKEN_ENV} to a secret "
            "write token first (confirm and reject will require it)"
        )
    if not 0 < args.port < 65536:
        raise BlobwatchError(f"--port {args.port} is not a valid port")
    for name in args.allowed_host:
        try:
            allowed_host_name(name)
        except ValueError as exc:
            raise BlobwatchError(f"--allowed-host {exc}") from None
    # a specific address is a name the app answers to; a wildcard (0.0.0.0, ::) is not
    hosts = [*args.allowed_host, *([args.host] if args.host not in ("0.0.0.0", "::") else [])]

    import uvicorn

    from blobwatch.cli.monitor import database_errors
    from blobwatch.monitor.db import redact_url
    from blobwatch.web.app import create_app

    url, reports = locations(args)
    with database_errors(url):
        app = create_app(
            url, reports, token=token, require_token=exposed, images_dir=args.images, allowed_hosts=hosts
        )
    print(
        f"blobwatch: serving {redact_url(url)} at http://{args.host}:{args.port}/ "
        f"({'write token required' if exposed else 'loopback only'})",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", log_config=None)  # our log format
    return 0
