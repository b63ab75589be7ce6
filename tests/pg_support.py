"""A throw-away PostgreSQL server for the tests that need the real thing.

`postgres_server` runs Debian's ``initdb`` and ``pg_ctl`` (PostgreSQL 15 or newer, found on the
PATH or under /usr/lib/postgresql) in a temporary folder, listening on 127.0.0.1 only, with
trust authentication for one user, and stops it at the end. As root, the server runs as the
``postgres`` user (PostgreSQL refuses root). It skips the tests, with the reason, when the server
or the psycopg driver is missing (`.ci/run` installs the server, the ``test`` extra the driver).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL refuses to run as root and runuser is missing")
    return [runuser, "-u", "postgres", "--", *cmd]


def postgres_server() -> Iterator[str]:
    """Start a server; yield an SQLAlchemy URL of its ``postgres`` database; stop it."""
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed (the test extra has it)")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(
            "no PostgreSQL server here (initdb/pg_ctl not found; .ci/run installs Debian's postgresql)"
        )
    folder = Path(tempfile.mkdtemp(prefix="blobwatch-pg-"))
    data = folder / "data"
    port = _free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres")
    try:
        subprocess.run(
            _as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", "bw", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-k {folder} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_server_user(
                [pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(folder / "log"), "start"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {exc}")
    try:
        yield f"postgresql+psycopg://bw@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True, timeout=120
        )
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server_url: str) -> str:
    """Create an empty database on the server; return its URL."""
    from sqlalchemy import create_engine, text

    name = f"bw_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
