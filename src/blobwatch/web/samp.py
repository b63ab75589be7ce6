""" "Open in DS9" over SAMP (`astropy.samp`), for the app served on the astronomer's own machine.

The server, not the browser, is the SAMP client: it finds the hub the usual way (``$SAMP_HUB``
or ``~/.samp``), connects for one message and sends ``image.load.fits`` with the URL of one of
the app's FITS downloads (as a call to each viewer that takes it, waiting up to `LOAD_TIMEOUT`
for it to confirm, so the regions cannot arrive before the image), then ``ds9.set`` with ``regions load FILE`` for the image's region
file (written to a temporary folder of the app: DS9 runs on this machine).  Whether a hub runs
is checked at most every `CHECK_SECONDS`, so pages stay fast; the button is offered only then.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

from blobwatch.errors import BlobwatchError

__all__ = ["CHECK_SECONDS", "SampError", "SampLink"]

log = logging.getLogger(__name__)

#: How long the answer to "is a SAMP hub running?" is reused (s).
CHECK_SECONDS = 5.0
#: Seconds a viewer may take to confirm it loaded the image before the regions are sent anyway.
LOAD_TIMEOUT = 20


def _astropy_samp() -> ModuleType:
    """`astropy.samp` without its notice that pyvo.samp will replace it (astropy 8 ships it)."""
    from astropy.utils.exceptions import AstropyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyDeprecationWarning)
        import astropy.samp
        import astropy.samp.lockfile_helpers  # imported for get_running_hubs
    return astropy.samp


class SampError(BlobwatchError):
    """No SAMP hub to send to, or the hub refused the message."""


class SampLink:
    """Sends the app's images and regions to DS9 (any SAMP client) through a running hub."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked = (-CHECK_SECONDS, False)
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def available(self) -> bool:
        """Whether a SAMP hub is running now (checked at most every `CHECK_SECONDS`)."""
        get_running_hubs = _astropy_samp().lockfile_helpers.get_running_hubs
        with self._lock:
            when, running = self._checked
            if time.monotonic() - when >= CHECK_SECONDS:
                try:
                    running = bool(get_running_hubs())
                except Exception:  # an unreadable or stale lockfile is "no hub"
                    log.debug("looking for a SAMP hub failed", exc_info=True)
                    running = False
                self._checked = (time.monotonic(), running)
            return running

    def send(self, fits_url: str, name: str, regions: bytes) -> None:
        """Have every SAMP client load ``fits_url`` as ``name`` and then the ``regions`` file.

        Raises
        ------
        SampError
            No hub is running, or it cannot be reached.
        """
        samp = _astropy_samp()
        with self._lock:
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="blobwatch-samp-")
            region_file = Path(self._folder.name) / f"{name}.reg"
        region_file.write_bytes(regions)
        client = samp.SAMPIntegratedClient(
            name="blobwatch", description="blobwatch review app", callable=False
        )
        try:
            client.connect()
        except (samp.SAMPHubError, OSError) as exc:
            self._checked = (-CHECK_SECONDS, False)
            raise SampError(f"no SAMP hub to send to (start DS9 or another hub first): {exc}") from None
        try:
            load = {"samp.mtype": "image.load.fits", "samp.params": {"url": fits_url, "name": name}}
            # a call waits for each viewer to load the image, so the regions do not arrive first
            # (the hub delivers notifications in threads of its own, in no fixed order)
            for recipient in client.get_subscribed_clients("image.load.fits"):
                try:
                    client.call_and_wait(recipient, load, timeout=str(LOAD_TIMEOUT))
                except samp.SAMPProxyError as exc:  # it failed or took too long: the regions still go
                    log.warning("SAMP client %s did not confirm loading %s: %s", recipient, fits_url, exc)
            client.notify_all(
                {"samp.mtype": "ds9.set", "samp.params": {"cmd": f"regions load {region_file}"}}
            )
        finally:
            client.disconnect()
        log.info("sent %s and its regions to the SAMP hub", fits_url)
