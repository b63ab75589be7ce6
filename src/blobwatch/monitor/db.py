"""The monitor's database: SQLAlchemy 2 models, schema migrations and the atomic image claim.

Any SQLAlchemy URL works (``sqlite:///path/blobwatch.db`` is the embedded default, a team can
use ``postgresql+psycopg://...``).  `open_database` creates the schema on first use and upgrades
an older one with the Alembic migrations shipped in ``blobwatch/monitor/migrations``; schema
changes are additive and each has its own migration script.

Conventions
-----------
* Pixel coordinates are 0-based, ``x`` = column, ``y`` = row (reports add DS9 ``x+1, y+1``).
* Times are UTC ``datetime`` objects (`utcnow`); observation times are also kept as MJD.
* Status columns are plain strings; the allowed values are the ``*_STATUSES`` tuples below.

Tables
------
``images``                one row per distinct file content (sha256), with its processing status
``runs``                  one processing of one image: model, versions, parameters, timings, report
``subframe_predictions``  the 16 subframe probabilities of a run (+ saliency PNG path if flagged)
``candidates``            localized candidates and their review state
``blobs``                 the catalog of known blobs
``notifications``         one row per (image, notification URL) with send bookkeeping
``alembic_version``       the schema version (Alembic)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    false,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.sql.expression import Executable

from blobwatch.errors import BlobwatchError
from blobwatch.monitor.settings import DEFAULT_REPORTS

#: Alembic revision of the newest schema this code writes.
SCHEMA_VERSION = "0004"

#: Environment variable that overrides the default database URL.
DB_URL_ENV = "BLOBWATCH_DB"

IMAGE_STATUSES = ("registered", "processing", "processed", "rejected")
CANDIDATE_STATUSES = ("new", "confirmed", "rejected", "known", "linked")
#: Candidate statuses that still count as a live blob position for linking later images.
OPEN_CANDIDATE_STATUSES = ("new", "confirmed")
BLOB_SOURCES = ("import", "simulator-truth", "confirmed")
#: ``sending`` marks a delivery in progress (an atomic claim, so two monitors never send twice)
NOTIFICATION_STATUSES = ("pending", "sending", "sent", "failed")

_MIGRATIONS = Path(__file__).with_name("migrations")

log = logging.getLogger(__name__)


def utcnow() -> _dt.datetime:
    """Return the current UTC time as a timezone-aware ``datetime``."""
    return _dt.datetime.now(_dt.timezone.utc)


def mjd_to_datetime(mjd: float | None) -> _dt.datetime | None:
    """A UTC ``datetime`` for an MJD (None for None or a non-finite MJD)."""
    import math

    if mjd is None or not math.isfinite(mjd):
        return None
    from astropy.time import Time

    return Time(mjd, format="mjd", scale="utc").to_datetime(timezone=_dt.timezone.utc)


class UTCDateTime(TypeDecorator[_dt.datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: _dt.datetime | None, dialect: Any) -> _dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc)

    def process_result_value(self, value: _dt.datetime | None, dialect: Any) -> _dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every blobwatch table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        _dt.datetime: UTCDateTime(),
    }


class Image(Base):
    """A blob image found in the inbox, identified by the SHA-256 of its bytes."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mjd: Mapped[float | None] = mapped_column(Float, index=True)
    obs_date: Mapped[_dt.datetime | None]
    filter: Mapped[str | None] = mapped_column(String(32))
    #: image shape (added in schema 0002)
    rows: Mapped[int | None] = mapped_column(Integer)
    cols: Mapped[int | None] = mapped_column(Integer)
    #: offset (px) moving the image's blob pattern onto the frame image's (added in schema 0004)
    offset_dy: Mapped[float | None] = mapped_column(Float)
    offset_dx: Mapped[float | None] = mapped_column(Float)
    #: the frame image the offset was measured against; NULL: not measured yet
    offset_frame_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True, default="registered")
    reason: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[_dt.datetime | None]
    registered_at: Mapped[_dt.datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[_dt.datetime | None]

    runs: Mapped[list[Run]] = relationship(back_populates="image", order_by="Run.id")
    candidates: Mapped[list[Candidate]] = relationship(back_populates="image", order_by="Candidate.id")
    notifications: Mapped[list[Notification]] = relationship(
        back_populates="image", order_by="Notification.id"
    )

    @property
    def name(self) -> str:
        """The image's file name."""
        return Path(self.path).name


class Run(Base):
    """One processing of one image, with everything needed to reproduce it."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    model_path: Mapped[str | None] = mapped_column(Text)
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    blobwatch_version: Mapped[str] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(32))
    numpy_version: Mapped[str | None] = mapped_column(String(32))
    #: threshold, n_references, min_references, registration method, offsets, reference paths
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: seconds per step (read, difference, classify, saliency, report, total)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    threshold: Mapped[float | None] = mapped_column(Float)
    max_probability: Mapped[float | None] = mapped_column(Float)
    report_path: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[_dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[_dt.datetime | None]

    image: Mapped[Image] = relationship(back_populates="runs")
    subframes: Mapped[list[SubframePrediction]] = relationship(
        back_populates="run", order_by="SubframePrediction.index"
    )
    candidates: Mapped[list[Candidate]] = relationship(back_populates="run", order_by="Candidate.id")


class SubframePrediction(Base):
    """The classifier's probability for one 256x256 subframe of a run's difference image."""

    __tablename__ = "subframe_predictions"
    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_subframe_run_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    x0: Mapped[int] = mapped_column(Integer)
    y0: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    saliency_path: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="subframes")


class Blob(Base):
    """A known blob in the catalog (0-based pixel centre, radius in pixels, fractional depth)."""

    __tablename__ = "blobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    radius: Mapped[float] = mapped_column(Float)
    #: fractional throughput loss at the centre (0.1 = 10 % darker)
    depth: Mapped[float | None] = mapped_column(Float)
    first_seen_mjd: Mapped[float | None] = mapped_column(Float)
    first_seen: Mapped[_dt.datetime | None]
    source: Mapped[str] = mapped_column(String(32))
    label: Mapped[str | None] = mapped_column(String(64))
    #: the confirmed candidate this blob came from (a plain id: blobs and candidates refer to
    #: each other, and a foreign-key cycle would complicate migrations on SQLite)
    candidate_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[_dt.datetime] = mapped_column(default=utcnow)


def _found_as_new(context: Any) -> bool:
    """Default of ``candidates.alerted``: the status given when the row is inserted is ``new``."""
    return context.get_current_parameters().get("status", "new") == "new"


class Candidate(Base):
    """A localized candidate blob in one image, and its review state.

    ``status``: ``new`` (alerted, awaiting review), ``confirmed`` (added to the catalog),
    ``rejected`` (false alarm, ``reason`` says why; a label for retraining), ``known`` (within
    a catalog blob's radius: recorded, not alerted) or ``linked`` (at the position of an open or
    confirmed candidate of an earlier image: ``linked_to``; recorded, not alerted again).
    """

    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    probability: Mapped[float] = mapped_column(Float)
    significance: Mapped[float | None] = mapped_column(Float)
    radius: Mapped[float | None] = mapped_column(Float)
    subframe: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True, default="new")
    #: the monitor alerted on it when it was found (status ``new`` then); reviews never change it
    alerted: Mapped[bool] = mapped_column(Boolean, default=_found_as_new, server_default=false())
    linked_to: Mapped[int | None] = mapped_column(ForeignKey("candidates.id", ondelete="SET NULL"))
    known_blob_id: Mapped[int | None] = mapped_column(ForeignKey("blobs.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[_dt.datetime | None]
    created_at: Mapped[_dt.datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="candidates")
    image: Mapped[Image] = relationship(back_populates="candidates")
    known_blob: Mapped[Blob | None] = relationship(foreign_keys=[known_blob_id])


class Notification(Base):
    """One alert for one image to one notification URL, with retry bookkeeping.

    The URL itself is never stored (it may hold a token): only ``url_hash`` (SHA-256, used to
    match the configured URL on a retry) and ``url_redacted`` (scheme and host, for display).
    """

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("image_id", "url_hash", name="uq_notification_image_url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    url_hash: Mapped[str] = mapped_column(String(64))
    url_redacted: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[_dt.datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[_dt.datetime | None]
    sent_at: Mapped[_dt.datetime | None]

    image: Mapped[Image] = relationship(back_populates="notifications")


# --------------------------------------------------------------------------------------------
# Engine, schema creation and upgrade
# --------------------------------------------------------------------------------------------


def default_db_url(directory: str | os.PathLike | None = None) -> str:
    """Return the default database URL (of ``blobwatch monitor``, ``serve`` and ``catalog``).

    ``$BLOBWATCH_DB`` if set, else ``sqlite:///<directory>/blobwatch.db`` (``directory``
    defaults to the default report folder, `DEFAULT_REPORTS` in the working directory).
    """
    env = os.environ.get(DB_URL_ENV)
    if env:
        return env
    base = Path(directory) if directory is not None else Path.cwd() / DEFAULT_REPORTS
    return f"sqlite:///{(base / 'blobwatch.db').resolve()}"


class DatabaseNotFoundError(BlobwatchError):
    """The database to open does not exist (or holds no blobwatch schema) and may not be created."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(
            f"database {redact_url(url)}: {problem}; give the right one with --db or ${DB_URL_ENV}, or "
            "create one with 'blobwatch monitor' or 'blobwatch catalog import'"
        )


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL if it does not exist (None: it exists, or not a SQLite file URL)."""
    parsed = make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        return None
    path = Path(database).expanduser()
    return None if path.is_file() else path


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and reports)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: hide anything between :// and @
        return re.sub(r"://[^@/]*@", "://***@", url)


def _install_sqlite_pragmas(engine: Engine) -> None:
    """Make SQLite behave: real transactions, WAL, foreign keys, a busy timeout.

    pysqlite's own transaction handling defers ``BEGIN`` and never locks for DDL; the
    documented SQLAlchemy recipe turns it off and emits ``BEGIN`` ourselves.  A connection
    with the execution option ``sqlite_begin="IMMEDIATE"`` takes the write lock at once.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def create_db_engine(url: str, *, pool_size: int | None = None) -> Engine:
    """Create an engine for ``url``; for SQLite create the parent folder and set pragmas.

    ``pool_size`` sets how many connections the pool keeps open and lends at once (SQLAlchemy's
    default, 5 plus 10 overflow, when None); an in-memory SQLite database has one connection per
    thread whatever it says.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    memory = False
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        memory = not database or database == ":memory:" or "mode=memory" in str(database)
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    if pool_size is not None and not memory:
        kwargs.update(pool_size=pool_size, max_overflow=0)
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_pragmas(engine)
    return engine


def _alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade_schema(engine: Engine) -> None:
    """Create or upgrade the schema to `SCHEMA_VERSION` with the shipped Alembic migrations.

    Runs in one transaction; on SQLite it holds the write lock, so two processes opening a new
    database at once do not both create tables.
    """
    _quiet_alembic()
    from alembic import command

    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            command.upgrade(_alembic_config(conn), "head")


def _quiet_alembic() -> None:
    """Keep Alembic's INFO lines (plugin set-up, each migration) off the console: noise for users."""
    logging.getLogger("alembic").setLevel(logging.WARNING)


def schema_version(engine: Engine) -> str | None:
    """Return the database's Alembic revision (``None`` for an empty database)."""
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def open_database(
    url: str | None = None, *, upgrade: bool = True, create: bool = True, pool_size: int | None = None
) -> sessionmaker[Session]:
    """Open (and create or upgrade) the blobwatch database at ``url``.

    Parameters
    ----------
    url : str, optional
        Any SQLAlchemy URL; default `default_db_url` (``$BLOBWATCH_DB`` or
        ``sqlite:///./blobwatch-reports/blobwatch.db``).
    upgrade : bool
        Create or upgrade the schema to `SCHEMA_VERSION` (Alembic ``upgrade head``).
    create : bool
        Create a database that does not exist yet.  Without it, a missing SQLite file or a
        database without a blobwatch schema raises `DatabaseNotFoundError` (and nothing is
        created), so a mistyped URL is not mistaken for an empty database.
    pool_size : int, optional
        Connections lent at once (`create_db_engine`); the web app asks for one per worker
        thread, so no request waits for a connection.

    Returns
    -------
    sessionmaker
        Use ``with Session() as s:`` or ``with Session.begin() as s:``; the engine is
        ``Session.kw["bind"]``.  ``expire_on_commit=False`` so rows stay readable after commit.
    """
    url = url or default_db_url()
    if not create:
        missing = _missing_sqlite_file(url)
        if missing is not None:
            raise DatabaseNotFoundError(url, f"no such file {missing}")
    engine = create_db_engine(url, pool_size=pool_size)
    if not create and schema_version(engine) is None:
        engine.dispose()
        raise DatabaseNotFoundError(url, "not a blobwatch database (it has no blobwatch tables)")
    if upgrade:
        upgrade_schema(engine)
    return sessionmaker(bind=engine, expire_on_commit=False)


def engine_of(session_factory: sessionmaker[Session]) -> Engine:
    """Return the engine a `open_database` session factory is bound to."""
    return session_factory.kw["bind"]


def write_session(session_factory: sessionmaker[Session]) -> Session:
    """A session whose transactions take the write lock at ``BEGIN`` (SQLite ``BEGIN IMMEDIATE``).

    Use it for read-then-write work that must see the latest rows: a deferred SQLite transaction
    that has read cannot write once another connection has committed (``database is locked``).
    Other backends get an ordinary session.
    """
    engine = engine_of(session_factory)
    if engine.dialect.name == "sqlite":
        engine = engine.execution_options(sqlite_begin="IMMEDIATE")
    return session_factory(bind=engine)


def is_lock_conflict(exc: BaseException) -> bool:
    """True for SQLite's ``database is locked`` / ``busy`` errors (worth a retry)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in text or "database is busy" in text


# --------------------------------------------------------------------------------------------
# Small shared operations
# --------------------------------------------------------------------------------------------


def claim_image(
    session: Session,
    image_id: int,
    worker: str,
    *,
    stale_after: _dt.timedelta = _dt.timedelta(minutes=30),
) -> bool:
    """Atomically claim a registered image (or a stale claim) for processing; commit.

    One ``UPDATE ... WHERE status='registered'`` statement: the database guarantees that only
    one of several concurrent monitors sees ``rowcount == 1``.  A claim older than
    ``stale_after`` (a monitor that was killed) can be taken over.

    Returns
    -------
    bool
        True if this worker now owns the image.
    """
    now = utcnow()
    stale = now - stale_after
    changed = rows_changed(
        session,
        (
            update(Image)
            .where(Image.id == image_id)
            .where(
                or_(
                    Image.status == "registered",
                    (Image.status == "processing") & (Image.claimed_at < stale),
                )
            )
            .values(status="processing", claimed_by=worker, claimed_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    session.commit()
    return changed == 1


def rows_changed(session: Session, statement: Executable) -> int:
    """Execute an ``UPDATE``/``DELETE`` in ``session`` and return how many rows it changed.

    A DML statement's result is a `CursorResult` (``Session.execute`` is typed as the general
    `Result`, which has no ``rowcount``).
    """
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


def worker_name() -> str:
    """``host:pid:token`` identifying one `run_monitor` call (recorded in ``images.claimed_by``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_holder_dead(claimed_by: str | None) -> bool:
    """True when the claim belongs to a process on this host that no longer exists."""
    parts = (claimed_by or "").split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # this process: another run_monitor call may be working on it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reclaim_dead_claims(session_factory: sessionmaker[Session]) -> None:
    """Put images claimed by dead local processes back to ``registered``."""
    with write_session(session_factory) as session:
        for image in session.scalars(select(Image).where(Image.status == "processing")):
            if claim_holder_dead(image.claimed_by):
                log.info("%s: claim of dead process %s released", image.name, image.claimed_by)
                session.execute(
                    update(Image)
                    .where(
                        Image.id == image.id,
                        Image.status == "processing",
                        Image.claimed_by == image.claimed_by,
                    )
                    .values(status="registered", claimed_by=None, claimed_at=None)
                )
        session.commit()


def release_image(session: Session, image_id: int, worker: str) -> None:
    """Give back a claim that was not completed (the image is processed on the next run); commit."""
    session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == "processing", Image.claimed_by == worker)
        .values(status="registered", claimed_by=None, claimed_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def hash_text(text: str) -> str:
    """Return the hex SHA-256 of ``text`` (used for notification URLs)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def latest_run(session: Session, image_id: int) -> Run | None:
    """Return the newest run of an image, or None."""
    return session.scalars(
        select(Run).where(Run.image_id == image_id).order_by(Run.id.desc()).limit(1)
    ).first()
