"""``report.html`` rendered by a real headless browser (Debian's chromium): the script runs, candidates appear."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from planetcd.change.detect import ChangeResult
from planetcd.craters.catalog import Catalog
from planetcd.datasets.synthetic import MARS_EQC_WKT
from planetcd.report import MonitorResult, chip_image, write_report


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is missing (.ci/run installs it)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _result(n: int, rng: np.random.Generator) -> MonitorResult:
    """A small georeferenced result with ``n`` candidates, built from arrays (no network needed)."""
    from affine import Affine
    from PIL import Image
    import io

    shape = (400, 500)
    transform = Affine(6.0, 0.0, 1_000_000.0, 0.0, -6.0, 500_000.0)
    craters = np.column_stack([rng.uniform(40, 460, n), rng.uniform(40, 360, n), rng.uniform(4, 15, n), rng.uniform(0.5, 1, n)])
    catalog = Catalog.from_pixels(craters, transform=transform, crs=MARS_EQC_WKT, name="new_craters")
    score = np.sort(rng.uniform(0.1, 0.9, n))[::-1]
    scores = {"score": score, "change_ratio": 1 + score, "confidence": craters[:, 3], "pre_support": np.zeros(n),
              "patch_row_off": np.zeros(n, np.int64), "patch_col_off": np.zeros(n, np.int64)}
    patches = np.array([[0, 0, 200, 250], [0, 250, 200, 250], [200, 0, 200, 250], [200, 250, 200, 250]])
    rho = np.array([2.0, 0.5, 0.4, 1.5])
    change = ChangeResult(patches=patches, change_score=rho, tau=1.0, changed=rho > 1, valid_fraction=np.ones(4),
                          displacement=(1.25, -2.5), registration_error=0.1, shape=shape, crs=None, transform=transform)
    chips = [rng.integers(0, 255, (3, 64, 64), dtype=np.uint8) for _ in range(n)]
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (80, 100), dtype=np.uint8)).save(buffer, format="PNG")
    empty = Catalog.from_pixels(np.zeros((0, 4)), transform=transform, crs=MARS_EQC_WKT)
    types = np.array(["new_crater", "change"] * (n // 2) + ["new_crater"] * (n % 2), dtype=object)
    post_buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (80, 100), dtype=np.uint8)).save(post_buffer, format="PNG")
    return MonitorResult(catalog, scores, change, empty, empty, chips, buffer.getvalue(), (80, 100), shape,
                         {"pre": "pre.tif", "post": "post.tif", "score": "confidence * (1 - pre_support) * (1 - 1 / change_ratio)"},
                         types=types, overview_post=post_buffer.getvalue())


def _dump_dom(browser: str, page, fragment: str = "") -> str:
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri() + fragment],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_report_renders_every_candidate_in_chromium(tmp_path):
    browser = _chromium()
    result = _result(7, np.random.default_rng(4))
    page = write_report(result, tmp_path / "report.html")
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text  # self-contained

    dom = _dump_dom(browser, page)
    rows = re.findall(r'<tr class="candidate[^"]*" data-rank="(\d+)"', dom)
    assert rows == [str(k) for k in range(1, 8)]  # built by the page's script, in rank order
    assert len(re.findall(r'<circle[^>]*data-rank="\d+"', dom)) == 7
    assert "Candidate #1 of 7" in dom
    assert re.search(r'<img id="chip"[^>]*src="data:image/png;base64,', dom)
    # the first candidate's coordinates are shown (lon with five decimals)
    assert f"{result.candidates.lon_deg[0]:.5f}" in dom
    assert "7 candidates, 0 vetted" in dom
    assert len(re.findall(r"<rect ", dom)) == int(result.change.changed.sum())

    shot = tmp_path / "report.png"
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.stat().st_size > 20_000
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.std() > 10  # a rendered page, not a blank one


def test_report_type_filter_shows_one_type(tmp_path):
    """The type filter (select, or ``#type=change`` in the address) hides the other type's rows and circles and
    opens the first candidate of the chosen type; the type is shown in the table; pre/post overview buttons exist."""
    browser = _chromium()
    result = _result(7, np.random.default_rng(4))  # ranks 1, 3, 5, 7: new_crater; 2, 4, 6: change
    page = write_report(result, tmp_path / "report.html")

    plain = _dump_dom(browser, page)
    options = re.findall(r'<option value="([a-z_]*)">', plain)
    assert options == ["", "new_crater", "change"]
    assert not re.search(r'<tr class="[^"]*hidden', plain)
    assert "<td>change</td>" in plain and "<td>new_crater</td>" in plain
    assert 'id="show-pre"' in plain and 'id="show-post"' in plain

    dom = _dump_dom(browser, page, "#type=change")
    shown = re.findall(r'<tr class="candidate(?! hidden)[^"]*" data-rank="(\d+)" data-type="(\w+)"', dom)
    hidden = re.findall(r'<tr class="candidate[^"]*hidden[^"]*" data-rank="(\d+)" data-type="(\w+)"', dom)
    assert [r for r, _ in shown] == ["2", "4", "6"] and {t for _, t in shown} == {"change"}
    assert [r for r, _ in hidden] == ["1", "3", "5", "7"] and {t for _, t in hidden} == {"new_crater"}
    assert "Candidate #2 of 7" in dom  # the first change candidate is open
    assert "3 shown (change)" in dom
    circles = re.findall(r'<circle[^>]*>', dom)
    hidden_circles = [c for c in circles if re.search(r'class="[^"]*hidden', c)]
    assert len(circles) == 7 and len(hidden_circles) == 4
    assert all('data-type="new_crater"' in c for c in hidden_circles)


def test_report_without_candidates_says_so(tmp_path):
    browser = _chromium()
    result = _result(0, np.random.default_rng(5))
    dom = _dump_dom(browser, write_report(result, tmp_path / "report.html"))
    assert "No candidates" in dom and "0 candidates, 0 vetted" in dom
    assert not re.search(r"<tr class=\"candidate", dom) and not re.search(r"<circle", dom)


def test_chip_image_has_three_panels():
    panels = np.zeros((3, 40, 40), np.uint8)
    panels[1] = 255
    image = chip_image(panels, np.array([20.0, 20.0, 5.0]))
    width, height = image.size
    assert height == 160 and width == 3 * 160 + 8
    array = np.asarray(image)
    assert array[5, 5].tolist() == [0, 0, 0] and array[5, 160 + 4 + 5].tolist() == [255, 255, 255]
