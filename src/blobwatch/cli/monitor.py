"""``blobwatch monitor INBOX``, ``blobwatch reprocess ARCHIVE`` and
``blobwatch catalog {import,confirm,reject,export,list}``.

Where things are (database, reports folder, notification URLs, base URL, thresholds, model):
the command-line option, else its environment variable, else the config file
(``blobwatch.toml``), else the default; see `blobwatch.config` and ``blobwatch config show``.
``blobwatch serve`` finds them the same way.  Only ``monitor``, ``reprocess`` and ``catalog import``
create a database that does not exist; the others name the database they looked for and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blobwatch.errors import BlobwatchError, InputError


def add_location_options(parser: argparse.ArgumentParser) -> None:
    """``--db`` and ``--reports`` (``--config`` is an option of every command)."""
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="SQLAlchemy database URL (default: $BLOBWATCH_DB, the config file, "
        "or sqlite:///REPORTS/blobwatch.db)",
    )
    parser.add_argument(
        "--reports",
        metavar="DIR",
        default=None,
        help="report folder (default: $BLOBWATCH_REPORTS, the config file, or ./blobwatch-reports)",
    )


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``monitor`` and ``reprocess``: locations, notifications, model, pipeline settings."""
    add_location_options(parser)
    parser.add_argument(
        "--notify",
        metavar="URL",
        action="append",
        default=None,
        help="apprise URL to notify, e.g. json://host:port/path, mailtos://..., slack://... "
        "(repeatable; default: $BLOBWATCH_NOTIFY or the config file)",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        default=None,
        help="address of the review app (blobwatch serve), e.g. http://host:8000: "
        "notifications link to each candidate's page there (default: "
        "$BLOBWATCH_BASE_URL or the config file's base_url)",
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        default=None,
        help="model file (default: $BLOBWATCH_MODEL, the config file, or the shipped model)",
    )
    parser.add_argument(
        "--references",
        type=int,
        default=None,
        metavar="N",
        help="preceding images in the median stack (default: the config file's, or 30)",
    )
    parser.add_argument(
        "--min-references",
        type=int,
        default=None,
        metavar="N",
        help="process an image once N earlier images exist (default: the config file's, or 5)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="candidate probability threshold of the detector (default: $BLOBWATCH_THRESHOLD, the "
        "config file, or the model's calibrated one)",
    )
    parser.add_argument(
        "--detector",
        choices=("fcn", "paper"),
        default=None,
        help="fcn: the localizing network finds the candidates (the regression suite's winner, "
        "docs/regression.md); paper: the seed's CNN with matched-filter seeds and dip tests. "
        "Default: $BLOBWATCH_DETECTOR, the config file, or fcn",
    )
    parser.add_argument(
        "--fcn-model",
        metavar="PATH",
        default=None,
        help="localizing network model file (default: $BLOBWATCH_FCN_MODEL, the config file, "
        "or the shipped one)",
    )
    parser.add_argument(
        "--no-register", action="store_true", help="plain median stack, no sub-pixel registration"
    )
    parser.add_argument(
        "--no-reference-store",
        action="store_true",
        help="do not keep the images' pixels and registration preparations in REPORTS/.reference-store "
        "(the store makes a daily run read and prepare only the new image; same results without it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``monitor``, ``reprocess`` and ``catalog`` commands."""
    mon = subparsers.add_parser(
        "monitor",
        help="the daily job: find new blob images, classify them, alert on new blobs",
        description=(
            "Register new blob images found in INBOX (searched recursively), and process every image "
            "that has enough earlier images, oldest first: difference against the preceding 30, 16 "
            "subframes classified, saliency maps, candidates localized, rows in the database, an HTML "
            "report, and one notification per image with new candidates. Exit status: 0 all fine, "
            "1 a file was rejected, an image failed or a notification could not be sent in this run "
            "(all recorded; the next run retries), 2 bad usage."
        ),
    )
    mon.add_argument("inbox", metavar="INBOX", help="folder with blob images (FITS), searched recursively")
    add_pipeline_options(mon)
    mode = mon.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="process what is there and exit (default)")
    mode.add_argument(
        "--watch",
        metavar="SECONDS",
        type=float,
        default=None,
        help="poll INBOX every SECONDS until interrupted",
    )
    mon.set_defaults(func=run_monitor_command)

    rep = subparsers.add_parser(
        "reprocess",
        help="the monitor's pipeline over a whole archive, in parallel on Dask",
        description=(
            "Register the blob images of ARCHIVE (searched recursively) and process every image that has "
            "enough earlier images, as `blobwatch monitor` would, with the same results: differences, "
            "detection and saliency run on Dask workers in parallel, while candidates are sorted against "
            "earlier ones and recorded one image after the other in date order. Each image is committed "
            "on its own, so a rerun after an interruption finishes the rest. Needs the 'distributed' "
            "extra (pip install 'blobwatch[distributed]'). Exit status as for `blobwatch monitor`."
        ),
    )
    rep.add_argument(
        "archive", metavar="ARCHIVE", help="folder with blob images (FITS), searched recursively"
    )
    add_pipeline_options(rep)
    where = rep.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the local Dask cluster (default: one per core)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="use a running Dask scheduler, e.g. tcp://HOST:8786 (its workers must see "
        "ARCHIVE and the model at the same paths)",
    )
    rep.set_defaults(func=run_reprocess_command)

    cat = subparsers.add_parser(
        "catalog",
        help="the catalog of known blobs: import, confirm or reject candidates, export, list",
        description="Manage the catalog of known blobs and review the monitor's candidates.",
    )
    sub = cat.add_subparsers(dest="catalog_command", metavar="ACTION")

    imp = sub.add_parser(
        "import",
        help="add blobs from an ECSV file (x, y, radius[, depth]) or simulator truth",
        description="Add blobs from an ECSV table with columns x, y, radius (0-based pixels) and "
        "optionally depth, label, first_seen_mjd; or from the simulator's "
        "truth_blobs.ecsv, of which only blobs existing before day 0 are imported "
        "(see --include-from-day). Blobs already in the catalog are skipped.",
    )
    imp.add_argument("file", metavar="ECSV")
    add_location_options(imp)
    imp.add_argument(
        "--include-from-day",
        type=int,
        default=None,
        metavar="DAY",
        help="simulator truth: also import blobs that appear before DAY",
    )
    imp.set_defaults(func=run_catalog_import)

    conf = sub.add_parser(
        "confirm",
        help="confirm a candidate: measure it and add it to the catalog",
        description="Measure a candidate and add it to the catalog as a new blob. A "
        "candidate that shows a blob already in the catalog (the blob its "
        "linked candidate became, or one within 1.5 px) is refused; record "
        "it as that blob with --same-as BLOB.",
    )
    conf.add_argument("candidate", type=int, metavar="CANDIDATE", help="candidate id")
    add_location_options(conf)
    conf.add_argument(
        "--same-as",
        type=int,
        default=None,
        metavar="BLOB",
        help="the candidate is catalog blob BLOB seen again: record it so, add nothing",
    )
    conf.add_argument("--reviewer", default=None, help="your name (default: the login name)")
    conf.add_argument(
        "--images-dir",
        default=None,
        metavar="DIR",
        help="where the image and its references are if they moved since the run",
    )
    conf.set_defaults(func=run_catalog_confirm)

    rej = sub.add_parser("reject", help="record a candidate as a false alarm, with a reason")
    rej.add_argument("candidate", type=int, metavar="CANDIDATE", help="candidate id")
    add_location_options(rej)
    rej.add_argument("--reason", required=True, help="why it is not a blob (e.g. 'dip of blob 12')")
    rej.add_argument("--reviewer", default=None, help="your name (default: the login name)")
    rej.set_defaults(func=run_catalog_reject)

    exp = sub.add_parser(
        "export",
        help="write the catalog as ECSV plus DQ mask FITS (1024 and 1014), "
        "as a DS9 region file or as a bad-pixel table",
        description="--format ecsv (default): write OUT (ECSV) and OUT_STEM_mask1024.fits / "
        "_mask1014.fits: DQ extension with flag 512 on every pixel within a "
        "blob's radius. --format reg: OUT is a DS9 region file (image frame, "
        "one circle per blob). --format bpixtab: OUT is a FITS bad-pixel "
        "table like WFC3/IR's (PIX1, PIX2, LENGTH, AXIS, VALUE; one row per "
        "run of blob pixels in an image row).",
    )
    exp.add_argument("output", metavar="OUT")
    exp.add_argument(
        "--format",
        choices=("ecsv", "reg", "bpixtab"),
        default="ecsv",
        help="what to write (default: %(default)s)",
    )
    add_location_options(exp)
    exp.set_defaults(func=run_catalog_export)

    lst = sub.add_parser("list", help="list candidates (default: those awaiting review) or the blobs")
    add_location_options(lst)
    lst.add_argument(
        "--status",
        default="new",
        help="candidate status to list: new, confirmed, rejected, known, linked or all (default new)",
    )
    lst.add_argument("--blobs", action="store_true", help="list the catalog's blobs instead")
    lst.set_defaults(func=run_catalog_list)
    cat.set_defaults(func=lambda args: (cat.print_help(), 2)[1])


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def settings(args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """A command's settings (`blobwatch.config.values`) from its ``--db`` and ``--reports`` and
    the other ``options`` given on its command line."""
    from blobwatch.config import values

    return values({"db": args.db, "reports": args.reports, **options}, config=args.config)


def locations(args: argparse.Namespace) -> tuple[str, Path]:
    """The (database URL, reports folder) of a command."""
    found = settings(args)
    return str(found["db"]), Path(found["reports"]).expanduser()


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a bad ``--db`` URL (syntax, unreachable, driver not installed) into one line."""
    from sqlalchemy.exc import ArgumentError, DatabaseError

    from blobwatch.monitor.db import redact_url

    try:
        yield
    except ArgumentError as exc:
        raise BlobwatchError(f"--db {redact_url(url)}: not a database URL ({exc})") from None
    except DatabaseError as exc:  # unreachable server, a file that is not a database, ...
        raise BlobwatchError(f"--db {redact_url(url)}: cannot open the database ({exc.orig})") from None
    except ImportError as exc:
        raise BlobwatchError(f"--db {redact_url(url)}: database driver not installed ({exc})") from None


def _open(url: str, *, create: bool = False) -> Any:
    """Open the database at ``url``; only ``create`` makes one that does not exist yet."""
    from blobwatch.monitor.db import open_database

    with database_errors(url):
        return open_database(url, create=create)


def _reviewer(args: argparse.Namespace) -> str:
    if args.reviewer:
        return args.reviewer
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers)
        return "unknown"


def _refresh_pages(session: Any, reports: Path) -> None:
    """Rewrite the index and blob-map pages after a review decision (if there are reports)."""
    from blobwatch.monitor.report import write_blobmap, write_index

    if reports.exists():
        write_index(session, reports)
        write_blobmap(session, reports)


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------


def _pipeline_run(args: argparse.Namespace, inbox_arg: str, what: str = "inbox") -> dict[str, Any]:
    """Check the pipeline options of ``monitor`` or ``reprocess`` and resolve them through the
    config (`settings`); the keyword arguments of the run.

    Raises
    ------
    BlobwatchError
        A bad option, inbox, model, notification URL or database (one line, exit 2).
    """
    from blobwatch.monitor.notify import validate_notify_urls
    from blobwatch.monitor.runner import MonitorSettings

    inbox = Path(inbox_arg)
    if not inbox.exists():
        raise InputError(inbox, f"{what} folder not found")
    found = settings(
        args,
        notify=args.notify,
        base_url=args.base_url,
        threshold=args.threshold,
        references=args.references,
        min_references=args.min_references,
        model=args.model,
        detector=args.detector,
        fcn_model=args.fcn_model,
    )
    url, reports = str(found["db"]), Path(found["reports"]).expanduser()
    if not found["min_references"] <= found["references"]:
        raise BlobwatchError(
            f"--min-references {found['min_references']} must be between 1 and "
            f"--references {found['references']}"
        )
    model = found["model"]
    for path in (model, found["fcn_model"]):
        if path is not None and not Path(path).is_file():
            raise InputError(path, "model file not found")
    urls = found["notify"]
    validate_notify_urls(urls)
    monitor_settings = MonitorSettings(
        n_references=found["references"],
        min_references=found["min_references"],
        register=not args.no_register,
        threshold=found["threshold"],
        detector=found["detector"],
        fcn_model=found["fcn_model"],
        base_url=found["base_url"],
        reference_store=not getattr(args, "no_reference_store", False),
    )
    return dict(
        db=_open(url, create=True),
        reports=reports,
        notify=urls,
        settings=monitor_settings,
        model=model,
        progress=False if args.no_progress else None,
    )


def _print_summary(summary: Any, urls: list[str]) -> None:
    """The closing lines of ``monitor`` and ``reprocess``."""
    alerts = [o for o in summary.processed if o.alert]
    print(
        f"{len(summary.processed)} processed, {len(alerts)} with new blobs, "
        f"{len(summary.rejected)} rejected, {len(summary.failed)} failed, "
        f"{sum(d.ok for d in summary.deliveries)}/{len(summary.deliveries)} notifications sent "
        f"in {summary.seconds:.1f}s; index: {summary.index}"
    )
    if not urls and alerts:
        print(
            "no notification URL configured (--notify, $BLOBWATCH_NOTIFY or notify in blobwatch.toml): alerts "
            "are only in the database and the reports",
            file=sys.stderr,
        )


def run_monitor_command(args: argparse.Namespace) -> int:
    """Handle ``blobwatch monitor``."""
    from blobwatch.monitor.runner import run_monitor, watch

    if args.watch is not None and not args.watch > 0:
        raise BlobwatchError(f"--watch {args.watch:g} must be a positive number of seconds")
    kwargs = _pipeline_run(args, args.inbox)
    if args.watch is not None:
        print(
            f"watching {args.inbox} every {args.watch:g} s (Ctrl-C to stop); reports in {kwargs['reports']}",
            flush=True,
        )
        watch(args.inbox, args.watch, **kwargs)
        return 0  # pragma: no cover - watch returns only by KeyboardInterrupt
    summary = run_monitor(args.inbox, **kwargs)
    _print_summary(summary, kwargs["notify"])
    return summary.exit_code


def run_reprocess_command(args: argparse.Namespace) -> int:
    """Handle ``blobwatch reprocess``."""
    if args.workers is not None and args.workers < 1:
        raise BlobwatchError(f"--workers {args.workers} must be at least 1")
    try:
        from blobwatch.monitor.reprocess import reprocess
    except ImportError as exc:
        raise BlobwatchError(f"reprocess needs Dask: pip install 'blobwatch[distributed]' ({exc})") from None
    if not args.verbose:  # Dask's cluster start and stop messages
        logging.getLogger("distributed").setLevel(logging.WARNING)
    kwargs = _pipeline_run(args, args.archive, "archive")
    summary = reprocess(args.archive, workers=args.workers, scheduler=args.scheduler, **kwargs)
    _print_summary(summary, kwargs["notify"])
    return summary.exit_code


def run_catalog_import(args: argparse.Namespace) -> int:
    """Handle ``blobwatch catalog import``."""
    from sqlalchemy import func, select

    from blobwatch.monitor.catalog import import_catalog
    from blobwatch.monitor.db import Blob

    url, _ = locations(args)
    session_factory = _open(url, create=True)
    with session_factory() as session:
        result = import_catalog(session, args.file, include_from_day=args.include_from_day)
        total = session.scalar(select(func.count()).select_from(Blob))
    print(
        f"imported {len(result.added)} blobs ({result.source}) from {args.file}; "
        f"{result.skipped} already in the catalog; {total} known blobs"
    )
    return 0


def run_catalog_confirm(args: argparse.Namespace) -> int:
    """Handle ``blobwatch catalog confirm``."""
    from blobwatch.monitor.catalog import confirm_candidate

    url, reports = locations(args)
    session_factory = _open(url)
    with session_factory() as session:
        blob = confirm_candidate(
            session,
            args.candidate,
            reviewer=_reviewer(args),
            images_dir=args.images_dir,
            same_as=args.same_as,
        )
        _refresh_pages(session, reports)
    if args.same_as is not None:
        print(f"candidate {args.candidate} recorded as catalog blob {blob.id} seen again; nothing added")
        return 0
    print(
        f"candidate {args.candidate} confirmed as blob {blob.id}: x={blob.x:.2f} y={blob.y:.2f} "
        f"(DS9 {blob.x + 1:.2f}, {blob.y + 1:.2f}) radius {blob.radius:.1f} px depth "
        + (f"{100 * blob.depth:.1f}%" if blob.depth is not None else "not measured")
    )
    return 0


def run_catalog_reject(args: argparse.Namespace) -> int:
    """Handle ``blobwatch catalog reject``."""
    from blobwatch.monitor.catalog import reject_candidate

    url, reports = locations(args)
    session_factory = _open(url)
    with session_factory() as session:
        candidate = reject_candidate(session, args.candidate, reason=args.reason, reviewer=_reviewer(args))
        _refresh_pages(session, reports)
    print(f"candidate {candidate.id} rejected: {candidate.reason}")
    return 0


def run_catalog_export(args: argparse.Namespace) -> int:
    """Handle ``blobwatch catalog export``."""
    from blobwatch.monitor.catalog import export_bpixtab, export_catalog

    url, _ = locations(args)
    session_factory = _open(url)
    with session_factory() as session:
        if args.format == "reg":
            from sqlalchemy import select

            from blobwatch.atomic import write_text_atomic
            from blobwatch.interchange import catalog_regions_text
            from blobwatch.monitor.db import Blob

            write_text_atomic(
                args.output, catalog_regions_text(list(session.scalars(select(Blob).order_by(Blob.id))))
            )
            written = [Path(args.output)]
        elif args.format == "bpixtab":
            written = [export_bpixtab(session, args.output)]
        else:
            written = export_catalog(session, args.output)
    for path in written:
        print(path)
    return 0


def run_catalog_list(args: argparse.Namespace) -> int:
    """Handle ``blobwatch catalog list``."""
    from sqlalchemy import select

    from blobwatch.monitor.db import CANDIDATE_STATUSES, Blob, Candidate, Image

    url, _ = locations(args)
    session_factory = _open(url)
    with session_factory() as session:
        if args.blobs:
            print(f"{'id':>5} {'x':>8} {'y':>8} {'DS9 (x+1, y+1)':>20} {'radius':>7} {'depth':>6}  source")
            for b in session.scalars(select(Blob).order_by(Blob.id)):
                depth = "" if b.depth is None else f"{b.depth:.3f}"
                print(
                    f"{b.id:>5} {b.x:8.1f} {b.y:8.1f} {f'({b.x + 1:.1f}, {b.y + 1:.1f})':>20} "
                    f"{b.radius:7.1f} {depth:>6}  {b.source}"
                )
            return 0
        if args.status != "all" and args.status not in CANDIDATE_STATUSES:
            raise BlobwatchError(
                f"--status {args.status!r} must be one of {', '.join(CANDIDATE_STATUSES)} or all"
            )
        query = select(Candidate, Image).join(Image, Candidate.image_id == Image.id).order_by(Candidate.id)
        if args.status != "all":
            query = query.where(Candidate.status == args.status)
        print(f"{'id':>5} {'image':<28} {'x':>8} {'y':>8} {'DS9 (x+1, y+1)':>20} {'P':>6}  status")
        for c, im in session.execute(query):
            print(
                f"{c.id:>5} {im.name:<28} {c.x:8.1f} {c.y:8.1f} {f'({c.x + 1:.1f}, {c.y + 1:.1f})':>20} "
                f"{c.probability:6.3f}  {c.status}{': ' + c.reason if c.reason else ''}"
            )
    return 0
