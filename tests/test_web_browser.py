"""End-to-end test of the review app in a real headless browser (Debian's Chromium).

A short simulated sequence with one new blob is processed by the monitor with the shipped model;
the test opens the review queue, confirms the candidate at the new blob and sees the blob in the
catalog table and on the blob map. A second test, on a database built by hand, clicks through
the review forms of linked candidates (reviewer check, "same as blob N", a quiet day stays quiet).
Skipped, with the reason, where no Chromium is installed (the first also where the shipped model
has not been built; ``BLOBWATCH_TEST_MODEL`` names another model file to use).
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
    pytest.mark.skipif(
        chromium_path() is None,
        reason="no chromium on PATH: install Debian's chromium (.ci/run does) to run "
        "the end-to-end browser test",
    ),
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
    return monitored_simulation(
        tmp_path_factory.mktemp("e2e"), n_days=7, size=512, new_blob_days=(6,), model=model
    )


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
        positions = [
            tuple(map(float, re.search(r"x = ([\d.]+), y = ([\d.]+)", cards.nth(i).inner_text()).groups()))
            for i in range(cards.count())
        ]
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


@pytest.fixture
def reviewed_db(tmp_path: Path) -> str:
    """Day 1 alerted candidate #1, confirmed as blob #1; day 2 quiet: candidates #2 and #3 linked to it
    (image files are not needed: nothing here is measured)."""
    from blobwatch.monitor.db import Blob, Candidate, Image, Run, open_database

    url = f"sqlite:///{tmp_path / 'bw.db'}"
    with open_database(url).begin() as s:
        s.add_all(
            [
                Image(
                    id=i,
                    path=f"/gone/csm_day{i:03d}_blob.fits",
                    sha256=str(i) * 64,
                    mjd=60000.0 + i,
                    status="processed",
                )
                for i in (1, 2)
            ]
        )
        s.add_all(
            [
                Run(id=i, image_id=i, blobwatch_version="t", threshold=0.5, max_probability=p)
                for i, p in ((1, 0.9), (2, 0.118))
            ]
        )
        s.add_all(
            [
                Candidate(
                    id=1,
                    run_id=1,
                    image_id=1,
                    x=300.0,
                    y=200.0,
                    probability=0.9,
                    radius=6.0,
                    status="confirmed",
                    alerted=True,
                    reviewed_by="Ada",
                ),
                Candidate(
                    id=2,
                    run_id=2,
                    image_id=2,
                    x=300.6,
                    y=200.0,
                    probability=0.118,
                    radius=6.0,
                    status="linked",
                    linked_to=1,
                ),
                Candidate(
                    id=3,
                    run_id=2,
                    image_id=2,
                    x=299.5,
                    y=200.4,
                    probability=0.1,
                    radius=6.0,
                    status="linked",
                    linked_to=1,
                ),
            ]
        )
        s.add(Blob(id=1, x=300.2, y=199.9, radius=6.0, depth=0.1, source="confirmed", candidate_id=1))
    return url


def test_review_forms_of_linked_candidates_in_the_browser(reviewed_db: str) -> None:
    """Confirm without a reviewer is stopped by the browser like Reject; a linked candidate is
    confirmed as its blob (no second catalog entry); rejecting one leaves its day quiet."""
    from blobwatch.web.app import create_app
    from blobwatch.web.testing import browser_page, serve_in_thread

    app = create_app(reviewed_db)
    with serve_in_thread(app) as base, browser_page() as page:
        page.goto(f"{base}/candidates/2")
        form = page.locator("form.review")
        form.locator("input[name=reviewer]").fill("")
        confirm = form.locator("button[data-action=confirm]")
        assert confirm.inner_text() == "Confirm: same as blob #1"
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
        confirm.click()
        page.wait_for_timeout(300)
        assert requests == [] and page.url == f"{base}/candidates/2"
        assert form.locator("input[name=reviewer]").evaluate("el => el.validationMessage") != ""

        form.locator("input[name=reviewer]").fill("Bo")
        with page.expect_navigation():
            confirm.click()
        flash = page.locator(".flash.ok").inner_text()
        assert flash == "Candidate #2 recorded as catalog blob #1 seen again: nothing added to the catalog."
        page.goto(f"{base}/blobs")
        assert page.locator("#catalog tbody tr").count() == 1

        page.goto(f"{base}/candidates/3")
        form = page.locator("form.review")
        form.locator("input[name=reviewer]").fill("Bo")
        form.locator("select[name=reason]").select_option("dip")
        with page.expect_navigation():
            form.locator("button[data-action=reject]").click()
        assert page.locator(".flash.ok").inner_text() == "Candidate #3 rejected."
        page.goto(f"{base}/history")
        day2 = page.locator("tr", has=page.locator("a[href='/images/2']"))
        day1 = page.locator("tr", has=page.locator("a[href='/images/1']"))
        assert day2.locator(".badge.alert").count() == 0 and day1.locator(".badge.alert").count() == 1


def test_a_downloaded_region_file_puts_circles_on_the_candidates(reviewed_db: str) -> None:
    """The image page's "candidates (DS9 .reg)" link, clicked in the browser, saves a file that
    `regions` parses, with a circle on each candidate of the image and on the catalog blob."""
    from regions import Regions

    from blobwatch.web.app import create_app
    from blobwatch.web.testing import browser_page, serve_in_thread

    app = create_app(reviewed_db)
    with serve_in_thread(app) as base, browser_page() as page:
        page.goto(f"{base}/images/2")
        with page.expect_download() as info:
            page.locator("a", has_text="candidates (DS9 .reg)").click()
        download = info.value
        assert download.suggested_filename == "image2_candidates.reg"
        shapes = Regions.read(download.path(), format="ds9")
    circles = {r.meta["text"].split(" P=")[0]: (r.center.x, r.center.y, r.radius) for r in shapes}
    assert circles == {
        "candidate 2 linked": pytest.approx((300.6, 200.0, 6.0)),
        "candidate 3 linked": pytest.approx((299.5, 200.4, 6.0)),
        "blob 1": pytest.approx((300.2, 199.9, 6.0)),
    }


# ------------------------------------------------------------------------------ pixel viewer

#: A pixel of the current image with a value no other pixel has, (x = column, y = row).
MARK_X, MARK_Y, MARK_VALUE = 70, 40, 5.0


@pytest.fixture(scope="module")
def pixel_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Six 256x256 images on disk; the newest processed (against the other five) with two
    candidates, one catalog blob; the current image holds ``MARK_VALUE`` at (MARK_X, MARK_Y)."""
    from astropy.io import fits

    from blobwatch.monitor.db import Blob, Candidate, Image, Run, open_database

    root = tmp_path_factory.mktemp("viewer")
    paths = []
    for day in range(6):
        data = 1.0 + np.random.default_rng(day).normal(0.0, 0.003, (256, 256)).astype(np.float32)
        if day == 5:
            data[MARK_Y, MARK_X] = MARK_VALUE
        header = fits.Header()
        header["EXPSTART"] = 60000.0 + day
        path = root / f"csm_day{day:03d}_blob.fits"
        fits.PrimaryHDU(data, header=header).writeto(path)
        paths.append(path)
    url = f"sqlite:///{root / 'bw.db'}"
    with open_database(url).begin() as s:
        s.add_all(
            [
                Image(
                    id=i + 1,
                    path=str(p),
                    sha256=f"{i:064x}",
                    mjd=60000.0 + i,
                    rows=256,
                    cols=256,
                    status="processed" if i == 5 else "registered",
                )
                for i, p in enumerate(paths)
            ]
        )
        s.add(
            Run(
                id=1,
                image_id=6,
                blobwatch_version="t",
                threshold=0.5,
                max_probability=0.9,
                parameters={
                    "reference_paths": [str(p) for p in paths[:5]],
                    "register": False,
                    "min_references": 5,
                },
            )
        )
        s.add_all(
            [
                Candidate(
                    id=1,
                    run_id=1,
                    image_id=6,
                    x=30.0,
                    y=90.0,
                    probability=0.9,
                    radius=6.0,
                    status="new",
                    alerted=True,
                ),
                Candidate(
                    id=2,
                    run_id=1,
                    image_id=6,
                    x=100.0,
                    y=25.0,
                    probability=0.7,
                    radius=6.0,
                    status="new",
                    alerted=True,
                ),
            ]
        )
        s.add(Blob(id=1, x=60.0, y=100.0, radius=5.0, depth=0.1, source="import", label="old-1"))
    return url


def _viewer_ready(page, timeout: float = 180_000) -> None:
    """Wait for the viewer's pixels, then scroll it into view (mouse positions are on screen)."""
    page.wait_for_selector("div.viewer[data-state=ready]", timeout=timeout)
    page.locator("div.viewer").scroll_into_view_if_needed()


def _screen_xy(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the 0-based pixel (x, y) in the first viewer."""
    sx, sy = page.evaluate(
        """([x, y]) => {
        const v = window.blobwatchViewers[0], view = Bokeh.index.get_one(v.fig);
        const rect = view.canvas_view.el.getBoundingClientRect();
        return [rect.left + view.frame.x_scale.compute(x), rect.top + view.frame.y_scale.compute(y)];
    }""",
        [x, y],
    )
    return float(sx), float(sy)


def _ranges(page) -> tuple[float, float, float, float]:
    return tuple(
        page.evaluate("""() => { const f = window.blobwatchViewers[0].fig;
        return [f.x_range.start, f.x_range.end, f.y_range.start, f.y_range.end]; }""")
    )


def test_viewer_zooms_pans_and_reads_out_the_pixel_under_the_cursor(pixel_db: str) -> None:
    """With the app's CSP in force: the viewer loads, the wheel zooms in about the cursor, a drag
    pans, and the readout gives x, y (0-based and DS9) and the value of the pixel under it;
    the scale and colour-map controls change the colour mapper."""
    from blobwatch.web.app import create_app
    from blobwatch.web.testing import browser_page, serve_in_thread

    errors: list[str] = []
    with serve_in_thread(create_app(pixel_db)) as base, browser_page(bypass_csp=False) as page:
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/images/6")
        _viewer_ready(page)
        assert page.locator("div.viewer").get_attribute("data-kind") == "difference"
        page.locator("select[name=kind]").select_option("image")
        page.wait_for_selector("div.viewer[data-kind=image][data-state=ready]", timeout=180_000)

        full = _ranges(page)
        assert full == pytest.approx((-0.5, 255.5, -0.5, 255.5))
        page.mouse.move(*_screen_xy(page, MARK_X, MARK_Y))
        for _ in range(4):
            page.mouse.wheel(0, -300)
        page.wait_for_function(
            "() => { const f = window.blobwatchViewers[0].fig;"
            " return f.x_range.end - f.x_range.start < 150; }",
            timeout=60_000,
        )
        page.wait_for_timeout(500)  # the last wheel events
        zoomed = _ranges(page)
        assert zoomed[1] - zoomed[0] < 0.6 * (full[1] - full[0])  # zoomed in ...
        assert zoomed[0] < MARK_X < zoomed[1] and zoomed[2] < MARK_Y < zoomed[3]  # ... about the cursor
        # pan: drag 100 screen pixels to the left shows pixels further right
        sx, sy = _screen_xy(page, MARK_X, MARK_Y)
        page.mouse.move(sx, sy)
        page.mouse.down()
        page.mouse.move(sx - 50, sy, steps=5)
        page.mouse.move(sx - 100, sy, steps=5)
        page.mouse.up()
        page.wait_for_function(
            f"() => window.blobwatchViewers[0].fig.x_range.start > {zoomed[0] + 1}", timeout=60_000
        )
        panned = _ranges(page)
        assert panned[0] > zoomed[0] + 1 and panned[1] - panned[0] == pytest.approx(zoomed[1] - zoomed[0])

        page.mouse.move(*_screen_xy(page, MARK_X + 0.2, MARK_Y - 0.2))  # inside the pixel
        readout = page.locator(".viewer-readout")
        page.wait_for_function(
            f"() => document.querySelector('.viewer-readout').dataset.x === '{MARK_X}'", timeout=60_000
        )
        assert readout.inner_text().split() == [
            "x",
            str(MARK_X),
            "y",
            str(MARK_Y),
            "(DS9",
            f"{MARK_X + 1},",
            f"{MARK_Y + 1})",
            "image",
            "5.00000",
        ]
        page.mouse.move(*_screen_xy(page, MARK_X + 1, MARK_Y))
        page.wait_for_function(
            f"() => document.querySelector('.viewer-readout').dataset.x === '{MARK_X + 1}'", timeout=60_000
        )
        x, y, value = (readout.get_attribute(f"data-{k}") for k in ("x", "y", "value"))
        assert (int(x), int(y)) == (MARK_X + 1, MARK_Y) and abs(float(value) - 1.0) < 0.02

        viewer = page.locator("div.viewer")
        zscale = float(viewer.get_attribute("data-high"))
        page.locator("select[name=scale]").select_option("minmax")
        assert float(viewer.get_attribute("data-high")) == pytest.approx(MARK_VALUE)
        page.locator("select[name=scale]").select_option("99")
        assert float(viewer.get_attribute("data-high")) < 1.1 and zscale < 1.1
        page.locator("select[name=cmap]").select_option("viridis")
        first = page.evaluate("() => window.blobwatchViewers[0].mapper.palette[0]")
        assert first.lower() == "#440154"  # viridis starts dark purple
    assert not errors, errors


def test_clicking_a_circle_opens_the_candidate(pixel_db: str) -> None:
    from blobwatch.web.app import create_app
    from blobwatch.web.testing import browser_page, serve_in_thread

    with serve_in_thread(create_app(pixel_db)) as base, browser_page() as page:
        page.goto(f"{base}/")
        _viewer_ready(page)
        with page.expect_navigation(timeout=120_000):
            page.mouse.click(*_screen_xy(page, 100.0, 25.0))
        assert page.url == f"{base}/candidates/2"
        assert page.locator("h1").inner_text() == "Candidate #2"
        # the candidate page's viewer starts zoomed on it, and its catalog blob circle opens the table
        _viewer_ready(page)
        x0, x1, y0, y1 = _ranges(page)
        assert x0 <= 100.0 <= x1 and y0 <= 25.0 <= y1
        with page.expect_navigation(timeout=120_000):
            page.mouse.click(*_screen_xy(page, 60.0, 100.0))
        assert page.url == f"{base}/blobs?blob=1#blob-1"
        assert page.locator("#catalog tbody tr").count() == 1
