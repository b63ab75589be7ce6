"""Tests of the review web app (`blobwatch.web`) with FastAPI's test client.

The database is built directly through the monitor's models on small synthetic 256x256 images:
five references and a current image with one new dark blob.
"""

from __future__ import annotations

import io
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from sqlalchemy import select

with warnings.catch_warnings():  # starlette's notice about httpx, not ours
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from blobwatch.monitor.db import (
    Blob,
    Candidate,
    Image,
    Run,
    SubframePrediction,
    open_database,
)
from blobwatch.web import create_app
from blobwatch.web.app import WEB_CACHE
from blobwatch.web.security import (
    AUTH_COOKIE,
    CSRF_COOKIE,
    CSRF_FIELD,
    TOKEN_HEADER,
    FailureThrottle,
    is_loopback,
)

SIZE = 256
BLOB_X, BLOB_Y, BLOB_R, BLOB_DEPTH = 100.0, 150.0, 6.0, 0.15
pytestmark = pytest.mark.filterwarnings("ignore::blobwatch.difference.FewReferencesWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_image(path: Path, mjd: float, seed: int, blob: bool) -> None:
    rng = np.random.default_rng(seed)
    data = 1.0 + rng.normal(0.0, 0.003, (SIZE, SIZE)).astype(np.float32)
    # two old blobs present in every image
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for bx, by in ((40.0, 40.0), (200.0, 210.0)):
        data *= 1.0 - 0.1 * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * 4.0**2))
    if blob:
        data *= 1.0 - BLOB_DEPTH * np.exp(
            -((xx - BLOB_X) ** 2 + (yy - BLOB_Y) ** 2) / (2 * (BLOB_R / 2) ** 2)
        )
    header = fits.Header()
    header["EXPSTART"] = mjd
    header["FILTER"] = "F153M"
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(path)


def _png_bytes() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@pytest.fixture(scope="module")
def monitor_db(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A monitor database: 6 images, the newest processed with 16 subframes and 3 candidates."""
    root = tmp_path_factory.mktemp("web")
    reports = root / "reports"
    (reports / "images" / "6").mkdir(parents=True)
    (reports / "images" / "6" / "saliency_05.png").write_bytes(_png_bytes())
    paths = []
    for day in range(6):
        path = root / f"csm_day{day:03d}_blob.fits"
        _write_image(path, 60000.0 + day, seed=day, blob=(day == 5))
        paths.append(path)
    url = f"sqlite:///{root / 'blobwatch.db'}"
    Session = open_database(url)
    with Session.begin() as s:
        images = [
            Image(
                path=str(p),
                sha256=f"{i:064x}",
                mjd=60000.0 + i,
                filter="F153M",
                status="processed" if i == 5 else "registered",
            )
            for i, p in enumerate(paths)
        ]
        s.add_all(images)
        s.add_all(
            [
                Blob(x=40.0, y=40.0, radius=5.0, depth=0.1, source="import", label="old-1"),
                Blob(x=200.0, y=210.0, radius=5.0, depth=0.1, source="import", label="old-2"),
            ]
        )
        s.flush()
        run = Run(
            image_id=images[5].id,
            blobwatch_version="test",
            threshold=0.5,
            max_probability=0.97,
            parameters={
                "reference_paths": [str(p) for p in paths[:5]],
                "register": False,
                "min_references": 5,
                "offsets": [[0.0, 0.0]] * 4 + [[0.05, -0.2]],
            },
            report_path=str(reports / "images" / "6" / "report.html"),
        )
        s.add(run)
        s.flush()
        for index in range(16):
            row, col = divmod(index, 4)
            prob = 0.97 if index == 5 else 0.02 * index
            s.add(
                SubframePrediction(
                    run_id=run.id,
                    index=index,
                    x0=col * 64,
                    y0=row * 64,
                    size=64,
                    probability=prob,
                    flagged=prob > 0.5,
                    saliency_path="images/6/saliency_05.png" if index == 5 else None,
                )
            )
        s.add_all(
            [
                Candidate(
                    run_id=run.id,
                    image_id=images[5].id,
                    x=BLOB_X + 0.4,
                    y=BLOB_Y - 0.3,
                    probability=0.97,
                    significance=12.0,
                    radius=BLOB_R,
                    subframe=5,
                    status="new",
                ),
                Candidate(
                    run_id=run.id,
                    image_id=images[5].id,
                    x=230.0,
                    y=20.0,
                    probability=0.81,
                    significance=5.0,
                    radius=5.0,
                    subframe=3,
                    status="new",
                ),
                Candidate(
                    run_id=run.id,
                    image_id=images[5].id,
                    x=40.0,
                    y=40.0,
                    probability=0.6,
                    significance=4.0,
                    radius=5.0,
                    subframe=0,
                    status="known",
                    known_blob_id=1,
                ),
            ]
        )
    return {"url": url, "reports": reports, "paths": paths}


@pytest.fixture
def fresh_db(monitor_db: dict, tmp_path: Path) -> str:
    """A private copy of the monitor database for tests that write."""
    src = Path(monitor_db["url"].removeprefix("sqlite:///"))
    dst = tmp_path / "copy.db"
    import sqlite3

    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return f"sqlite:///{dst}"


def _client(app: Any) -> TestClient:
    """A test client that talks to the app as a browser on this machine does (Host 127.0.0.1)."""
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def client(monitor_db: dict) -> TestClient:
    return _client(create_app(monitor_db["url"], monitor_db["reports"]))


def _csrf(client: TestClient, page: str = "/queue") -> str:
    html = client.get(page).text
    match = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _ids(client: TestClient, status: str) -> list[int]:
    return [c["id"] for c in client.get("/api/candidates", params={"status": status}).json()]


# ------------------------------------------------------------------------------ pages


@pytest.mark.parametrize(
    "path, text",
    [
        ("/", "Today: csm_day005_blob.fits"),
        ("/queue", "Review queue"),
        ("/blobs", "2 known blobs"),
        ("/history", "6 images"),
        ("/api", "/api/candidates"),
        ("/images/1", "csm_day000_blob.fits"),
        ("/images/6", "Subframe probabilities"),
        ("/candidates/1", "Candidate #1"),
        ("/unlock", "no token"),
    ],
)
def test_pages_render(client: TestClient, path: str, text: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert text in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path, kind",
    [
        ("/static/style.css", "text/css"),
        ("/static/app.js", "javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
def test_static_files(client: TestClient, path: str, kind: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and kind in response.headers["content-type"]


def test_today_shows_grid_candidates_and_saliency(client: TestClient) -> None:
    html = client.get("/").text
    assert html.count('<td class="heat') == 16
    assert 'class="heat9 flag"' in html  # p = 0.97, above the threshold
    assert "/subframes/" in html and "saliency.png" in html
    assert "Candidate #1" in html and "Candidate #2" in html
    assert "Candidate #3" not in html  # a known blob: recorded, not alerted
    assert "DS9 101.4, 150.7" in html and "image; circle(101.40,150.70,6.0)" in html
    assert "5 images, not registered" in html and "largest offset 0.20 px" in html
    assert 'href="/subframes/6/saliency.png">map of subframe 5' in html  # candidate 1's subframe
    assert 'href="/images/5" rel="prev"' in html and "newest →" in html
    assert 'rel="next"' in client.get("/images/1").text and "← oldest" in client.get("/images/1").text


def test_queue_lists_open_candidates_with_forms(client: TestClient) -> None:
    html = client.get("/queue").text
    assert html.count('data-action="confirm"') == 2
    for reason in ("dip", "cosmic ray", "persistence", "bad pixel", "other"):
        assert f'<option value="{reason}">' in html


def test_blob_map_table_and_downloads(client: TestClient) -> None:
    html = client.get("/blobs").text
    assert 'table class="data sortable"' in html and 'id="blob-2"' in html
    ecsv = client.get("/catalog.ecsv")
    assert ecsv.status_code == 200
    table = Table.read(ecsv.text, format="ascii.ecsv")
    assert sorted(table["label"]) == ["old-1", "old-2"]
    for frame, size, centre in (("1014", 1014, 35), ("1024", 1024, 40)):
        mask = client.get("/catalog/mask.fits", params={"frame": frame})
        assert mask.status_code == 200
        with fits.open(io.BytesIO(mask.content)) as hdul:
            dq = hdul["DQ"].data
        assert dq.shape == (size, size)
        assert dq[centre, centre] == 512 and dq[500, 500] == 0
    assert client.get("/catalog/mask.fits", params={"frame": "999"}).status_code == 422


def _regions(text: str) -> dict[str, list[Any]]:
    from regions import Regions

    shapes = Regions.parse(text, format="ds9")
    return {tag: [r for r in shapes if r.meta["tag"] == [tag]] for tag in ("candidate", "blob")}


def test_region_files_put_circles_on_the_candidates_and_blobs(client: TestClient) -> None:
    response = client.get("/images/6/candidates.reg")
    assert response.status_code == 200
    assert 'filename="image6_candidates.reg"' in response.headers["content-disposition"]
    shapes = _regions(response.text)
    candidates = client.get("/api/images/6").json()["candidates"]
    assert [(r.center.x, r.center.y, r.radius) for r in shapes["candidate"]] == [
        pytest.approx((c["x"], c["y"], c["radius"])) for c in candidates
    ]
    assert "circle(101.40000000,150.70000000,6.00000000)" in response.text  # DS9 is 1-based
    assert shapes["candidate"][0].visual["edgecolor"] == "red"  # open
    assert shapes["candidate"][2].visual["edgecolor"] == "green"  # on a known blob
    catalog = _regions(client.get("/catalog.reg").text)
    assert [(r.center.x, r.center.y, r.meta["text"]) for r in catalog["blob"]] == [
        (40.0, 40.0, "blob 1"),
        (200.0, 210.0, "blob 2"),
    ]
    assert catalog["candidate"] == [] and len(shapes["blob"]) == 2
    assert 'href="/catalog.reg"' in client.get("/blobs").text
    assert 'href="/images/6/candidates.reg"' in client.get("/").text


def test_fits_downloads_hold_the_pixels_and_their_provenance(client: TestClient, monitor_db: dict) -> None:
    current = fits.getdata(monitor_db["paths"][5])
    response = client.get("/images/6/image.fits")
    assert response.status_code == 200 and response.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(response.content)) as hdul:
        np.testing.assert_array_equal(hdul[0].data, current)
        header = hdul[0].header
    assert header["SRCNAME"] == "csm_day005_blob.fits" and header["SRCSHA"] == f"{5:064x}"
    assert header["RUNID"] == 1 and header["NREFS"] == 5 and header["REGISTER"] is False
    assert header["REFFIRST"] == "csm_day000_blob.fits" and header["REFLAST"] == "csm_day004_blob.fits"
    assert header["CONTENT"] == "current image" and "CTYPE1" not in header  # pixels only, no WCS
    for kind in ("difference", "stack"):
        with fits.open(io.BytesIO(client.get(f"/images/6/{kind}.fits").content)) as hdul:
            assert hdul[0].data.shape == (SIZE, SIZE) and hdul[0].header["SRCMJD"] == 60005.0
    cand = client.get("/api/candidates/1").json()
    with fits.open(io.BytesIO(client.get("/candidates/1/image.fits").content)) as hdul:
        cut, header = hdul[0].data, hdul[0].header
    x0, y0 = round(cand["x"]) - 24, round(cand["y"]) - 24
    assert cut.shape == (49, 49) and (header["XORIGIN"], header["YORIGIN"]) == (x0, y0)
    assert (header["LTV1"], header["LTV2"]) == (-x0, -y0) and header["CANDID"] == 1
    np.testing.assert_array_equal(cut, current[y0 : y0 + 49, x0 : x0 + 49])
    with fits.open(io.BytesIO(client.get("/candidates/2/difference.fits").content)) as hdul:
        assert np.isnan(hdul[0].data[0, -1])  # candidate 2 at x=230, y=20: the box leaves the image
    assert client.get("/images/1/difference.fits").status_code == 404  # never processed
    assert 'href="/candidates/1/stack.fits"' in client.get("/candidates/1").text


@pytest.mark.parametrize(
    "path",
    [
        "/images/6/difference.png",
        "/images/6/stack.png",
        "/images/6/image.png",
        "/images/1/image.png",
        "/candidates/1/image.png",
        "/candidates/1/stack.png",
        "/candidates/1/difference.png",
        "/subframes/6/saliency.png",
        "/blobs/map.png",
        "/history.png",
    ],
)
def test_figures_are_png(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC)


# ------------------------------------------------------------------------------ JSON API


def test_api_images(client: TestClient) -> None:
    images = client.get("/api/images").json()
    assert next(im["name"] for im in images) == "csm_day005_blob.fits"
    assert len(images) == 6
    newest = client.get("/api/images/6").json()
    assert newest["max_probability"] == pytest.approx(0.97)
    assert newest["alert"] is True and newest["n_open"] == 2 and newest["known_blobs"] == 2
    assert len(newest["subframes"]) == 16 and len(newest["candidates"]) == 3
    assert client.get("/api/images/1").json()["run_id"] is None


def test_api_candidates_and_catalog(client: TestClient) -> None:
    assert _ids(client, "new") == [1, 2]
    assert _ids(client, "known") == [3]
    one = client.get("/api/candidates/1").json()
    assert one["x_ds9"] == pytest.approx(one["x"] + 1) and one["y_ds9"] == pytest.approx(one["y"] + 1)
    assert client.get("/api/candidates", params={"status": "bogus"}).status_code == 422
    catalog = client.get("/api/catalog").json()
    assert [b["label"] for b in catalog] == ["old-1", "old-2"]
    assert client.get("/api/catalog/2").json()["x"] == pytest.approx(200.0)


def test_openapi_documents_the_api(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    for path in (
        "/api/images",
        "/api/images/{image_id}",
        "/api/candidates",
        "/api/candidates/{candidate_id}",
        "/api/catalog",
        "/catalog.ecsv",
    ):
        assert path in schema["paths"]


def test_api_docs_work_offline(client: TestClient) -> None:
    """/api/docs is the server-rendered API page: nothing loaded from another host, CSP as everywhere."""
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.url.path == "/api"
    assert "/api/candidates/{candidate_id}" in response.text and "CandidateView" in response.text
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//(?!127\.0\.0\.1/)""", response.text)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/images/99",
        "/candidates/99",
        "/api/images/99",
        "/api/candidates/99",
        "/api/catalog/99",
        "/images/99/difference.png",
        "/candidates/99/image.png",
        "/subframes/99/saliency.png",
        "/images/99/candidates.reg",
        "/images/99/stack.fits",
        "/candidates/99/image.fits",
        "/subframes/1/saliency.png",  # exists, but has no saliency map
        "/images/1/difference.png",  # exists, but was never processed
        "/nonexistent",
    ],
)
def test_unknown_ids_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    if path.startswith("/api") or path.endswith((".png", ".fits", ".reg")):
        assert "detail" in response.json()
    else:
        assert "not found" in response.text


def test_no_path_from_the_request_reaches_the_file_system(client: TestClient) -> None:
    for path in (
        "/images/..%2F..%2Fetc%2Fpasswd/image.png",
        "/images/6/..%2F..%2Fetc.png",
        "/static/..%2F..%2F..%2Fpyproject.toml",
        "/images/6/report.html",
    ):
        assert client.get(path).status_code in (404, 422)


def test_every_worker_thread_gets_a_database_connection_at_once(monitor_db: dict) -> None:
    """20 clients once exhausted SQLAlchemy's default pool (5 + 10): requests that held a session
    while a figure rendered made the others wait 30 s and fail with 500."""
    import threading

    from blobwatch.web.app import DB_CONNECTIONS

    app = create_app(monitor_db["url"], monitor_db["reports"])
    engine = app.state.session_factory.kw["bind"]
    held, started = [], threading.Barrier(DB_CONNECTIONS)

    def hold() -> None:
        held.append(engine.connect())  # a connection per thread, all held together
        started.wait(timeout=10)

    threads = [threading.Thread(target=hold) for _ in range(DB_CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    try:
        assert DB_CONNECTIONS >= 40 and len(held) == DB_CONNECTIONS and not started.broken
    finally:
        for conn in held:
            conn.close()


# ------------------------------------------------------------------------------ write actions


def test_confirm_adds_the_measured_blob_to_the_catalog(fresh_db: str, monitor_db: dict) -> None:
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    token = _csrf(client)
    response = client.post(
        "/candidates/1/confirm",
        data={CSRF_FIELD: token, "reviewer": "Ada", "next": "/queue"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].startswith("/queue?")
    page = client.get(response.headers["location"]).text
    assert "Candidate #1 confirmed: blob #3 added to the catalog." in page
    blob = client.get("/api/catalog/3").json()
    assert blob["candidate_id"] == 1 and blob["source"] == "confirmed"
    assert blob["x"] == pytest.approx(BLOB_X, abs=1.0) and blob["y"] == pytest.approx(BLOB_Y, abs=1.0)
    assert 0.05 < blob["depth"] < 0.3
    cand = client.get("/api/candidates/1").json()
    assert cand["status"] == "confirmed" and cand["reviewed_by"] == "Ada" and cand["blob_id"] == 3
    assert "blob #3" in client.get("/blobs").text or 'id="blob-3"' in client.get("/blobs").text
    assert client.cookies.get("bw_reviewer") == "Ada"
    # confirming twice is refused by the catalog, shown as a conflict
    again = client.post("/candidates/1/confirm", data={CSRF_FIELD: token, "reviewer": "Ada"})
    assert again.status_code == 409 and "already confirmed" in again.text


def test_confirm_after_viewing_measures_in_the_stack_in_memory(
    fresh_db: str, monitor_db: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobwatch.monitor import catalog

    with open_database(fresh_db)() as session:  # what the command line would measure
        expected = catalog.measure_candidate(session, session.get(Candidate, 1))
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    assert client.get("/images/6/stack.f32").status_code == 200  # the candidate page's viewer

    def reread(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-read the images although their stack is in memory")

    monkeypatch.setattr(catalog, "rebuild_difference", reread)
    response = client.post("/candidates/1/confirm", data={CSRF_FIELD: _csrf(client), "reviewer": "Ada"})
    assert response.status_code == 200
    blob = client.get("/api/catalog/3").json()
    assert blob["candidate_id"] == 1
    assert [blob["x"], blob["y"], blob["radius"], blob["depth"]] == pytest.approx(
        [expected.x, expected.y, expected.radius, expected.depth]
    )


def test_confirm_of_a_known_blob_is_a_conflict(fresh_db: str, monitor_db: dict) -> None:
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    response = client.post("/candidates/3/confirm", data={CSRF_FIELD: _csrf(client), "reviewer": "Ada"})
    assert response.status_code == 409 and "lies on known blob 1" in response.text
    assert len(client.get("/api/catalog").json()) == 2
    assert client.get("/api/candidates/3").json()["status"] == "known"


def test_reject_records_the_reason(fresh_db: str, monitor_db: dict) -> None:
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    token = _csrf(client)
    response = client.post(
        "/candidates/2/reject",
        data={CSRF_FIELD: token, "reviewer": "Bo", "reason": "cosmic ray", "note": "sharp edge"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cand = client.get("/api/candidates/2").json()
    assert cand["status"] == "rejected" and cand["reason"] == "cosmic ray: sharp edge"
    assert cand["reviewed_by"] == "Bo"
    assert _ids(client, "new") == [1]
    assert "Candidate #2 rejected." in client.get(response.headers["location"]).text


@pytest.mark.parametrize(
    "data, status, message",
    [
        ({"reviewer": "Bo", "reason": "aliens"}, 422, "reason must be one of"),
        ({"reviewer": "", "reason": "dip"}, 422, "reviewer"),
        ({"reviewer": "Bo"}, 422, "reason must be one of"),
    ],
)
def test_reject_needs_a_valid_reason_and_reviewer(
    client: TestClient, data: dict, status: int, message: str
) -> None:
    response = client.post("/candidates/2/reject", data={CSRF_FIELD: _csrf(client), **data})
    assert response.status_code == status and message in response.text
    assert 2 in _ids(client, "new")


@pytest.mark.parametrize(
    "action, data, message",
    [
        ("confirm", {"reviewer": "  "}, "give your name (at most 128 characters) as reviewer"),
        ("confirm", {}, "give your name (at most 128 characters) as reviewer"),
        ("reject", {"reason": "dip"}, "give your name (at most 128 characters) as reviewer"),
        ("reject", {"reviewer": "Bo", "reason": "aliens"}, "reason must be one of"),
    ],
)
def test_an_incomplete_review_form_comes_back_with_the_problem_beside_it(
    client: TestClient, action: str, data: dict, message: str
) -> None:
    """Not a bare error page: the candidate's form again, the problem shown inline, nothing decided."""
    response = client.post(f"/candidates/2/{action}", data={CSRF_FIELD: _csrf(client), **data})
    assert response.status_code == 422
    html = response.text
    assert "<h1>Candidate #2</h1>" in html and "<h1>422" not in html
    form = html[html.index('<form class="review"') : html.index("</form>")]
    assert f'<p class="form-error" role="alert">{message}' in form
    assert re.search(r'<input name="reviewer"[^>]* autofocus>', form) and 'data-action="confirm"' in form
    assert 2 in _ids(client, "new")


def test_write_actions_on_unknown_ids_are_404(client: TestClient) -> None:
    token = _csrf(client)
    assert client.post("/candidates/99/confirm", data={CSRF_FIELD: token, "reviewer": "A"}).status_code == 404
    assert (
        client.post(
            "/candidates/99/reject", data={CSRF_FIELD: token, "reviewer": "A", "reason": "dip"}
        ).status_code
        == 404
    )


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 10**30])
def test_ids_beyond_64_bits_are_404_not_500(client: TestClient, big: int) -> None:
    """SQLite cannot bind such an id (OverflowError): it names nothing, on every id route (issue 11, item 9)."""
    for path in (
        f"/images/{big}",
        f"/candidates/{big}",
        f"/api/images/{big}",
        f"/api/candidates/{big}",
        f"/api/catalog/{big}",
        f"/images/{big}/difference.png",
        f"/candidates/{big}/image.fits",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
    assert "detail" in client.get(f"/api/candidates/{big}").json()
    assert "not found" in client.get(f"/images/{big}").text
    token = _csrf(client)
    assert (
        client.post(f"/candidates/{big}/confirm", data={CSRF_FIELD: token, "reviewer": "A"}).status_code
        == 404
    )


# ------------------------------------------------------------------------------ security


def test_csrf_token_is_required(client: TestClient) -> None:
    form = {"reviewer": "Eve", "reason": "dip"}
    assert client.post("/candidates/2/reject", data=form).status_code == 403
    assert client.post("/candidates/2/reject", data={**form, CSRF_FIELD: "0" * 64}).status_code == 403
    # a token from another cookie (another browser) does not match this client's cookie
    other = _client(client.app)
    assert other.post("/candidates/2/reject", data={**form, CSRF_FIELD: _csrf(client)}).status_code == 403
    assert 2 in _ids(client, "new")


@pytest.mark.parametrize(
    "header", [{"origin": "http://evil.example"}, {"origin": "null"}, {"referer": "http://evil.example/page"}]
)
def test_cross_site_posts_are_refused(client: TestClient, header: dict) -> None:
    response = client.post(
        "/candidates/2/reject",
        headers=header,
        data={CSRF_FIELD: _csrf(client), "reviewer": "Eve", "reason": "dip"},
    )
    assert response.status_code == 403 and "cross-site" in response.text
    assert 2 in _ids(client, "new")


def test_same_origin_post_is_accepted(fresh_db: str, monitor_db: dict) -> None:
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    response = client.post(
        "/candidates/2/reject",
        headers={"origin": "http://127.0.0.1"},
        data={CSRF_FIELD: _csrf(client), "reviewer": "Bo", "reason": "dip"},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_write_token_required_when_exposed(fresh_db: str, monitor_db: dict) -> None:
    client = _client(create_app(fresh_db, monitor_db["reports"], token="s3cret", require_token=True))
    form = {CSRF_FIELD: _csrf(client, "/unlock"), "reviewer": "Bo", "reason": "dip"}
    refused = client.post("/candidates/2/reject", data=form)
    assert refused.status_code == 403 and "write token required" in refused.text
    assert "unlock with the write token" in client.get("/queue").text
    wrong = client.post("/candidates/2/reject", data=form, headers={TOKEN_HEADER: "guess"})
    assert wrong.status_code == 403
    assert client.post("/unlock", data={CSRF_FIELD: form[CSRF_FIELD], "token": "guess"}).status_code == 403
    assert 2 in _ids(client, "new")
    # the header works for scripts ...
    ok = client.post(
        "/candidates/2/reject", data=form, headers={TOKEN_HEADER: "s3cret"}, follow_redirects=False
    )
    assert ok.status_code == 303
    # ... and the unlock form for browsers
    unlocked = client.post(
        "/unlock", data={CSRF_FIELD: form[CSRF_FIELD], "token": "s3cret"}, follow_redirects=False
    )
    assert unlocked.status_code == 303
    assert 'data-action="confirm"' in client.get("/queue").text
    again = client.post("/candidates/1/reject", data=form, follow_redirects=False)
    assert again.status_code == 303


def _unlock(client: TestClient, token: str) -> Any:
    return client.post(
        "/unlock", data={CSRF_FIELD: _csrf(client, "/unlock"), "token": token}, follow_redirects=False
    )


def test_each_browser_gets_its_own_write_session_that_can_be_revoked(monitor_db: dict) -> None:
    """Issue 11, item 9: the write cookie is random per browser, not one value for all."""
    app = create_app(monitor_db["url"], monitor_db["reports"], token="s3cret", require_token=True)
    ada, bo = _client(app), _client(app)
    assert _unlock(ada, "s3cret").status_code == 303 and _unlock(bo, "s3cret").status_code == 303
    ada_cookie, bo_cookie = ada.cookies.get(AUTH_COOKIE), bo.cookies.get(AUTH_COOKIE)
    assert ada_cookie and bo_cookie and ada_cookie != bo_cookie
    locked = "unlock with the write token"
    assert locked not in ada.get("/queue").text and locked not in bo.get("/queue").text
    app.state.guard.revoke(ada_cookie)  # one browser's session ends, the other's goes on
    assert locked in ada.get("/queue").text and locked not in bo.get("/queue").text
    forged = _client(app)  # a cookie value the app never gave out is no session
    forged.cookies.set(AUTH_COOKIE, "x" * 43)
    assert locked in forged.get("/queue").text


def test_wrong_write_tokens_are_throttled_per_client(monitor_db: dict) -> None:
    """Issue 11, item 9: /unlock (and the token header) allow 5 wrong guesses a minute, then 429."""
    app = create_app(monitor_db["url"], monitor_db["reports"], token="s3cret", require_token=True)
    client = _client(app)
    token = _csrf(client, "/unlock")
    for _ in range(4):
        assert client.post("/unlock", data={CSRF_FIELD: token, "token": "guess"}).status_code == 403
    header_guess = client.post(
        "/candidates/2/reject",
        headers={TOKEN_HEADER: "guess"},
        data={CSRF_FIELD: token, "reviewer": "Eve", "reason": "dip"},
    )
    assert header_guess.status_code == 403  # the fifth wrong token
    blocked = client.post("/unlock", data={CSRF_FIELD: token, "token": "s3cret"})  # even the right one
    assert blocked.status_code == 429 and 0 < int(blocked.headers["retry-after"]) <= 60
    assert "too many wrong write tokens" in blocked.text
    assert (
        client.post(
            "/candidates/2/reject",
            headers={TOKEN_HEADER: "s3cret"},
            data={CSRF_FIELD: token, "reviewer": "Eve", "reason": "dip"},
        ).status_code
        == 429
    )
    assert 2 in _ids(client, "new")


def test_failure_throttle_forgets_failures_after_its_window() -> None:
    now = [1000.0]
    throttle = FailureThrottle(limit=2, window=60.0, clock=lambda: now[0])
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") == 60.0 and throttle.retry_after("b") == 0.0
    now[0] += 59.0
    assert throttle.retry_after("a") == pytest.approx(1.0)
    now[0] += 1.0
    assert throttle.retry_after("a") == 0.0


def test_failure_throttle_remembers_at_most_max_clients() -> None:
    """A bounded memory (`blobwatch.lru.LRUCache`): the least recently seen client is forgotten."""
    throttle = FailureThrottle(limit=1, window=60.0, clock=lambda: 1000.0, max_clients=2)
    throttle.failed("a")
    throttle.failed("b")
    assert throttle.retry_after("a") == 60.0  # "a" asked again: now "b" is the least recent
    throttle.failed("c")
    assert [throttle.retry_after(c) for c in "abc"] == [60.0, 0.0, 60.0]


@pytest.mark.parametrize(("scheme", "secure"), [("https", True), ("http", False)])
def test_cookies_are_secure_when_served_over_https(
    fresh_db: str, monitor_db: dict, scheme: str, secure: bool
) -> None:
    app = create_app(fresh_db, monitor_db["reports"], token="s3cret", require_token=True)
    client = TestClient(app, base_url=f"{scheme}://127.0.0.1")
    first = client.get("/unlock")
    assert ("secure" in first.headers["set-cookie"].lower()) is secure
    unlocked = _unlock(client, "s3cret")
    assert unlocked.status_code == 303
    assert ("secure" in unlocked.headers["set-cookie"].lower()) is secure
    # the reviewer's name is remembered in a cookie too, with the same flag
    rejected = client.post(
        "/candidates/2/reject",
        data={CSRF_FIELD: _csrf(client), "reviewer": "Ada", "reason": "dip"},
        follow_redirects=False,
    )
    assert rejected.status_code == 303 and "bw_reviewer=Ada" in rejected.headers["set-cookie"]
    assert ("secure" in rejected.headers["set-cookie"].lower()) is secure


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8000", "LOCALHOST.", "127.0.0.2:80", "[::1]:8000"])
def test_loopback_host_names_are_answered(client: TestClient, host: str) -> None:
    assert client.get("/queue", headers={"host": host}).status_code == 200


def test_dns_rebinding_gets_400_and_no_token(fresh_db: str, monitor_db: dict) -> None:
    """A page served from a hostile name that resolves to 127.0.0.1 sends that name as Host."""
    rebound = TestClient(
        create_app(fresh_db, monitor_db["reports"]), base_url="http://rebind.evil.example:8000"
    )
    page = rebound.get("/queue")
    assert page.status_code == 400 and "--allowed-host" in page.text
    assert CSRF_FIELD not in page.text and "set-cookie" not in page.headers
    for path in ("/", "/api/candidates", "/api/docs", "/images/6/difference.png", "/catalog.ecsv"):
        assert rebound.get(path).status_code == 400, path
    # even with a token read from the real page, a post with matching Host/Origin is refused
    local = _client(rebound.app)
    token = _csrf(local)
    response = rebound.post(
        "/candidates/2/reject",
        data={CSRF_FIELD: token, "reviewer": "Eve", "reason": "dip"},
        headers={
            "origin": "http://rebind.evil.example:8000",
            "cookie": f"{CSRF_COOKIE}={local.cookies[CSRF_COOKIE]}",
        },
    )
    assert response.status_code == 400
    assert 2 in _ids(local, "new")


def test_allowed_hosts_are_answered_besides_loopback(monitor_db: dict) -> None:
    app = create_app(
        monitor_db["url"], monitor_db["reports"], allowed_hosts=["Review.Example.org", "[fd00::5]"]
    )
    for base in (
        "http://review.example.org",
        "http://REVIEW.example.org:8000",
        "http://[fd00::5]:8000",
        "http://127.0.0.1",
    ):
        assert TestClient(app, base_url=base).get("/queue").status_code == 200, base
    assert TestClient(app, base_url="http://example.org").get("/queue").status_code == 400
    with pytest.raises(ValueError, match="not a host name"):
        create_app(monitor_db["url"], allowed_hosts=["http://review.example.org/"])


def test_require_token_needs_a_token(monitor_db: dict) -> None:
    with pytest.raises(ValueError, match="needs a non-empty token"):
        create_app(monitor_db["url"], require_token=True)


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("::", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# ------------------------------------------------------------------------------ CLI and empty DB


def test_serve_refuses_exposed_host_without_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from blobwatch.cli import main

    monkeypatch.delenv("BLOBWATCH_TOKEN", raising=False)
    code = main(["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--host", "0.0.0.0"])
    assert code == 2
    assert "set BLOBWATCH_TOKEN" in capsys.readouterr().err
    assert main(["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--port", "0"]) == 2


def test_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_database(url)  # as `blobwatch monitor` creates it
    client = _client(create_app(url))
    assert "No images in the database yet" in client.get("/").text
    assert "Nothing to review" in client.get("/queue").text
    assert "The catalog is empty" in client.get("/blobs").text
    assert client.get("/api/images").json() == []
    for path in ("/blobs/map.png", "/history.png"):
        assert client.get(path).content.startswith(PNG_MAGIC)
    assert Table.read(client.get("/catalog.ecsv").text, format="ascii.ecsv")["id"].size == 0


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/candidates/2", "/candidates/2?"),
        ("//evil.example/x", "/queue?"),
        ("/\\evil.example", "/queue?"),
        ("https://evil.example/", "/queue?"),
        ("/queue?x=1", "/queue?"),
    ],
)
def test_redirect_after_an_action_stays_on_this_server(
    fresh_db: str, monitor_db: dict, target: str, expected: str
) -> None:
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    response = client.post(
        "/candidates/2/reject",
        data={CSRF_FIELD: _csrf(client), "reviewer": "Dr. Bo Smith", "reason": "dip", "next": target},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].startswith(expected)
    assert 'value="Dr. Bo Smith"' in client.get("/queue").text  # remembered reviewer


def test_serve_builds_the_app_with_the_token_when_exposed(
    monkeypatch: pytest.MonkeyPatch, monitor_db: dict
) -> None:
    import uvicorn

    from blobwatch.cli import main

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    monkeypatch.setenv("BLOBWATCH_TOKEN", "s3cret")
    assert (
        main(
            [
                "serve",
                "--db",
                monitor_db["url"],
                "--host",
                "0.0.0.0",
                "--port",
                "8123",
                "--allowed-host",
                "review.example.org",
            ]
        )
        == 0
    )
    assert started["host"] == "0.0.0.0" and started["port"] == 8123
    for name, status in (("review.example.org", 200), ("0.0.0.0", 400), ("other.example.org", 400)):
        assert TestClient(started["app"], base_url=f"http://{name}:8123").get("/queue").status_code == status
    assert (
        main(["serve", "--db", monitor_db["url"], "--host", "192.0.2.7"]) == 0
    )  # its own address is allowed
    assert TestClient(started["app"], base_url="http://192.0.2.7:8000").get("/queue").status_code == 200
    assert main(["serve", "--db", monitor_db["url"], "--allowed-host", "host:8000"]) == 2
    guard = started["app"].state.guard
    assert guard.require_token and guard.token == "s3cret"
    assert main(["serve", "--db", monitor_db["url"]]) == 0
    assert started["host"] == "127.0.0.1" and not started["app"].state.guard.require_token


def test_startup_prepares_the_newest_image(monitor_db: dict) -> None:
    import threading

    app = create_app(monitor_db["url"], monitor_db["reports"])
    assert app.state.pixels.cached_ids() == []
    with _client(app):  # runs the lifespan: the newest image is loaded in a thread
        for thread in threading.enumerate():
            if thread.name == "blobwatch-warm":
                thread.join(60)
        assert app.state.pixels.cached_ids() == [6]


def test_missing_files_are_reported_not_crashed(fresh_db: str, monitor_db: dict) -> None:
    from sqlalchemy import update

    with open_database(fresh_db).begin() as s:
        s.execute(update(Image).where(Image.id == 6).values(path="/nonexistent/csm_day005_blob.fits"))
        s.execute(
            update(SubframePrediction)
            .where(SubframePrediction.id == 6)
            .values(saliency_path="images/6/gone.png")
        )
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    # (a figure made earlier is served from the cache, keyed by the file's checksum: the pixels are not)
    response = client.get("/images/6/difference.f32")
    assert response.status_code == 410 and "no longer readable" in response.json()["detail"]
    assert client.get("/subframes/6/saliency.png").status_code == 404
    assert client.get("/").status_code == 200  # the page itself still renders
    # --images finds files that moved, by file name
    moved = _client(create_app(fresh_db, monitor_db["reports"], images_dir=monitor_db["paths"][5].parent))
    assert moved.get("/images/6/difference.f32").status_code == 200


def test_a_decision_can_be_changed_on_the_candidate_page(fresh_db: str, monitor_db: dict) -> None:
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    token = _csrf(client)
    client.post("/candidates/1/confirm", data={CSRF_FIELD: token, "reviewer": "Ada"})
    page = client.get("/candidates/1").text
    assert "withdraw: reject as" in page and 'data-action="confirm"' not in page
    response = client.post(
        "/candidates/1/reject",
        data={CSRF_FIELD: token, "reviewer": "Ada", "reason": "dip", "next": "/candidates/1"},
        follow_redirects=False,
    )
    assert response.headers["location"].startswith("/candidates/1?")
    assert [b["label"] for b in client.get("/api/catalog").json()] == ["old-1", "old-2"]
    page = client.get("/candidates/1").text
    assert 'data-action="confirm"' in page and 'data-action="reject"' not in page
    assert "data-action" not in client.get("/candidates/3").text  # on a known blob: nothing to decide


def test_messages_are_not_echoed_from_the_url(client: TestClient) -> None:
    html = client.get(
        "/queue", params={"done": "confirmed", "candidate": "<script>x</script>", "blob": "1"}
    ).text
    assert "<script>x" not in html and 'class="flash' not in html
    assert (
        "Candidate #7 rejected." in client.get("/queue", params={"done": "rejected", "candidate": "7"}).text
    )


def test_rejecting_a_silent_linked_candidate_leaves_its_day_quiet(fresh_db: str, monitor_db: dict) -> None:
    """A candidate linked to an earlier one was never alerted; rejecting it is no alert either."""
    with open_database(fresh_db).begin() as s:
        run = Run(
            image_id=5,
            blobwatch_version="test",
            threshold=0.5,
            max_probability=0.118,
            parameters={},
            timings={},
        )
        s.add(run)
        s.flush()
        s.add(
            Candidate(
                run_id=run.id,
                image_id=5,
                x=BLOB_X,
                y=BLOB_Y,
                probability=0.118,
                radius=BLOB_R,
                status="linked",
                linked_to=1,
            )
        )
        s.flush()
        linked = s.scalars(select(Candidate.id).where(Candidate.image_id == 5)).one()
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    assert client.get("/api/images/5").json()["alert"] is False
    response = client.post(
        f"/candidates/{linked}/reject",
        data={CSRF_FIELD: _csrf(client), "reviewer": "Bo", "reason": "dip"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert client.get(f"/api/candidates/{linked}").json()["status"] == "rejected"
    assert client.get("/api/images/5").json()["alert"] is False
    assert [im["alert"] for im in client.get("/api/images").json() if im["id"] == 5] == [False]
    history = client.get("/history").text
    row = re.search(r'<tr class="[^"]*">\s*<td><a href="/images/5".*?</tr>', history, re.S)
    assert row and "badge alert" not in row.group(0)
    assert "No new candidates in this image" in client.get("/images/5").text
    assert client.get("/api/images/6").json()["alert"] is True  # its alerted candidates still count


def test_a_linked_candidate_of_a_confirmed_blob_is_confirmed_as_that_blob(
    fresh_db: str, monitor_db: dict
) -> None:
    with open_database(fresh_db).begin() as s:
        run = Run(image_id=5, blobwatch_version="test", parameters={}, timings={})
        s.add(run)
        s.flush()
        s.add(
            Candidate(
                run_id=run.id,
                image_id=5,
                x=BLOB_X + 0.6,
                y=BLOB_Y,
                probability=0.3,
                radius=BLOB_R,
                status="linked",
                linked_to=1,
            )
        )
        s.flush()
        linked = s.scalars(select(Candidate.id).where(Candidate.image_id == 5)).one()
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    token = _csrf(client)
    assert (
        client.post("/candidates/1/confirm", data={CSRF_FIELD: token, "reviewer": "Ada"}).status_code == 200
    )
    page = client.get(f"/candidates/{linked}").text
    assert "Confirm: same as blob #3" in page and "Confirm as new blob" not in page
    # a stale page's plain confirm is refused: no second catalog entry for the blob
    refused = client.post(f"/candidates/{linked}/confirm", data={CSRF_FIELD: token, "reviewer": "Ada"})
    assert refused.status_code == 409 and "is catalog blob 3 again" in refused.text
    assert len(client.get("/api/catalog").json()) == 3
    wrong = client.post(
        f"/candidates/{linked}/confirm", data={CSRF_FIELD: token, "reviewer": "Ada", "same_as": "1"}
    )
    assert wrong.status_code == 409 and "not at catalog blob 1" in wrong.text
    for bad in ("x", "-3", "9" * 30):
        assert (
            client.post(
                f"/candidates/{linked}/confirm", data={CSRF_FIELD: token, "reviewer": "Ada", "same_as": bad}
            ).status_code
            == 422
        )
    response = client.post(
        f"/candidates/{linked}/confirm",
        data={CSRF_FIELD: token, "reviewer": "Ada", "same_as": "3", "next": f"/candidates/{linked}"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert (
        f"Candidate #{linked} recorded as catalog blob #3 seen again: nothing added to the catalog."
        in client.get(response.headers["location"]).text
    )
    cand = client.get(f"/api/candidates/{linked}").json()
    assert (cand["status"], cand["known_blob_id"], cand["reviewed_by"]) == ("known", 3, "Ada")
    assert len(client.get("/api/catalog").json()) == 3
    assert client.get("/api/images/5").json()["alert"] is False


# ------------------------------------------------------------------------------ DS9 over SAMP


@pytest.fixture
def samp_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A SAMP hub (lockfile in tmp_path, $SAMP_HUB naming it) and a DS9 stand-in that records
    the image.load.fits and ds9.set messages it gets."""
    from blobwatch.web.samp import _astropy_samp

    samp = _astropy_samp()
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.samp-1 hubs of the machine
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:file://{tmp_path / 'samp'}")
    hub = samp.SAMPHubServer(lockfile=str(tmp_path / "samp"), web_profile=False)
    hub.start()
    ds9 = samp.SAMPIntegratedClient(name="ds9")
    ds9.connect()
    ds9.received = []  # type: ignore[attr-defined]

    def loaded(private_key: str, sender_id: str, msg_id: str, mtype: str, params: dict, extra: dict) -> None:
        time.sleep(0.2)  # a viewer takes a while: the regions must still come after the image
        ds9.received.append((mtype, params))
        ds9.reply(msg_id, {"samp.status": "samp.ok", "samp.result": {}})

    ds9.bind_receive_call("image.load.fits", loaded)
    ds9.bind_receive_notification(
        "ds9.set", lambda private_key, sender_id, mtype, params, extra: ds9.received.append((mtype, params))
    )
    try:
        yield ds9
    finally:
        ds9.disconnect()
        hub.stop()


def test_open_in_ds9_is_offered_only_with_a_samp_hub(
    monitor_db: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:file://{tmp_path / 'no-hub'}")
    client = _client(create_app(monitor_db["url"], monitor_db["reports"]))
    assert 'action="/images/6/ds9"' not in client.get("/").text
    response = client.post("/images/6/ds9", data={CSRF_FIELD: _csrf(client, "/"), "kind": "difference"})
    assert response.status_code == 409 and "no SAMP hub" in response.text


def test_open_in_ds9_sends_the_fits_url_and_the_regions(monitor_db: dict, samp_hub: Any) -> None:
    import time

    client = _client(create_app(monitor_db["url"], monitor_db["reports"]))
    html = client.get("/images/6").text
    assert 'action="/images/6/ds9"' in html and 'name="kind" value="stack"' in html
    response = client.post(
        "/images/6/ds9",
        data={CSRF_FIELD: _csrf(client, "/images/6"), "kind": "difference", "next": "/images/6"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/images/6?done=ds9&image=6"
    deadline = time.monotonic() + 10
    while len(samp_hub.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (load, params), (set_, regions) = samp_hub.received
    assert load == "image.load.fits" and params["url"] == "http://127.0.0.1/images/6/difference.fits"
    assert set_ == "ds9.set" and regions["cmd"].startswith("regions load ")
    region_file = Path(regions["cmd"].removeprefix("regions load "))
    assert _regions(region_file.read_text())["candidate"]  # the image's candidates, as downloaded
    assert client.post("/images/6/ds9", data={CSRF_FIELD: _csrf(client, "/"), "kind": "x"}).status_code == 422
    assert client.post("/images/6/ds9", data={"kind": "stack"}).status_code == 403  # no CSRF token


# ------------------------------------------------------------------------------ large tables


@pytest.fixture(scope="module")
def many_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """120 images (every 7th alerted, the first 10 only registered) and 75 blobs (25 confirmed);
    no files: the tables need none."""
    root = tmp_path_factory.mktemp("many")
    url = f"sqlite:///{root / 'bw.db'}"
    with open_database(url).begin() as s:
        s.add_all(
            [
                Image(
                    id=i,
                    path=f"/gone/csm_day{i:03d}_blob.fits",
                    sha256=f"{i:064x}",
                    mjd=60000.0 + i,
                    status="registered" if i <= 10 else "processed",
                )
                for i in range(1, 121)
            ]
        )
        s.add_all(
            [
                Run(
                    id=i,
                    image_id=i,
                    blobwatch_version="t",
                    threshold=0.5,
                    max_probability=0.9 if i % 7 == 0 else 0.1,
                )
                for i in range(11, 121)
            ]
        )
        s.add_all(
            [
                Candidate(
                    run_id=i, image_id=i, x=10.0 + i, y=20.0, probability=0.9, status="new", alerted=True
                )
                for i in range(11, 121)
                if i % 7 == 0
            ]
        )
        s.add_all(
            [
                Blob(
                    id=b,
                    x=5.0 + b,
                    y=30.0,
                    radius=3.0 + b % 5,
                    depth=0.01 * (b % 20),
                    source="confirmed" if b % 3 == 0 else "import",
                    label=f"old-{b}",
                    first_seen_mjd=60000.0 + b,
                )
                for b in range(1, 76)
            ]
        )
    return url


def _history_rows(html: str) -> list[str]:
    return (
        re.findall(r'<a href="/images/\d+">(csm_day\d+_blob\.fits)</a>', html.split("<tbody>")[1])
        if "<tbody>" in html
        else []
    )


def test_history_is_paginated_on_the_server(many_db: str) -> None:
    client = _client(create_app(many_db))
    html = client.get("/history").text
    assert "(120 images)" in html and "120 rows · page 1 of 3" in html
    rows = _history_rows(html)
    assert len(rows) == 50 and rows[0] == "csm_day120_blob.fits"  # newest first
    page3 = client.get("/history", params={"page": 3}).text
    assert _history_rows(page3) == [f"csm_day{i:03d}_blob.fits" for i in range(20, 0, -1)]
    assert 'rel="prev"' in page3 and 'rel="next"' not in page3
    # a page past the end shows the last one; per is clipped to 10..500
    assert _history_rows(client.get("/history", params={"page": 99}).text) == _history_rows(page3)
    assert len(_history_rows(client.get("/history", params={"per": 1}).text)) == 10


def test_history_filters_on_the_server_and_pages_keep_them(many_db: str) -> None:
    client = _client(create_app(many_db))
    alerts = client.get("/history", params={"alert": "yes", "per": 10}).text
    want = [f"csm_day{i:03d}_blob.fits" for i in range(119, 10, -7)]  # 119, 112, ..., 14
    assert len(want) == 16 and "16 rows · page 1 of 2" in alerts
    assert _history_rows(alerts) == want[:10]
    # the next-page link keeps the filter and the page size
    link = re.search(r'href="(/history\?[^"]*)" rel="next"', alerts).group(1).replace("&amp;", "&")
    assert _history_rows(client.get(link).text) == want[10:]
    assert _history_rows(client.get("/history", params={"status": "registered"}).text) == [
        f"csm_day{i:03d}_blob.fits" for i in range(10, 0, -1)
    ]
    ranged = client.get("/history", params={"mjd_min": 60050, "mjd_max": 60052.5, "q": "DAY05"}).text
    assert _history_rows(ranged) == ["csm_day052_blob.fits", "csm_day051_blob.fits", "csm_day050_blob.fits"]
    assert "No images match the filter." in client.get("/history", params={"q": "nothing"}).text


@pytest.mark.parametrize(
    "params", [{"status": "bogus"}, {"alert": "maybe"}, {"mjd_min": "x"}, {"page": "two"}]
)
def test_history_refuses_bad_filters_with_a_page(many_db: str, params: dict) -> None:
    response = _client(create_app(many_db)).get("/history", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert "bad query" in response.text or "must be one of" in response.text


def _blob_rows(html: str) -> list[int]:
    return [int(b) for b in re.findall(r'<tr id="blob-(\d+)">', html)]


def test_blob_table_is_filtered_and_paginated_on_the_server(many_db: str) -> None:
    client = _client(create_app(many_db))
    html = client.get("/blobs").text
    assert "(75 known blobs)" in html and "75 rows · page 1 of 2" in html
    assert _blob_rows(html) == list(range(1, 51))
    assert _blob_rows(client.get("/blobs", params={"page": 2}).text) == list(range(51, 76))
    confirmed = client.get("/blobs", params={"source": "confirmed"}).text
    assert _blob_rows(confirmed) == list(range(3, 76, 3))
    assert _blob_rows(client.get("/blobs", params={"q": "#42"}).text) == [42]
    assert _blob_rows(client.get("/blobs", params={"blob": 7}).text) == [7]  # a viewer circle's link
    assert _blob_rows(client.get("/blobs", params={"q": "old-7"}).text) == [7, *range(70, 76)]
    deep = client.get("/blobs", params={"min_depth": 18, "min_radius": 7}).text  # depth in %
    assert _blob_rows(deep) == [b for b in range(1, 76) if b % 20 >= 18 and 3 + b % 5 >= 7]
    assert client.get("/blobs", params={"source": "elsewhere"}).status_code == 422


def test_history_known_blobs_axis_starts_at_zero() -> None:
    from blobwatch.web.render import history_figure

    fig = history_figure(
        np.array([60000.0, 60001.0, 60002.0]),
        np.array([180, 181, 181]),
        np.array([0.1, 0.9, 0.2]),
        np.array([False, True, False]),
        threshold=0.5,
    )
    low, high = fig.axes[0].get_ylim()
    assert low == 0 and high >= 181


# ------------------------------------------------------------------------------ pixel viewer


def test_viewer_pixels_are_the_float32_arrays_with_zscale_limits(
    client: TestClient, monitor_db: dict
) -> None:
    response = client.get("/images/6/image.f32")
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-shape"] == f"{SIZE},{SIZE}"
    lo, hi = map(float, response.headers["x-zscale"].split(","))
    pixels = np.frombuffer(response.content, dtype="<f4").reshape(SIZE, SIZE)
    expected = fits.getdata(monitor_db["paths"][5]).astype(np.float32)
    np.testing.assert_array_equal(pixels, expected)
    assert lo < np.median(expected) < hi
    diff = np.frombuffer(client.get("/images/6/difference.f32").content, dtype="<f4").reshape(SIZE, SIZE)
    assert diff[int(BLOB_Y), int(BLOB_X)] < -0.1  # the new blob, dark at (row y, column x)
    assert client.get("/images/1/difference.f32").status_code == 404  # not processed
    assert client.get("/images/99/image.f32").status_code == 404


def test_viewer_figure_has_clickable_circles_and_no_code(client: TestClient) -> None:
    spec = client.get("/images/6/viewer.json").json()
    assert spec["shape"] == [SIZE, SIZE] and spec["kinds"] == ["image", "stack", "difference"]
    assert set(spec["palettes"]) == {"greys", "viridis", "inferno", "cividis"}
    # low values dark, as in DS9 and the PNG figures: a new (dark) blob stays dark
    assert spec["palettes"]["greys"][0] == "#000000" and spec["palettes"]["greys"][-1] == "#ffffff"
    text = str(spec["item"])
    assert "CustomJS" not in text  # the page's CSP allows only its own scripts
    assert "OpenURL" in text and "@url" in text and "bw-markers" in text
    urls = spec["markers"]["url"]
    assert "/candidates/1" in urls and "/blobs?blob=1#blob-1" in urls
    assert len(spec["markers"]["x"]) == len(urls) == len(spec["markers"]["r"])
    assert spec["view"] == {"x": [-0.5, SIZE - 0.5], "y": [-0.5, SIZE - 0.5]}
    zoomed = client.get("/images/6/viewer.json", params={"candidate": 1}).json()
    i = urls.index("/candidates/1")
    cx, cy = zoomed["markers"]["x"][i], zoomed["markers"]["y"][i]
    assert np.mean(zoomed["view"]["x"]) == pytest.approx(cx)
    assert np.mean(zoomed["view"]["y"]) == pytest.approx(cy)
    assert np.diff(zoomed["view"]["x"])[0] < SIZE - 1  # zoomed in on it
    assert zoomed["item"] == spec["item"]  # one figure per image shape
    assert client.get("/images/6/viewer.json", params={"candidate": 99}).status_code == 404
    page = client.get("/")
    assert 'class="viewer" data-image="6"' in page.text and "/bokeh/js/bokeh.min.js" in page.text
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert 'data-candidate="1"' in client.get("/candidates/1").text


def test_viewer_figure_is_built_once_per_shape_and_its_circles_follow_the_reviews(
    fresh_db: str, monitor_db: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobwatch.web import viewer

    built = []
    real = viewer.viewer_item
    monkeypatch.setattr(viewer, "viewer_item", lambda *a, **k: built.append(1) or real(*a, **k))
    client = _client(create_app(fresh_db, monitor_db["reports"]))
    first = client.get("/images/6/viewer.json")
    assert first.headers["content-type"] == "application/json"
    assert client.get("/images/6/viewer.json").content == first.content
    assert client.get("/images/5/viewer.json").json()["item"] == first.json()["item"]
    assert client.get("/images/6/viewer.json", params={"candidate": 1}).status_code == 200
    assert len(built) == 1  # every image of the database has one shape
    urls = first.json()["markers"]["url"]
    rejected = client.post(
        "/candidates/1/reject",
        data={CSRF_FIELD: _csrf(client), "reviewer": "Ada", "reason": "dip"},
        follow_redirects=False,
    )
    assert rejected.status_code == 303
    again = client.get("/images/6/viewer.json").json()
    colors = dict(zip(again["markers"]["url"], again["markers"]["color"], strict=True))
    assert colors["/candidates/1"] == viewer.STATUS_COLORS["rejected"]
    assert first.json()["markers"]["color"][urls.index("/candidates/1")] == viewer.STATUS_COLORS["new"]
    assert len(built) == 1


def test_pixels_are_read_once_then_memory_mapped_from_the_cache(
    fresh_db: str, monitor_db: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from blobwatch import fits_io

    reports = tmp_path / "reports"
    shutil.copytree(monitor_db["reports"], reports)
    first = _client(create_app(fresh_db, reports))
    expected = first.get("/images/6/image.f32").content
    assert list((reports / WEB_CACHE / "pixels").glob("*/image.npy"))
    # a restarted app maps the saved copies: the FITS file is not read again
    monkeypatch.setattr(fits_io, "read_blob_image", lambda *a, **k: pytest.fail("re-read the image"))
    app = create_app(fresh_db, reports)
    again = _client(app)
    assert again.get("/images/6/image.f32").content == expected
    assert again.get("/images/6/difference.f32").status_code == 200
    with app.state.session_factory() as session:
        arrays = app.state.pixels.arrays(session, 6)
    assert all(isinstance(a, np.memmap) for a in arrays.values()), {k: type(a) for k, a in arrays.items()}


def test_bokehjs_is_served_from_the_package(client: TestClient) -> None:
    from blobwatch.web.viewer import bokehjs_dir

    response = client.get("/bokeh/js/bokeh.min.js")
    assert response.status_code == 200
    assert response.content == (bokehjs_dir() / "js" / "bokeh.min.js").read_bytes()


def test_display_arrays_saved_by_the_monitor_are_read_back(tmp_path: Path) -> None:
    from blobwatch.monitor.display import (
        display_path,
        load_display_arrays,
        save_display_arrays,
    )

    stack, diff = np.ones((8, 9), np.float32), np.arange(72, dtype=np.float32).reshape(8, 9)
    save_display_arrays(tmp_path, 3, stack, diff)
    got = load_display_arrays(tmp_path, 3, shape=(8, 9))
    np.testing.assert_array_equal(got["difference"], diff)
    assert load_display_arrays(tmp_path, 4) is None and load_display_arrays(tmp_path, 3, shape=(9, 8)) is None
    save_display_arrays(tmp_path, 4, stack, diff)  # a reprocessed image: the old run's arrays go
    assert not display_path(tmp_path, 3, "stack").exists() and display_path(tmp_path, 4, "stack").exists()


def test_rebuilt_pixels_are_cached_on_disk_by_content(
    fresh_db: str, monitor_db: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobwatch.monitor import catalog

    app = create_app(fresh_db, tmp_path)  # its own cache folder; no arrays saved by a monitor
    first = _client(app).get("/images/6/difference.f32").content
    assert app.state.pixels.rebuilt == 1
    assert list((tmp_path / ".web-cache" / "pixels").glob("*/difference_run1.npy"))

    def rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt although the arrays were cached on disk")

    monkeypatch.setattr(catalog, "rebuild_difference", rebuild)
    again = create_app(fresh_db, tmp_path)  # a restarted app
    assert _client(again).get("/images/6/difference.f32").content == first


def test_figures_are_made_once_and_slow_ones_hold_up_nothing() -> None:
    import threading
    import time

    from blobwatch.web.cache import Memo

    memo: Memo[bytes] = Memo(8)
    started = threading.Event()

    def slow() -> bytes:
        started.set()
        time.sleep(0.5)
        return b"slow"

    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(memo.get("a", slow))) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait()
    t0 = time.perf_counter()
    assert memo.get("b", lambda: b"fast") == b"fast"  # another key: no wait
    assert time.perf_counter() - t0 < 0.2
    for t in threads:
        t.join()
    assert results == [b"slow"] * 3 and memo.made == 2


def test_two_apps_in_one_process_keep_their_own_state(monitor_db: dict, tmp_path: Path) -> None:
    """The routers are module-level (`blobwatch.web.routes_*`): each request must find its own app's
    state (`app.state.web`), never another app's database, token, CSRF secret or Host list."""
    from blobwatch.web.state import AppState

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_database(url)
    full = create_app(monitor_db["url"], monitor_db["reports"])
    locked = create_app(url, token="s3cret", require_token=True, allowed_hosts=["review.example"])
    assert isinstance(full.state.web, AppState) and full.state.web is not locked.state.web
    assert full.state.guard is full.state.web.guard and full.state.pixels is full.state.web.pixels
    a, b = _client(full), _client(locked)
    assert len(a.get("/api/images").json()) == 6 and b.get("/api/images").json() == []
    assert "read-only: unlock" in b.get("/queue").text and "read-only" not in a.get("/queue").text
    assert TestClient(locked, base_url="http://review.example").get("/api/images").status_code == 200
    assert TestClient(full, base_url="http://review.example").get("/api/images").status_code == 400
    # a form token of one app is refused by the other (each has its own CSRF secret)
    token = _csrf(a)
    b.cookies.set(CSRF_COOKIE, a.cookies[CSRF_COOKIE])
    answer = b.post("/unlock", data={CSRF_FIELD: token, "token": "s3cret"}, follow_redirects=False)
    assert answer.status_code == 403 and "cross-site" in answer.text
    answer = b.post(
        "/unlock", data={CSRF_FIELD: _csrf(b, "/unlock"), "token": "s3cret"}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/queue?done=unlocked"
