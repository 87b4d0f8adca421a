"""The map and the report in a real browser (headless Chromium driven by Selenium).

Checks what only a browser can: the WebGL plot drew its points, hovering shows the painting,
every thumbnail decodes, no JavaScript error was logged, and hostile file names stay text (no
alert ever opens). Screenshots are saved in the test's tmp folder.

Chromium comes from Debian (``chromium`` and ``chromium-driver``, installed by ``.ci/run``). On a
developer machine without it these tests are skipped; in CI (``CI`` set) its absence fails them.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from PIL import Image

from stylecluster.store import load_store
from stylecluster.viz import load_explorer, write_map, write_report
from vizdata import HOSTILE_LABEL, HOSTILE_NAME, hostile_collection

# Offline-safe flags: without the background-networking ones Chromium keeps trying (and failing)
# to reach Google's services on this closed network. SwiftShader gives WebGL without a GPU.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader", "--window-size=1400,1000", "--hide-scrollbars",
)
N_IMAGES = 60


def _chromium() -> tuple[str, str] | None:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    found = _chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        found = None
    if found is None:
        reason = "headless Chromium + chromedriver + selenium are needed (apt-get install chromium chromium-driver; pip install -e '.[dev]')"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    profile = tempfile.mkdtemp(prefix="stylecluster-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    collection = hostile_collection(tmp_path_factory.mktemp("browser") / "collection", n=N_IMAGES, n_clusters=4)
    return load_explorer(load_store(collection.store), collection.clusters, collection.labels, "style")


def _open(driver, path):
    driver.get_log("browser")  # drop anything logged before this page
    driver.get(path.resolve().as_uri())


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _no_alert(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text


def _wait_for_map(driver) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "var gd = document.getElementById('sc-map'); return !!(window.styleMap && gd && gd._fullData && gd.querySelector('canvas'));"
    ))


def _hover_first_point(driver) -> int:
    """Moves a real mouse onto the first point of the map's first trace; returns that point's row."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    plot = driver.find_element(By.ID, "sc-map")
    x, y, index = driver.execute_script(
        "var gd = document.getElementById('sc-map'), fl = gd._fullLayout, t = gd._fullData[0];"
        "return [fl.xaxis.l2p(t.x[0]) + fl._size.l, fl.yaxis.l2p(t.y[0]) + fl._size.t, t.customdata[0]];"
    )
    size = plot.size
    ActionChains(driver).move_to_element_with_offset(plot, int(x - size["width"] / 2), int(y - size["height"] / 2)).perform()
    return index


def _check_map(driver, n: int, screenshot) -> None:
    """The plot holds n points, paints them, shows a hovered painting, and every thumbnail decodes."""
    from selenium.webdriver.common.by import By

    _wait_for_map(driver)
    traces = driver.execute_script(
        "return document.getElementById('sc-map')._fullData.map(t => [t.type, t.x.length, t.marker.color, t.marker.opacity]);"
    )
    assert {t[0] for t in traces} == {"scattergl"}
    assert sum(t[1] for t in traces) == n

    # The WebGL canvas really painted each trace's colour (read back from a screenshot).
    driver.save_screenshot(str(screenshot))
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).reshape(-1, 3).astype(int)
    for _, count, colour, opacity in traces:
        rgb = opacity * np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) + (1 - opacity) * 255  # on white
        painted = int((np.abs(pixels - rgb).sum(axis=1) < 40).sum())
        assert painted > 20 * count, f"trace colour {colour} barely visible ({painted} px)"

    # A real mouse hover on the first point of the first trace fills the panel.
    index = _hover_first_point(driver)
    expected = driver.execute_script("return window.styleMap.record(arguments[0]).name;", index)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "sc-name").text == expected)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.getElementById('sc-thumb').naturalWidth") > 0)

    # Every thumbnail the map refers to loads and decodes.
    loaded = driver.execute_async_script(
        "var done = arguments[arguments.length - 1], srcs = window.styleMap.data.thumbs, ok = 0, left = srcs.length;"
        "srcs.forEach(function (src) { var im = new Image();"
        "  im.onload = function () { ok += im.naturalWidth > 0; if (--left === 0) done(ok); };"
        "  im.onerror = function () { if (--left === 0) done(ok); }; im.src = src; });"
    )
    assert loaded == n


def test_map_renders_points_hover_and_thumbnails(browser, explorer, tmp_path):
    result = write_map(explorer, tmp_path / "map.html", color_by="label", workers=1)
    _open(browser, result.html)
    _check_map(browser, N_IMAGES, tmp_path / "map.png")
    legend = browser.execute_script("return Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent);")
    assert any(HOSTILE_LABEL in text for text in legend)  # shown as text, not as an element
    _no_alert(browser)
    assert _errors(browser) == []
    browser.save_screenshot(str(tmp_path / "map-hover.png"))


def test_report_index_and_cluster_page(browser, explorer, tmp_path):
    report = write_report(explorer, tmp_path / "report", per_section=100, workers=1)
    _open(browser, report.index)
    _check_map(browser, N_IMAGES, tmp_path / "report-index.png")
    _no_alert(browser)
    assert _errors(browser) == []
    # clicking the hovered point opens its cluster's page
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    cluster = browser.execute_script("var m = window.styleMap; return m.arrays.cluster[m.plot._fullData[0].customdata[0]];")
    ActionChains(browser).click().perform()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith(f"/clusters/cluster-{cluster}.html"))

    _open(browser, report.pages[0])  # holds the image named <script>alert(1)</script>.jpg
    images = browser.execute_script(
        "return Array.from(document.images).map(im => [im.getAttribute('src'), im.complete && im.naturalWidth > 0]);"
    )
    assert len(images) == 1 + 2 * 15  # the cluster's typical strokes, then a thumbnail and a patch strip per member
    assert images[0][0] == "../strokes/cluster-0.png"
    assert all(ok for _, ok in images), [src for src, ok in images if not ok]
    text = browser.execute_script("return document.body.innerText;")
    assert HOSTILE_NAME in text and HOSTILE_LABEL in text
    assert browser.execute_script("return document.querySelectorAll('script').length;") == 0
    _no_alert(browser)
    assert _errors(browser) == []
    browser.save_screenshot(str(tmp_path / "cluster-0.png"))


# ----------------------------------------------------------------------------- issue 16 views


def _point_pixels(driver) -> dict[int, tuple[float, float]]:
    """Every point's position in pixels from the plot div's top-left corner, by point index."""
    rows = driver.execute_script(
        "var gd = document.getElementById('sc-map'), fl = gd._fullLayout, out = [];"
        "gd._fullData.forEach(function (t) { for (var k = 0; k < t.x.length; k++) {"
        "  out.push([t.customdata[k], fl.xaxis.l2p(t.x[k]) + fl._size.l, fl.yaxis.l2p(t.y[k]) + fl._size.t]); } });"
        "return out;"
    )
    return {int(i): (x, y) for i, x, y in rows}


def _inside(polygon, x, y) -> bool:
    """Ray casting: is (x, y) inside the closed polygon?"""
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _distance_to_edges(polygon, x, y) -> float:
    best = np.inf
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        d = np.array([x2 - x1, y2 - y1])
        t = np.clip(np.dot([x - x1, y - y1], d) / max(np.dot(d, d), 1e-9), 0, 1)
        best = min(best, float(np.hypot(x - x1 - t * d[0], y - y1 - t * d[1])))
    return best


def test_lasso_selects_and_exports_exactly_the_rows_inside(browser, explorer, tmp_path):
    import pandas as pd
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    result = write_map(explorer, tmp_path / "map.html", workers=1)
    _open(browser, result.html)
    _wait_for_map(browser)
    pixels = _point_pixels(browser)
    xs, ys = np.array([p[0] for p in pixels.values()]), np.array([p[1] for p in pixels.values()])
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = x1 - x0, y1 - y0
    shape = ((-0.05, -0.05), (0.55, 0.02), (0.7, 0.55), (0.3, 0.85), (-0.05, 0.5))
    # The first scaling of the shape whose edges pass no point closer than 5 px (a point on the
    # edge could go either way).
    for scale in np.linspace(1.0, 0.5, 26):
        polygon = [(x0 + scale * f * w, y0 + scale * g * h) for f, g in shape]
        if min(_distance_to_edges(polygon, x, y) for x, y in pixels.values()) >= 5:
            break
    else:
        pytest.fail("no lasso shape clear of the points")
    expected = sorted(i for i, (x, y) in pixels.items() if _inside(polygon, x, y))
    assert 5 < len(expected) < N_IMAGES - 5

    plot = browser.find_element(By.ID, "sc-map")
    ActionChains(browser).move_to_element(plot).perform()  # the tool bar shows while the mouse is over the plot
    lasso = browser.find_element(By.CSS_SELECTOR, '.modebar-btn[data-attr="dragmode"][data-val="lasso"]')
    WebDriverWait(browser, 10).until(lambda d: lasso.is_displayed())
    lasso.click()
    size = plot.size
    steps = []
    for (ax, ay), (bx, by) in zip(polygon, polygon[1:] + polygon[:1]):
        steps += [(ax + (bx - ax) * k / 8, ay + (by - ay) * k / 8) for k in range(8)]
    steps.append(polygon[0])
    chain = ActionChains(browser, duration=10)
    chain.move_to_element_with_offset(plot, int(steps[0][0] - size["width"] / 2), int(steps[0][1] - size["height"] / 2)).click_and_hold()
    for (ax, ay), (bx, by) in zip(steps, steps[1:]):
        chain.move_by_offset(int(round(bx)) - int(round(ax)), int(round(by)) - int(round(ay)))
    chain.release().perform()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.styleMap.selected().length;") > 0)
    assert browser.execute_script("return window.styleMap.selected();") == expected
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sc-selected > div")) == len(expected)

    # The download link hands over exactly those rows.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.find_element(By.ID, "sc-export").click()
    WebDriverWait(browser, 20).until(lambda d: (downloads / "selection.csv").is_file())
    exported = pd.read_csv(downloads / "selection.csv", keep_default_na=False)
    names = browser.execute_script("var m = window.styleMap; return Array.from({length: m.nPoints}, (_, i) => m.record(i).name);")
    assert exported["path"].tolist() == [names[i] for i in expected]
    points = explorer.points.set_index("path")
    assert exported["style"].tolist() == points.loc[exported["path"], "label"].tolist()
    assert exported["cluster"].tolist() == points.loc[exported["path"], "cluster"].tolist()
    _no_alert(browser)
    assert _errors(browser) == []
    browser.save_screenshot(str(tmp_path / "lasso.png"))


def test_search_finds_by_artist_and_title(browser, explorer, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    result = write_map(explorer, tmp_path / "map.html", workers=1)
    _open(browser, result.html)
    _wait_for_map(browser)
    browser.find_element(By.ID, "sc-search").send_keys("ARTIST_3")
    expected = np.flatnonzero((explorer.points["artist"] == "artist_3").to_numpy()).tolist()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.styleMap.selected();") == expected)
    assert browser.find_element(By.ID, "sc-found").text == f"{len(expected)} works found"
    # plotly dims the rest: each trace's selected points are the matches in it
    chosen = browser.execute_script(
        "return document.getElementById('sc-map')._fullData.map(t => (t.selectedpoints || []).map(k => t.customdata[k]));"
    )
    assert sorted(i for trace in chosen for i in trace) == expected
    assert browser.execute_script("return window.styleMap.search('work 7');") == [7]  # titles too
    assert _errors(browser) == []


def test_report_timeline_names_and_montages(browser, explorer, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    hostile = "<img src=x onerror=alert(3)> Venetian & co"
    report = write_report(explorer, tmp_path / "report", per_section=5, workers=1, names={1: hostile})
    _open(browser, report.index)
    _wait_for_map(browser)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "var t = document.getElementById('sc-timeline'), s = document.getElementById('sc-decades');"
        "return !!(t && t._fullData && s && s._fullData);"
    ))
    n_clusters = explorer.points["cluster"].nunique()
    timeline = browser.execute_script("return document.getElementById('sc-timeline')._fullData.map(t => [t.type, t.x.length]);")
    assert len(timeline) == n_clusters and {t[0] for t in timeline} == {"scattergl"}
    assert sum(t[1] for t in timeline) == explorer.points["year"].notna().sum()
    assert browser.execute_script("return document.getElementById('sc-decades')._fullData.length;") == n_clusters
    legend = browser.execute_script("return Array.from(document.querySelectorAll('#sc-map .legendtext')).map(e => e.textContent);")
    assert any(hostile in text for text in legend)
    ticks = browser.execute_script("return Array.from(document.querySelectorAll('#sc-timeline .ytick text')).map(e => e.textContent);")
    assert any(hostile in text for text in ticks)
    tree = browser.execute_script("return Array.from(document.querySelectorAll('#sc-tree .ytick text')).map(e => e.textContent);")
    assert len(tree) == n_clusters and any(hostile in t for t in tree)
    text = browser.execute_script("return document.body.innerText;")
    assert hostile in text
    montages = browser.execute_script(
        "return Array.from(document.images).filter(im => im.src.indexOf('/montages/') >= 0).map(im => im.complete && im.naturalWidth > 0);"
    )
    assert len(montages) == n_clusters and all(montages)
    # the atlas of a page opened from disk comes from atlas.js beside it (see stylecluster.viz.atlas)
    browser.execute_script("window.styleMap.showImages(true);")
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return !!window.styleMap.atlasDrawn;"))
    _no_alert(browser)
    assert _errors(browser) == []
    browser.save_screenshot(str(tmp_path / "report-time.png"))

    _open(browser, report.pages[1])
    assert hostile in browser.execute_script("return document.body.innerText;")
    _no_alert(browser)

    _open(browser, report.folder / "compare.html")
    images = browser.execute_script("return Array.from(document.images).map(im => im.complete && im.naturalWidth > 0);")
    assert images and all(images)  # works between, and the typical works' patch strips
    assert hostile in browser.execute_script("return document.body.innerText;")
    _no_alert(browser)
    assert _errors(browser) == []


def test_images_mode_draws_the_thumbnails_with_webgl(browser, explorer, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    result = write_map(explorer, tmp_path / "map.html", workers=1)
    _open(browser, result.html)
    _wait_for_map(browser)
    browser.save_screenshot(str(tmp_path / "dots.png"))
    browser.find_element(By.ID, "sc-mode").click()
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return !!window.styleMap.atlasDrawn;"))
    assert browser.find_element(By.ID, "sc-mode").text == "show dots"

    def painted() -> int:
        # Pixels the atlas canvas painted (its clear colour is transparent).
        return browser.execute_script(
            "var c = document.getElementById('sc-atlas'), gl = c.getContext('webgl'), px = new Uint8Array(c.width * c.height * 4);"
            "gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);"
            "var n = 0; for (var i = 3; i < px.length; i += 4) { n += px[i] > 0; } return n;"
        )

    at_first = painted()
    sprite = browser.execute_script("return window.styleMap.data.atlas.sprite;")
    assert at_first > 0.3 * N_IMAGES * sprite * sprite * 0.75 / 4  # most images drawn, even where they overlap
    browser.save_screenshot(str(tmp_path / "images.png"))
    # The thumbnails are striped and coloured: the screenshot holds colours the dots never do.
    before = np.asarray(Image.open(tmp_path / "dots.png").convert("RGB")).reshape(-1, 3)
    after = np.asarray(Image.open(tmp_path / "images.png").convert("RGB")).reshape(-1, 3)
    assert len({tuple(p) for p in after[::7]}) > 3 * len({tuple(p) for p in before[::7]})

    # Zooming in redraws larger images
    browser.execute_script("var gd = document.getElementById('sc-map'), r = gd._fullLayout.xaxis.range, q = gd._fullLayout.yaxis.range;"
                           "Plotly.relayout(gd, {'xaxis.range': [r[0], (r[0] + r[1]) / 2], 'yaxis.range': [q[0], (q[0] + q[1]) / 2]});")
    WebDriverWait(browser, 10).until(lambda d: painted() != at_first)
    browser.find_element(By.ID, "sc-mode").click()
    assert not browser.find_element(By.ID, "sc-atlas").is_displayed()
    _no_alert(browser)
    assert _errors(browser) == []


def test_large_map_loads_text_and_thumbnails_on_hover_only(browser, explorer, tmp_path):
    """Above the embed limit the page carries no thumbnail and no text: hovering a point loads its
    text chunk and its thumbnail file, and nothing else; a search loads the remaining text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    result = write_map(explorer, tmp_path / "big.html", embed_limit=10, workers=1)
    _open(browser, result.html)
    _wait_for_map(browser)

    def loaded(kind: str) -> list[str]:
        # Resource Timing does not list file:// loads: the page's images and scripts with such URLs.
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('img[src], script[src]')).map(e => e.src).filter(n => n.indexOf(arguments[0]) >= 0);", kind)

    assert browser.execute_script("return window.styleMap.nPoints;") == N_IMAGES
    assert loaded("/thumbs/") == [] and loaded("/text/") == []
    assert browser.execute_script("return window.styleMap.record(0);") is None  # text not there yet
    index = _hover_first_point(browser)
    sha = explorer.points["sha256"].iloc[index]
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "sc-name").text == explorer.points["path"].iloc[index])
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.getElementById('sc-thumb').naturalWidth") > 0)
    assert browser.find_element(By.ID, "sc-thumb").get_attribute("src").endswith(f"/big_files/thumbs/{sha}.jpg")
    assert [n.rsplit("/", 1)[1] for n in loaded("/thumbs/")] == [f"{sha}.jpg"]  # only the hovered painting
    assert [n.rsplit("/", 2)[1:] for n in loaded("/text/")] == [["text", "0.js"]]
    assert browser.execute_script("return window.styleMap.search('ARTIST_3');") == np.flatnonzero(
        (explorer.points["artist"] == "artist_3").to_numpy()).tolist()
    selected = len(browser.execute_script("return window.styleMap.selected();"))
    WebDriverWait(browser, 10).until(lambda d: len(loaded("/thumbs/")) == 1 + selected)  # the selection's cards, on demand too
    assert browser.execute_script("return document.getElementById('sc-mode').style.display;") != "none"  # atlas.js beside it
    _no_alert(browser)
    assert _errors(browser) == []


def test_large_report_map_reads_its_points_from_the_map_folder(browser, explorer, tmp_path, monkeypatch):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from stylecluster.viz import report as report_module

    monkeypatch.setattr(report_module, "EMBED_LIMIT", 10)
    report = write_report(explorer, tmp_path / "report", per_section=3, workers=1)
    assert (report.folder / "map" / "points.js").is_file() and (report.folder / "map" / "text" / "0.js").is_file()
    _open(browser, report.index)
    _wait_for_map(browser)
    assert browser.execute_script("return window.styleMap.nPoints;") == N_IMAGES
    index = _hover_first_point(browser)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "sc-name").text == explorer.points["path"].iloc[index])
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.getElementById('sc-thumb').naturalWidth") > 0)
    assert browser.find_element(By.ID, "sc-thumb").get_attribute("src").endswith(f"/report/thumbs/{explorer.points['sha256'].iloc[index]}.jpg")
    cluster = int(explorer.points["cluster"].iloc[index])
    ActionChains(browser).click().perform()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith(f"/clusters/cluster-{cluster}.html"))
    assert "more members are not listed here" in browser.execute_script("return document.body.innerText;")
    _no_alert(browser)
    assert _errors(browser) == []


def test_density_map_draws_a_sample_hovers_and_loads_tiles_on_zoom(browser, tmp_path, monkeypatch):
    """The large-collection page (forced with a low threshold on 3,000 points): the density raster
    and the sample are drawn, a hover shows the work, and zooming in draws every point in view
    from the tiles."""
    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from stylecluster.viz import payload, umap_map
    from stylecluster.viz.html import page

    monkeypatch.setattr(umap_map, "OVERVIEW_SAMPLE", 300)
    monkeypatch.setattr(umap_map, "TILE_BUDGET", 800)
    monkeypatch.setattr(payload, "TILE_POINTS", 200)
    rng = np.random.default_rng(0)
    n = 3000
    coords = np.vstack([rng.normal(c, 1.0, size=(n // 3, 2)) for c in (-6, 0, 6)]).astype(np.float32)
    points = pd.DataFrame({
        "path": [f"folder/painting_{i:05d}.jpg" for i in range(n)], "sha256": [f"{i:064x}" for i in range(n)],
        "cluster": np.repeat([0, 1, 2], n // 3), "probability": rng.uniform(size=n), "year": np.full(n, np.nan),
        "title": [f"work {i}" for i in range(n)], "artist": [f"artist {i % 7}" for i in range(n)],
    })
    html = tmp_path / "dense.html"
    fragment = umap_map.map_fragment(points, coords, {}, title="dense", sidecar=umap_map.Sidecar(tmp_path / "dense_files", "dense_files"),
                                     density_from=1000)
    html.write_text(page("dense", fragment))
    _open(browser, html)
    _wait_for_map(browser)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return !!window.styleMap.ready;"))
    assert browser.execute_script("return window.styleMap.nPoints;") == n
    drawn = browser.execute_script("return document.getElementById('sc-map')._fullData.reduce((s, t) => s + t.x.length, 0);")
    assert drawn == 300
    assert browser.execute_script("return document.querySelectorAll('#sc-map image').length;") == 1  # the raster

    index = _hover_first_point(browser)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "sc-name").text == points["path"].iloc[index])
    assert browser.find_element(By.ID, "sc-cluster").text == f"cluster {points['cluster'].iloc[index]}"

    # Zoom into the middle cluster's core: the tiles in view replace the sample.
    x0, x1, y0, y1 = -0.6, 0.6, -0.6, 0.6
    browser.execute_script("Plotly.relayout(document.getElementById('sc-map'), {'xaxis.range': arguments[0], 'yaxis.range': arguments[1]});",
                           [x0, x1], [y0, y1])
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return window.styleMap.drawn;") != "sample")
    shown = set(browser.execute_script("return [].concat.apply([], document.getElementById('sc-map')._fullData.map(t => Array.from(t.customdata)));"))
    ranges = browser.execute_script("var l = document.getElementById('sc-map')._fullLayout; return [l.xaxis.range, l.yaxis.range];")
    (vx0, vx1), (vy0, vy1) = ranges  # plotly may widen one axis to keep the aspect ratio
    in_view = np.flatnonzero((coords[:, 0] >= vx0) & (coords[:, 0] <= vx1) & (coords[:, 1] >= vy0) & (coords[:, 1] <= vy1))
    assert len(in_view) > 200 and set(in_view.tolist()) <= shown  # every point in view is drawn (the sample has ~1 in 10)
    assert len(shown) <= 800
    from selenium.webdriver.common.action_chains import ActionChains

    plot = browser.find_element(By.ID, "sc-map")
    x, y, index = browser.execute_script(  # a tile's point in view (tiles reach beyond it)
        "var gd = document.getElementById('sc-map'), fl = gd._fullLayout, xr = fl.xaxis.range, yr = fl.yaxis.range;"
        "for (var t of gd._fullData) { for (var k = 0; k < t.x.length; k++) {"
        "  if (t.x[k] > xr[0] && t.x[k] < xr[1] && t.y[k] > yr[0] && t.y[k] < yr[1])"
        "    return [fl.xaxis.l2p(t.x[k]) + fl._size.l, fl.yaxis.l2p(t.y[k]) + fl._size.t, t.customdata[k]]; } }")
    ActionChains(browser).move_to_element_with_offset(plot, int(x - plot.size["width"] / 2), int(y - plot.size["height"] / 2)).perform()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "sc-name").text == points["path"].iloc[index])

    # Zooming back out shows the sample again.
    browser.execute_script("Plotly.relayout(document.getElementById('sc-map'), {'xaxis.range': [-12, 12], 'yaxis.range': [-12, 12]});")
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return window.styleMap.drawn;") == "sample")
    _no_alert(browser)
    assert _errors(browser) == []
