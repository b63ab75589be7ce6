"""Helpers for the monitor tests: a real local JSON-webhook server and small simulated inboxes."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


@dataclass
class Webhook:
    """A JSON webhook on 127.0.0.1 that records every POSTed body, its path and Idempotency-Key."""

    port: int
    path: str = "/blobwatch"
    received: list[dict] = field(default_factory=list)
    status: int = 200

    @property
    def url(self) -> str:
        """The apprise URL of this webhook."""
        return f"json://127.0.0.1:{self.port}{self.path}"


@contextlib.contextmanager
def webhook_server(status: int = 200, port: int = 0) -> Iterator[Webhook]:
    """Run a webhook server in a thread for the duration of the ``with`` block (any free port
    unless ``port`` is given)."""
    hook = Webhook(port=port, status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server naming
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            seen = {"path": self.path, "idempotency_key": self.headers.get("Idempotency-Key")}
            try:
                hook.received.append({**seen, **json.loads(body)})
            except ValueError:
                hook.received.append({**seen, "raw": body.decode("utf-8", "replace")})
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    server = _Server(("127.0.0.1", port), Handler)
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a 'service down' URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simulate_inbox(
    outdir: Path, *, n_days: int, size: int, new_blob_day: int | None, seed: int = 11, n_existing: int = 12
) -> tuple[list[Path], dict]:
    """Write a small simulated sequence; return (image paths, the new blob's truth row or {})."""
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    config = SimulationConfig(
        n_days=n_days,
        size=size,
        seed=seed,
        n_existing=n_existing,
        new_blob_days=() if new_blob_day is None else (new_blob_day,),
        new_blob_depth=0.12,
        new_blob_radius=8.0,
        noise_sigma=0.004,
        shift_sigma=0.05,
        cosmic_ray_rate=0.0,
        snowball_rate=0.0,
        persistence_rate=0.0,
    )
    sim = simulate_sequence(config)
    files = write_simulation(sim, outdir)
    new = sim.new_blobs()
    truth = {k: new[k][0] for k in new.colnames} if len(new) else {}
    return sorted(f for f in files if f.suffix == ".fits"), truth
