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


def _check_map(driver, n: int, screenshot) -> None:
    """The plot holds n points, paints them, shows a hovered painting, and every thumbnail decodes."""
    from selenium.webdriver.common.action_chains import ActionChains
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
    plot = driver.find_element(By.ID, "sc-map")
    x, y, index = driver.execute_script(
        "var gd = document.getElementById('sc-map'), fl = gd._fullLayout, t = gd._fullData[0];"
        "return [fl.xaxis.l2p(t.x[0]) + fl._size.l, fl.yaxis.l2p(t.y[0]) + fl._size.t, t.customdata[0]];"
    )
    size = plot.size
    ActionChains(driver).move_to_element_with_offset(plot, int(x - size["width"] / 2), int(y - size["height"] / 2)).perform()
    expected = driver.execute_script("return window.styleMap.data.name[arguments[0]];", index)
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

    cluster = browser.execute_script("var m = window.styleMap; return m.data.cluster[m.plot._fullData[0].customdata[0]];")
    ActionChains(browser).click().perform()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith(f"/clusters/cluster-{cluster}.html"))

    _open(browser, report.pages[0])  # holds the image named <script>alert(1)</script>.jpg
    images = browser.execute_script(
        "return Array.from(document.images).map(im => [im.getAttribute('src'), im.complete && im.naturalWidth > 0]);"
    )
    assert len(images) == 2 * 15  # a thumbnail and a patch strip per member
    assert all(ok for _, ok in images), [src for src, ok in images if not ok]
    text = browser.execute_script("return document.body.innerText;")
    assert HOSTILE_NAME in text and HOSTILE_LABEL in text
    assert browser.execute_script("return document.querySelectorAll('script').length;") == 0
    _no_alert(browser)
    assert _errors(browser) == []
    browser.save_screenshot(str(tmp_path / "cluster-0.png"))
