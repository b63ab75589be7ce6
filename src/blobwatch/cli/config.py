"""``blobwatch config show``: every setting, its value and where it came from."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``config`` command."""
    from blobwatch.config import OPTIONS

    cfg = subparsers.add_parser(
        "config",
        help="show the settings every command uses and where they come from",
        description="The settings the commands use (database, reports folder, base "
        "URL, notification URLs, thresholds, model).",
    )
    sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    show = sub.add_parser(
        "show",
        help="print each setting, its value and its source",
        description="Print each setting with its value and where it comes from: the command-line option "
        "given here, else its environment variable, else the config file (--config, "
        "$BLOBWATCH_CONFIG or ./blobwatch.toml), else the default. Passwords and URL "
        "secrets are hidden.",
    )
    for option in OPTIONS:  # the same options as the commands, to see what a command line would use
        show.add_argument(
            option.flag,
            dest=option.key,
            metavar="VALUE",
            default=None,
            action="append" if option.key == "notify" else "store",
            help=option.help,
        )
    show.set_defaults(func=show_config)
    cfg.set_defaults(func=lambda args: (cfg.print_help(), 2)[1])


def show_config(args: argparse.Namespace) -> int:
    """Handle ``blobwatch config show``."""
    from blobwatch.config import OPTIONS, config_file, resolve
    from blobwatch.monitor.db import redact_url
    from blobwatch.monitor.notify import redact_notify_url

    path = config_file(args.config)
    settings = resolve({o.key: getattr(args, o.key) for o in OPTIONS}, config=args.config)
    print(f"config file: {path if path else 'none (no --config, $BLOBWATCH_CONFIG or ./blobwatch.toml)'}")
    for key, setting in settings.items():
        value = setting.value
        if key == "db":
            value = redact_url(value)
        elif key == "notify":
            value = ", ".join(redact_notify_url(u) for u in value) or "none"
        elif value is None:
            value = "none"
        print(f"{key:<15} {value}  ({setting.source})")
    return 0
