"""``blobwatch reprocess``: the monitor's pipeline over a whole archive on a Dask cluster.

The work on one image splits in two (`blobwatch.monitor.runner`):

* `compute_image` (difference against the preceding images, detection, saliency) depends only on
  image files, so it runs on the Dask workers, many images at once;
* `record` sorts the candidates against the catalog and the earlier images' candidates (known,
  linked, new) and commits the image's rows in one transaction, so it runs in the client, one
  image after the other in date order.

Each new image's offset to the fixed frame (register once, `measure_offsets`) is measured on the
workers too, in tasks of `OFFSET_CHUNK` images.  The images, references, offsets and settings are
those `run_monitor` would use, so the database ends up the same as after the serial monitor on
the same inbox.  Each image is claimed before it is sent
to a worker and committed on its own: after a kill -9 a rerun frees the dead process's claims
(`reclaim_dead_claims`) and processes the rest.  Workers read the files themselves: with
``scheduler`` they must see the archive and the model at the same paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from blobwatch.errors import BlobwatchError, InputError
from blobwatch.monitor import notify as _notify
from blobwatch.monitor.db import Image, claim_image, release_image, worker_name
from blobwatch.monitor.runner import (
    ImageFile,
    ImageOutcome,
    ImageResult,
    MonitorSettings,
    MonitorSummary,
    Offset,
    _add_outcome,
    _ClaimLost,
    _failed,
    _finish_run,
    _ImageCache,
    _load_model,
    _measure_new_offsets,
    _outcome,
    _ready_images,
    _references,
    _set_status,
    _start_run,
    _stored_offsets,
    compute_image,
    measure_offsets,
    progress_bar,
    record,
)

__all__ = ["reprocess"]

log = logging.getLogger(__name__)

#: Per worker process: the image cache, and the classifier with its model path (first use).
_WORKER_STATE: dict[str, Any] = {}

#: Images per offset-measuring task (each task prepares the frame once).
OFFSET_CHUNK = 20


def _worker_cache(settings: MonitorSettings) -> _ImageCache:
    """This worker process's image cache (with registration preparations)."""
    from blobwatch.difference import PreparedCache

    if "cache" not in _WORKER_STATE:
        cache = _ImageCache(max(settings.cache_images, settings.n_references + 2))
        cache.prepared = PreparedCache(settings.n_references + 1) if settings.register else None
        _WORKER_STATE["cache"] = cache
    return _WORKER_STATE["cache"]


def _measure_on_worker(
    images: Sequence[ImageFile], frame: ImageFile, settings: MonitorSettings
) -> list[Offset | None]:
    """`measure_offsets` in a worker process."""
    return measure_offsets(frame, images, _worker_cache(settings))


def _compute_on_worker(
    current: ImageFile,
    references: Sequence[ImageFile],
    offsets: Sequence[Offset | None],
    model: str | None,
    settings: MonitorSettings,
) -> ImageResult:
    """Read one image and its references (cached in the worker process) and `compute_image` it."""
    from blobwatch.classifier import BlobClassifier

    if _WORKER_STATE.get("model", ()) != model:
        _WORKER_STATE.update(model=model, classifier=BlobClassifier(model))
    if settings.detector == "fcn" and _WORKER_STATE.get("fcn_model", ()) != settings.fcn_model:
        from blobwatch.fcn import FCNDetector

        _WORKER_STATE.update(fcn_model=settings.fcn_model, localizer=FCNDetector(settings.fcn_model))
    cache = _worker_cache(settings)
    t = time.perf_counter()
    image = cache.get(current)
    refs = cache.get_many(references)
    read = time.perf_counter() - t
    result = compute_image(
        image,
        refs,
        _WORKER_STATE["classifier"],
        settings,
        prepared=cache.prepared,
        offsets=offsets,
        localizer=_WORKER_STATE.get("localizer") if settings.detector == "fcn" else None,
    )
    return dataclasses.replace(result, timings={"read": read, **result.timings})


def _measure_on_cluster(
    client: Any, frame: ImageFile, images: list[ImageFile], settings: MonitorSettings
) -> list[Offset | None]:
    """`measure_offsets` split into tasks of `OFFSET_CHUNK` images on the cluster."""
    chunks = [images[i : i + OFFSET_CHUNK] for i in range(0, len(images), OFFSET_CHUNK)]
    futures = client.map(_measure_on_worker, chunks, frame=frame, settings=settings, pure=False)
    return [offset for part in client.gather(futures) for offset in part]


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A Dask client: of the scheduler at ``scheduler``, or of a new LocalCluster of ``workers``
    single-threaded worker processes."""
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise BlobwatchError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def reprocess(
    archive: str | os.PathLike,
    *,
    db: str | sessionmaker[Session] | None = None,
    reports: str | os.PathLike | None = None,
    notify: Sequence[str] | None = None,
    model: str | os.PathLike | None = None,
    settings: MonitorSettings | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    sender: _notify.Sender = _notify.apprise_send,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> MonitorSummary:
    """Process every waiting image of ``archive`` like `run_monitor`, the computation on Dask.

    Parameters
    ----------
    archive : path-like
        Folder searched recursively for FITS files.
    db, reports, notify, settings, sender, echo
        As for `blobwatch.monitor.runner.run_monitor`.
    model : path-like, optional
        Model file, loaded by each worker; the shipped model by default.
    workers : int, optional
        Worker processes of the LocalCluster (default: Dask's, one per core).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://HOST:8786``) to use instead of a LocalCluster.
    progress : bool, optional
        Show a tqdm progress bar (default: when stderr is a terminal and > 1 image is waiting).

    Returns
    -------
    MonitorSummary
    """
    start = time.perf_counter()
    settings = settings or MonitorSettings()
    echo = echo or (lambda line: print(line, flush=True))
    urls = list(notify or [])
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    cache = _ImageCache(settings.n_references + 2)
    # the reference store serves the daily run; an archive pass would only fill it (and its workers
    # read each image once anyway)
    reports_path, session_factory, summary = _start_run(
        archive, db, reports, dataclasses.replace(settings, reference_store=False), cache, echo
    )
    with contextlib.ExitStack() as stack:
        started: list[Any] = []

        def client() -> Any:
            """The Dask client, started on first use (a rerun with nothing to do starts no cluster)."""
            if not started:
                started.append(stack.enter_context(_client(workers, scheduler)))
                log.info("Dask dashboard: %s", started[0].dashboard_link)
            return started[0]

        if settings.register:
            _measure_new_offsets(
                session_factory, lambda frame, images: _measure_on_cluster(client(), frame, images, settings)
            )
        ready = _ready_images(session_factory, settings)
        if ready:
            loaded = _load_model(model, None, settings)  # before any claim: a bad model claims nothing
            window = 2 * max(1, len(client().scheduler_info(n_workers=-1)["workers"])) + 2
            bar, echo_line = progress_bar(progress, len(ready), "reprocess", echo)
            try:
                for outcome in _process_in_order(
                    client(),
                    session_factory,
                    ready,
                    loaded,
                    settings,
                    reports_path,
                    urls,
                    worker_name(),
                    window,
                ):
                    _add_outcome(summary, outcome, echo_line, bar)
            finally:
                if bar:
                    bar.close()
    _finish_run(summary, session_factory, reports_path, urls, sender, echo)
    summary.seconds = time.perf_counter() - start
    return summary


def _process_in_order(
    client: Any,
    session_factory: sessionmaker[Session],
    ready: Sequence[int],
    model: Any,
    settings: MonitorSettings,
    reports: Any,
    urls: Sequence[str],
    worker: str,
    window: int,
) -> Iterator[ImageOutcome]:
    """Compute up to ``window`` images ahead on the cluster; record them one by one in date order.

    A worker that finds a reference unreadable has it rejected and the image sent again with
    the references chosen anew, as `run_monitor` does.
    """

    def submit(iid: int) -> tuple[int, Any, Any] | ImageOutcome:
        with session_factory() as session:
            image = session.get(Image, iid)
            assert image is not None
            refs = _references(session, image, settings)
            if len(refs) < settings.min_references:  # a reference was rejected meanwhile
                release_image(session, iid, worker)
                return _outcome(
                    session_factory,
                    iid,
                    "waiting",
                    f"only {len(refs)} valid earlier images (need {settings.min_references})",
                )
            future = client.submit(
                _compute_on_worker,
                ImageFile(image.path, image.sha256),
                [ImageFile(r.path, r.sha256) for r in refs],
                _stored_offsets(image, refs),
                model.classifier_path,
                settings,
                pure=False,
            )
            return iid, future, [(r.id, r.path) for r in refs]

    def drain() -> Iterator[ImageOutcome]:
        while todo or in_flight:
            while todo and len(in_flight) < window:
                iid = todo.popleft()
                with session_factory() as session:
                    if not claim_image(session, iid, worker, stale_after=settings.stale_after):
                        log.info("image %d is being processed by another monitor; skipped", iid)
                        continue
                in_flight.append(submit(iid))
            if not in_flight:
                break
            item = in_flight[0]  # left in the queue until recorded: an interruption releases its claim
            if isinstance(item, ImageOutcome):
                in_flight.popleft()
                yield item
                continue
            iid, future, refs = item
            started = time.perf_counter()
            try:
                result = future.result()
                outcome = record(
                    session_factory,
                    iid,
                    result,
                    reference_ids=[rid for rid, _ in refs],
                    model=model,
                    settings=settings,
                    reports=reports,
                    notify_urls=urls,
                    worker=worker,
                    timings=result.timings,
                    started=started,
                )
            except InputError as exc:
                bad = next((rid for rid, path in refs if path == exc.path), None)
                _set_status(session_factory, bad if bad is not None else iid, "rejected", exc.problem)
                if bad is not None:  # choose the references again
                    log.warning("%s: reference rejected: %s", exc.path, exc.problem)
                    in_flight[0] = submit(iid)
                    continue
                outcome = _outcome(session_factory, iid, "rejected", exc.problem)
            except _ClaimLost as exc:  # another monitor took over a stale claim: its result counts
                log.warning("%s", exc)
                outcome = _outcome(session_factory, iid, "busy", str(exc))
            except Exception as exc:  # one bad image never stops the others
                outcome = _failed(session_factory, iid, worker, exc)
            in_flight.popleft()
            yield outcome

    todo = deque(ready)
    in_flight: deque[tuple[int, Any, Any] | ImageOutcome] = deque()
    try:
        yield from drain()
    finally:  # interrupted (Ctrl-C, an error): leave the images sent ahead to the next run
        with session_factory() as session:
            for item in in_flight:
                if not isinstance(item, ImageOutcome):
                    release_image(session, item[0], worker)
