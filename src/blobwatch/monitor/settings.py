"""The monitor's settings (`MonitorSettings`) and defaults, without the database or numpy:
the command line and the config file read them without importing the monitor itself."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

__all__ = ["DEFAULT_REPORTS", "DETECTORS", "STORE_FOLDER", "MonitorSettings"]

#: The default report folder (in the working directory), which holds the default database.
DEFAULT_REPORTS = "blobwatch-reports"

#: The detectors a monitor run can use; the first is the default (the suite's winner,
#: docs/regression.md): the localizing network, and the seed's chain (`blobwatch.detect.detect`).
DETECTORS = ("fcn", "paper")

#: The reference store's folder inside the reports folder (`MonitorSettings.reference_store`).
STORE_FOLDER = ".reference-store"


@dataclass(frozen=True)
class MonitorSettings:
    """Tunable settings of a monitor run.

    Attributes
    ----------
    n_references : int
        Preceding images in the median stack (the seed's 30).
    min_references : int
        An image is processed once at least this many earlier valid images exist.
    register : bool
        Register the references' blob patterns before the median (`blobwatch.difference`).
    threshold : float or None
        Candidate probability threshold of the chosen detector; the model's own when None.
    detector : str
        ``'fcn'``: candidates from the localizing network (`blobwatch.fcn.detect_fcn`), the seed's
        16 subframes classified beside it; ``'paper'``: the seed's chain (`blobwatch.detect.detect`).
    fcn_model : str or None
        The localizing network's model file; the shipped one when None.
    known_margin : float
        A candidate within a catalog blob's radius plus this margin (px) is ``known``.
    link_distance : float
        A candidate within ``max(link_distance, earlier candidate's radius)`` px of an open or
        confirmed candidate of an earlier image is ``linked`` to it (not alerted again).
    expected_shape : (int, int) or None
        Shape every image must have; by default the most common shape among the registered images.
    stale_after : datetime.timedelta
        A claim older than this (a monitor that died on another host) may be taken over.
    cache_images : int
        Blob images kept in memory between images of one run (each 4 MiB at 1024x1024).
    base_url : str or None
        Address of the review app (``blobwatch serve``) that notifications link to.
    reference_store : bool
        Keep every image's pixels and registration preparation on disk
        (`blobwatch.refstore.ReferenceStore`), so that a daily run reads and prepares only the
        new image; results are identical without it.
    store_dir : str or None
        The store's folder; ``<reports>/.reference-store`` when None.
    """

    n_references: int = 30
    min_references: int = 5
    register: bool = True
    threshold: float | None = None
    detector: str = DETECTORS[0]
    fcn_model: str | None = None
    known_margin: float = 2.0
    link_distance: float = 4.0
    expected_shape: tuple[int, int] | None = None
    stale_after: _dt.timedelta = _dt.timedelta(minutes=30)
    cache_images: int = 40
    base_url: str | None = None
    reference_store: bool = True
    store_dir: str | None = None

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector {self.detector!r} is not one of {', '.join(DETECTORS)}")
