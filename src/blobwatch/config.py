"""One configuration for every command: ``blobwatch.toml``, the environment and the command line.

Each setting comes from the first of: the command-line option, its environment variable, the
config file, the default (`resolve`).  The config file is ``--config FILE``, else
``$BLOBWATCH_CONFIG``, else ``blobwatch.toml`` in the working folder (none is fine).  It holds
top-level keys (a ``[monitor]`` table, the earlier form, is read the same)::

    db = "sqlite:////data/blobwatch/blobwatch.db"
    reports = "/data/blobwatch/reports"
    base_url = "http://quicklook.example.org:8000"
    notify = ["mailtos://...", "json://quicklook.example.org/blobwatch"]
    threshold = 0.5
    references = 30
    min_references = 5
    model = "/data/blobwatch/models/blob_cnn.pt"

``blobwatch config show`` prints every setting with where it came from.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blobwatch.errors import BlobwatchError, InputError

__all__ = [
    "CONFIG_ENV",
    "CONFIG_FILE",
    "OPTIONS",
    "Option",
    "Setting",
    "config_file",
    "load_config",
    "resolve",
    "values",
]

#: Environment variable naming the config file.
CONFIG_ENV = "BLOBWATCH_CONFIG"
#: The config file looked for in the working folder.
CONFIG_FILE = "blobwatch.toml"


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):  # the environment's form: separated by spaces or commas
        value = re.split(r"[\s,]+", value)
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise ValueError("must be a list of URL strings")
    return list(dict.fromkeys(u.strip() for u in value if u.strip()))


def _probability(value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:  # also NaN
        raise ValueError("must be a number between 0 and 1")
    return number


def _detector(value: Any) -> str:
    from blobwatch.monitor.settings import DETECTORS

    if value not in DETECTORS:
        raise ValueError(f"must be one of {', '.join(DETECTORS)}")
    return str(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ValueError("must be a positive whole number")
    number = int(value)
    if number < 1:
        raise ValueError("must be a positive whole number")
    return number


def _base_url(value: Any) -> str:
    text = _text(value)
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError("must be an http:// or https:// address")
    return text.rstrip("/")


@dataclass(frozen=True)
class Option:
    """A setting: its config key, command-line option, environment variable and parser."""

    key: str
    flag: str
    env: str | None
    parse: Callable[[Any], Any]
    help: str


#: Every setting, in the order ``config show`` prints them.
OPTIONS = (
    Option("db", "--db", "BLOBWATCH_DB", _text, "SQLAlchemy database URL"),
    Option("reports", "--reports", "BLOBWATCH_REPORTS", _text, "report folder"),
    Option(
        "base_url",
        "--base-url",
        "BLOBWATCH_BASE_URL",
        _base_url,
        "review app address that notifications link to",
    ),
    Option("notify", "--notify", "BLOBWATCH_NOTIFY", _urls, "apprise notification URLs"),
    Option(
        "threshold",
        "--threshold",
        "BLOBWATCH_THRESHOLD",
        _probability,
        "probability threshold (default: the model's)",
    ),
    Option("references", "--references", None, _count, "earlier images in the median stack"),
    Option("min_references", "--min-references", None, _count, "earlier images needed to process one"),
    Option(
        "detector",
        "--detector",
        "BLOBWATCH_DETECTOR",
        _detector,
        "fcn (localizing network, default) or paper (seed CNN + matched-filter chain)",
    ),
    Option(
        "model",
        "--model",
        "BLOBWATCH_MODEL",
        _text,
        "the seed classifier's model file (default: the shipped one)",
    ),
    Option(
        "fcn_model",
        "--fcn-model",
        "BLOBWATCH_FCN_MODEL",
        _text,
        "the localizing network's model file (default: the shipped one)",
    ),
)
_BY_KEY = {o.key: o for o in OPTIONS}


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from (``--db``, ``$BLOBWATCH_DB``, the file, ``default``)."""

    value: Any
    source: str


def config_file(given: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: ``given``, ``$BLOBWATCH_CONFIG``, ``./blobwatch.toml``, or None.

    Raises
    ------
    InputError
        A file named by ``given`` or the environment does not exist.
    """
    env = os.environ if env is None else env
    for named in (given, env.get(CONFIG_ENV) or None):
        if named is not None:
            path = Path(named).expanduser()
            if not path.is_file():
                raise InputError(path, "config file not found")
            return path
    local = Path.cwd() / CONFIG_FILE
    return local if local.is_file() else None


def load_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """The checked settings of a config file (``{}`` for None).

    Raises
    ------
    InputError
        Not TOML, an unknown key or a value of the wrong kind (naming the file and the key).
    """
    if path is None:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli is the same parser (a dependency there)
        # no-redef when mypy checks for Python >= 3.11 (where tomllib exists); unused for 3.10
        import tomli as tomllib  # type: ignore[no-redef, unused-ignore]

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise InputError(path, f"not a valid TOML config file ({exc})") from None
    section = data.pop("monitor", {})
    if not isinstance(section, dict):
        raise InputError(path, "'monitor' must be a table")
    values = {**section, **data}
    checked = {}
    for key, value in values.items():
        if key not in _BY_KEY:
            raise InputError(path, f"unknown key {key!r} (known: {', '.join(_BY_KEY)})")
        try:
            checked[key] = _BY_KEY[key].parse(value)
        except (ValueError, TypeError) as exc:
            raise InputError(path, f"{key} = {value!r}: {exc}") from None
    return checked


def _parsed(option: Option, value: Any, where: str) -> Any:
    try:
        return option.parse(value)
    except (ValueError, TypeError) as exc:
        raise BlobwatchError(f"{where}: {exc}") from None


def resolve(
    cli: Mapping[str, Any], *, config: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Setting]:
    """Every setting from the command line, the environment, the config file or the default.

    Parameters
    ----------
    cli : mapping
        The command's options by key (`OPTIONS`); None or an empty list is "not given".
    config : path-like, optional
        ``--config``; None: the usual search (`config_file`).
    env : mapping, optional
        The environment (default ``os.environ``).

    The defaults: ``reports`` ``./blobwatch-reports``, ``db`` ``sqlite:///<reports>/blobwatch.db``,
    ``references`` 30, ``min_references`` 5, ``detector`` fcn, no URLs, and None for the rest
    (the model's threshold, the shipped models, no link).

    Raises
    ------
    InputError
        A bad config file.
    BlobwatchError
        A command-line value or environment variable that does not parse.
    """
    from blobwatch.monitor.settings import DEFAULT_REPORTS, MonitorSettings

    env = os.environ if env is None else env
    path = config_file(config, env)
    from_file = load_config(path)
    defaults = MonitorSettings()
    fallback: dict[str, Any] = {
        "reports": str(Path.cwd() / DEFAULT_REPORTS),
        "notify": [],
        "references": defaults.n_references,
        "min_references": defaults.min_references,
        "detector": defaults.detector,
    }
    out: dict[str, Setting] = {}
    for option in OPTIONS:
        given = cli.get(option.key)
        if given is not None and given != []:
            out[option.key] = Setting(_parsed(option, given, f"{option.flag} {given!r}"), option.flag)
        elif option.env and env.get(option.env, "").strip():
            value = env[option.env]
            out[option.key] = Setting(_parsed(option, value, f"${option.env}={value!r}"), f"${option.env}")
        elif option.key in from_file:
            out[option.key] = Setting(from_file[option.key], str(path))
        else:
            out[option.key] = Setting(fallback.get(option.key), "default")
    if out["db"].value is None:  # the default database lies in the reports folder
        reports = Path(out["reports"].value).expanduser()
        out["db"] = Setting(f"sqlite:///{(reports / 'blobwatch.db').resolve()}", "default")
    return out


def values(
    cli: Mapping[str, Any], *, config: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`resolve` without the sources: each setting's value by key."""
    return {key: setting.value for key, setting in resolve(cli, config=config, env=env).items()}
