"""End-to-end test of the review app in a real headless browser (Debian's Chromium).

A short simulated sequence with one new blob is processed by the monitor with the shipped model;
the test opens the review queue, confirms the candidate at the new blob and sees the blob in the
catalog table and on the blob map. Skipped, with the reason, where no Chromium is installed or
the shipped model has not been built. ``BLOBWATCH_TEST_MODEL`` names another model file to use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from blobwatch.web.testing import chromium_path

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::blobwatch.difference.FewReferencesWarning"),
    pytest.mark.skipif(chromium_path() is None,
                       reason="no chromium on PATH: install Debian's chromium (.ci/run does) to run "
                              "the end-to-end browser test"),
]


def _model() -> Path:
    from blobwatch.modelfile import shipped_model_path

    path = Path(os.environ.get("BLOBWATCH_TEST_MODEL") or shipped_model_path())
    if not path.is_file():
        pytest.skip(f"model file {path} does not exist yet (the shipped model is built by training)")
    return path


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory):
    from blobwatch.web.testing import monitored_simulation

    model = _model()
    return monitored_simulation(tmp_path_factory.mktemp("e2e"), n_days=7, size=512,
                                new_blob_days=(6,), model=model)


def test_confirm_in_the_queue_puts_the_blob_on_the_map(monitored) -> None:
    from blobwatch.web.app import create_app
    from blobwatch.web.testing import browser_page, serve_in_thread

    truth = monitored.new_blobs[0]
    app = create_app(monitored.db_url, monitored.reports)
    errors: list[str] = []
    with serve_in_thread(app) as base, browser_page() as page:
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{base}/blobs")
        known_before = page.locator("#catalog tbody tr").count()

        page.goto(f"{base}/queue")
        cards = page.locator("section.candidate")
        assert cards.count() >= 1, "the monitor raised no candidate for the new blob"
        # the candidate at the simulated new blob (the model may also raise false alarms)
        positions = [tuple(map(float, re.search(r"x = ([\d.]+), y = ([\d.]+)", cards.nth(i).inner_text()).groups()))
                     for i in range(cards.count())]
        dist = [np.hypot(x - truth["x"], y - truth["y"]) for x, y in positions]
        best = int(np.argmin(dist))
        assert dist[best] < 5.0, f"no candidate near the new blob at {truth}: {positions}"
        card = cards.nth(best)
        card_id = card.get_attribute("id")
        # the three cut-outs are real images
        for img in card.locator("img.zoomable").all():
            img.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        card.locator("input[name=reviewer]").fill("E2E reviewer")
        with page.expect_navigation():
            card.locator("button[data-action=confirm]").click()
        flash = page.locator(".flash.ok").inner_text()
        assert re.search(r"Candidate #\d+ confirmed: blob #\d+ added to the catalog", flash), flash
        assert page.locator(f"#{card_id}").count() == 0  # left the queue

        page.locator("header nav a", has_text="Blob map").click()
        page.wait_for_url(f"{base}/blobs")
        rows = page.locator("#catalog tbody tr")
        assert rows.count() == known_before + 1
        blob_id = re.search(r"blob #(\d+)", flash).group(1)
        row = page.locator(f"#blob-{blob_id}").inner_text().split("\t")
        x, y = float(row[1]), float(row[2])
        assert np.hypot(x - truth["x"], y - truth["y"]) < 2.0, (row, truth)
        assert "confirmed" in row
        # the map was redrawn with the new blob (its figure is keyed by the catalog state)
        page.wait_for_function("() => document.querySelector('img.figure').naturalWidth > 0")
        assert f"{known_before + 1} known blobs" in page.locator("h1").inner_text()
        # the table sorts in the browser (static/app.js): by id, descending puts the new blob first
        header = page.locator("#catalog thead th", has_text="id").first
        header.click()
        header.click()
        assert header.get_attribute("aria-sort") == "descending"
        assert page.locator("#catalog tbody tr").first.get_attribute("id") == f"blob-{blob_id}"
    assert not errors, errors
