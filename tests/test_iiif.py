"""IIIF in and out: ``fetch`` from a local IIIF site (127.0.0.1, an ephemeral port — nothing
leaves the machine), resume after a kill, one line per bad item, the record links in the report
and the map, and ``export-iiif`` checked against the iiif-prezi3 models."""
from __future__ import annotations

import csv
import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_browser import browser  # noqa: F401  (the headless Chromium fixture)
from iiif_site import CONTEXT3, Site, collection2, collection3, flat_collection, jpeg, manifest
from stylecluster.cli import main
from stylecluster.data.fetch import JOURNAL, FetchOptions, fetch_iiif, image_stem
from stylecluster.data.http import USER_AGENT, ClientSettings
from stylecluster.data.iiif import CanvasRecord, image_request, parse_document, text_of
from stylecluster.errors import InputError, MissingInputError

FAST = ClientSettings(retries=1, backoff=0.01, read_timeout=5)
SIZE = 256


@pytest.fixture(autouse=True)
def _no_proxy_for_the_local_site(monkeypatch):
    # fetch honours HTTP(S)_PROXY like pip does; the test site is never behind one
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _options(**kwargs) -> FetchOptions:
    return FetchOptions(size=SIZE, max_image_bytes=200_000, client=FAST, **kwargs)


def _labels(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "labels.csv", dtype=object, keep_default_na=False)


def _skipped(out: Path) -> dict[str, str]:
    with open(out / "_skipped.csv", newline="", encoding="utf-8") as f:
        return {row["item"]: row["reason"] for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- the museum


@pytest.fixture
def museum():
    """A collection of collections (3.0 and 2.1), level-0 and level-2 services, and bad items."""
    with Site() as site:
        u = site.url
        level2 = site.level2_service("venus", SIZE, seed=1)
        level0 = site.level0_service("watch", seed=2)
        slow = site.add("/plain/slow.jpg", jpeg(64, 48, seed=3), content_type="image/jpeg", delay=0.3)
        throttled = site.add("/plain/throttled.jpg", jpeg(64, 48, seed=4), content_type="image/jpeg", throttle=1)
        venus = manifest(site, "/m/venus.json", "Venus at her Mirror", [{"image": f"{level2}/full/max/0/default.jpg", "service": (level2, "ImageService3", "level2")}],
                          metadata=[("Artist", "Peter Paul Rubens"), ("Date", "c. 1615")],
                          requiredStatement={"label": {"en": ["Attribution"]}, "value": {"en": ["Test Museum"]}},
                          rights="http://creativecommons.org/publicdomain/zero/1.0/", homepage=[{"id": u("/record/venus.html"), "type": "Text", "label": {"en": ["record"]}}])
        watch = manifest(site, "/m/watch.json", "The Night Watch", [{"image": f"{level0}/full/max/0/default.jpg", "service": (level0, "ImageService3", "level0")}],
                          navDate="1642-01-01T00:00:00Z")
        plain = manifest(site, "/m/plain.json", "Sketchbook", [{"image": slow, "label": "slow page"}, {"image": throttled, "label": "busy page"}])
        bad_images = [
            site.add("/bad/page.jpg", b"<html>not an image</html>", content_type="text/html"),
            site.add("/bad/cut.jpg", jpeg(200, 150, seed=5)[:1500], content_type="image/jpeg"),
            site.add("/bad/closed.jpg", jpeg(64, 48, seed=6), content_type="image/jpeg", truncate=300),
            site.add("/bad/huge.jpg", b"\xff\xd8\xff" + bytes(300_000), content_type="image/jpeg"),
            site.add("/bad/away.jpg", b"", status=302, location="file:///etc/passwd"),
            u("/bad/gone.jpg"),
            "http://127.0.0.1:99999/port.jpg",
        ]
        bad = manifest(site, "/m/bad.json", "Bad", [{"image": image} for image in bad_images])
        c3 = collection3(site, "/c3.json", [(venus, "Manifest"), (watch, "Manifest"), (plain, "Manifest"), (u("/m/missing.json"), "Manifest"),
                                            (site.add("/m/notiiif.json", {"hello": "world"}), "Manifest"), (bad, "Manifest")])
        level2b = site.level2_service("bathers", SIZE, version=2, seed=7)
        level0b = site.level0_service("haystack", version=2, seed=8)
        bathers = manifest(site, "/m2/bathers.json", "The Large Bathers",
                            [{"image": f"{level2b}/full/full/0/default.jpg", "service": (level2b, "http://iiif.io/api/image/2/level2.json")}],
                            metadata=[("Artist", '<a href="https://example.invalid/renoir">Pierre-Auguste Renoir</a>'), ("Date made", "1885–87")],
                            attribution="Test Museum (2.1)", license="https://creativecommons.org/licenses/by/4.0/",
                            related={"@id": u("/record/bathers.html"), "format": "text/html"}, version=2)
        haystack = manifest(site, "/m2/haystack.json", "Haystacks", [{"image": f"{level0b}/full/full/0/default.jpg", "service": (level0b, "http://iiif.io/api/image/2/level0.json")}], version=2)
        c2 = collection2(site, "/c2.json", [bathers, haystack])
        site.top = collection3(site, "/top.json", [(c3, "Collection"), (c2, "Collection")])
        site.bad_images = bad_images
        yield site


def test_fetch_reads_collections_of_both_versions_and_skips_bad_items_with_one_line_each(museum, tmp_path, caplog):
    out = tmp_path / "fetched"
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="stylecluster"):
        report = fetch_iiif(museum.top, out, _options(), quiet=True)
    elapsed = time.perf_counter() - start

    assert (report.canvases, report.downloaded, report.resumed) == (13, 6, 0)
    labels = _labels(out).set_index("title")
    assert list(labels.index) == ["Venus at her Mirror", "The Night Watch", "Sketchbook — slow page", "Sketchbook — busy page", "The Large Bathers", "Haystacks"]
    venus = labels.loc["Venus at her Mirror"]
    assert venus[["artist", "date", "year", "attribution", "rights", "homepage"]].tolist() == [
        "Peter Paul Rubens", "c. 1615", "1615", "Test Museum", "http://creativecommons.org/publicdomain/zero/1.0/", museum.url("/record/venus.html")]
    assert venus[["service", "service_type", "service_profile", "width", "height"]].tolist() == [museum.url("/iiif/venus"), "ImageService3", "level2", "4000", "3000"]
    assert venus["image_url"] == museum.url(f"/iiif/venus/full/!{SIZE},{SIZE}/0/default.jpg")
    assert labels.loc["The Night Watch", "year"] == "1642"  # from navDate
    assert labels.loc["The Night Watch", "image_url"].endswith("/full/300,225/0/default.jpg")  # smallest listed size >= 256
    bathers = labels.loc["The Large Bathers"]
    assert bathers[["artist", "date", "year", "attribution", "homepage", "service_type"]].tolist() == [
        "Pierre-Auguste Renoir", "1885–87", "1885", "Test Museum (2.1)", museum.url("/record/bathers.html"), "ImageService2"]
    assert labels.loc["Haystacks", "image_url"].endswith("/full/300,/0/default.jpg")  # 2.1 asks a level-0 size as "w,"
    sizes = {title: Image.open(out / path).size for title, path in labels["path"].items()}
    assert sizes["Venus at her Mirror"] == (256, 192) and sizes["The Night Watch"] == (300, 225) and sizes["Sketchbook — slow page"] == (64, 48)
    for path in labels["path"]:
        assert path.startswith("images/") and ".." not in path and all(part[0] != "." for part in Path(path).parts)

    skipped = _skipped(out)
    reasons = {museum.url("/m/missing.json"): "HTTP 404", museum.url("/m/notiiif.json"): "not a IIIF Collection or Manifest"}
    expected = ["not an image (Content-Type text/html)", "truncated image", "truncated body", "too large", "refused: not an http(s) URL", "HTTP 404", "unusable URL"]
    canvases = [f"{museum.url('/m/bad.json')}/canvas/{i}" for i in range(1, 8)]
    reasons.update(zip(canvases, expected))
    assert set(skipped) == set(reasons)
    for item, reason in reasons.items():
        assert reason in skipped[item], (item, skipped[item])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(lines) == len(reasons) and all(any(item in line for line in lines) for item in reasons)
    assert museum.hits["/plain/throttled.jpg"] == 2 and elapsed >= 1.0  # waited Retry-After: 1, then got it
    assert museum.hits["/bad/closed.jpg"] == 2  # a body cut short is retried
    assert museum.agents == {USER_AGENT} and USER_AGENT.startswith("stylecluster/")


def test_a_rerun_downloads_nothing_that_is_complete(museum, tmp_path):
    out = tmp_path / "fetched"
    fetch_iiif(museum.top, out, _options(), quiet=True)
    first = _labels(out)
    museum.hits.clear()
    report = fetch_iiif(museum.top, out, _options(), quiet=True)
    assert (report.downloaded, report.resumed) == (0, 6)
    good = [path for path in museum.hits if not path.startswith(("/bad/", "/m/missing"))]
    assert good == []  # documents from DIR/_iiif, complete images not asked for again
    pd.testing.assert_frame_equal(_labels(out), first)
    museum.hits.clear()
    fetch_iiif(museum.top, out, _options(refresh=True), quiet=True)
    assert museum.hits["/top.json"] == 1 and museum.image_hits() == sum(museum.hits[p] for p in museum.hits if p.startswith("/bad/") and p.endswith(".jpg"))


def test_depth_and_item_limits(museum, tmp_path):
    report = fetch_iiif(museum.top, tmp_path / "shallow", _options(max_depth=1), quiet=True)
    assert report.canvases == 0 and report.not_followed == 8  # the manifests are at depth 2
    report = fetch_iiif(museum.top, tmp_path / "two", _options(max_items=2), quiet=True)
    assert report.canvases == 2 and report.beyond_limit
    assert _labels(tmp_path / "two")["title"].tolist() == ["Venus at her Mirror", "The Night Watch"]


def test_sources_and_folders_that_are_refused(museum, tmp_path):
    not_iiif = tmp_path / "search.json"
    not_iiif.write_text(json.dumps({"results": []}))
    with pytest.raises(InputError, match="not a IIIF"):
        fetch_iiif(str(not_iiif), tmp_path / "a", _options())
    with pytest.raises(InputError, match="only http"):
        fetch_iiif("ftp://127.0.0.1/manifest.json", tmp_path / "b", _options())
    with pytest.raises(MissingInputError):
        fetch_iiif(str(tmp_path / "absent.json"), tmp_path / "c", _options())
    with pytest.raises(InputError, match="HTTP 404"):
        fetch_iiif(museum.url("/nothing.json"), tmp_path / "d", _options())
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not made by"):
        fetch_iiif(museum.top, foreign, _options())
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert main(["fetch", "gopher://127.0.0.1/x", "--out", str(tmp_path / "e")]) == 2


def test_fetch_from_a_local_manifest_file_on_the_command_line(tmp_path, capsys):
    with Site() as site:
        image = site.add("/a.jpg", jpeg(80, 60), content_type="image/jpeg")
        manifest(site, "/m.json", "Local", [{"image": image}], metadata=[("Creator", "Anonymous"), ("Date", "between 1620 and 1630")])
        source = tmp_path / "manifest.json"
        source.write_bytes(site.routes["/m.json"].body)
        assert main(["fetch", str(source), "--out", str(tmp_path / "out"), "-q"]) == 0
    assert "1 of 1 canvases" in capsys.readouterr().out
    row = _labels(tmp_path / "out").iloc[0]
    assert (row["artist"], row["year"], row["manifest"]) == ("Anonymous", "1620", site.url("/m.json"))


# ----------------------------------------------------------------------------- kill and resume


def test_a_killed_fetch_resumes_and_loses_only_what_was_in_flight(tmp_path):
    n = 30
    out = tmp_path / "fetched"
    with Site() as site:
        source = flat_collection(site, n, delay=0.15)
        command = [sys.executable, "-m", "stylecluster", "fetch", source, "--out", str(out), "--concurrency", "2", "-q"]
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = out / JOURNAL
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not journal.is_file() or len(journal.read_text().splitlines()) < 6):
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before = [json.loads(line)["image_url"] for line in journal.read_text().splitlines() if line.strip()]
        assert 6 <= len(done_before) < n
        site.hits.clear()
        assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
        assert not any(site.hits[url.replace(site.base, "")] for url in done_before)  # nothing complete fetched again
        assert site.image_hits() == n - len(done_before)
    labels = _labels(out)
    assert len(labels) == n and labels["title"].tolist() == [f"work {i}" for i in range(n)]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") and p.name != ".fetch.lock"]  # no temporary leftovers
    for path in labels["path"]:
        with Image.open(out / path) as image:
            image.load()


# ----------------------------------------------------------------------------- parsing


def test_text_shapes_and_image_requests():
    assert text_of([{"@value": "Rembrandt", "@language": "en"}]) == "Rembrandt"
    assert text_of({"nl": ["De Nachtwacht"], "en": ["The Night Watch"]}) == "The Night Watch"
    assert text_of("<b>Claude</b>\x1b[31m &amp; Monet\n") == "Claude [31m & Monet"
    record = CanvasRecord("m", "c", service="http://127.0.0.1:1/s", image_url="http://127.0.0.1:1/s/full/max/0/default.jpg")
    tiles = {"@context": "http://iiif.io/api/image/3/context.json", "profile": "level0", "width": 4000, "height": 3000,
             "tiles": [{"width": 512, "scaleFactors": [1, 2, 4, 8, 16]}]}
    assert image_request(record, tiles, 1024).endswith("/full/500,375/0/default.jpg")  # the whole image fits one tile at 1/8
    small = {"@context": "http://iiif.io/api/image/2/context.json", "profile": ["http://iiif.io/api/image/2/level0.json"], "sizes": [{"width": 100, "height": 80}]}
    assert image_request(record, small, 1024).endswith("/full/100,/0/default.jpg")  # nothing as large: the largest
    capped = {"@context": "http://iiif.io/api/image/3/context.json", "profile": "level2", "maxWidth": 800}
    assert image_request(record, capped, 1024).endswith("/full/!800,800/0/default.jpg")
    assert image_request(record, None, 1024) == record.image_url
    hostile = image_stem(CanvasRecord("file:///../../etc/passwd", "..\\..\\.ssh/id_rsa\x00 \u202e"))
    assert re.fullmatch(r"images/file-etc-passwd-[0-9a-f]{10}/ssh-id-rsa-[0-9a-f]{10}", hostile)
    with pytest.raises(ValueError):
        parse_document({"@context": CONTEXT3, "type": "AnnotationPage"})


# ----------------------------------------------------------------------------- out: report, map, export


def _fetched_collection(site: Site, folder: Path) -> Path:
    """Six works by two artists, one with a hostile homepage."""
    members = []
    for i in range(6):
        image = site.add(f"/w/{i}.jpg", jpeg(96, 72, seed=i), content_type="image/jpeg")
        homepage = "javascript:alert(1)" if i == 5 else site.url(f"/record/{i}.html")
        site.add(f"/record/{i}.html", f"<html><title>record {i}</title><body>record {i}</body></html>".encode(), content_type="text/html")
        members.append((manifest(site, f"/w/m{i}.json", f"Work <{i}>", [{"image": image}], metadata=[("Artist", "Vermeer" if i < 3 else "Hals"), ("Date", f"c. {1650 + i}")],
                                  homepage=[{"id": homepage, "type": "Text", "label": {"en": ["record"]}}]), "Manifest"))
    fetch_iiif(collection3(site, "/w/collection.json", members), folder, _options(), quiet=True)
    return folder


def _store_and_clusters(fetched: Path, folder: Path) -> tuple[Path, Path]:
    """A store of the fetched images with made-up vectors, and two clusters (Vermeer's, Hals's)."""
    from stylecluster.data.decode import hash_file
    from stylecluster.store import StoreWriter

    labels = _labels(fetched)
    writer = StoreWriter(folder / "store", branches={"global": {"backbone": "synthetic"}}, dims={"global": 4},
                         parts={"global": {"a": (0, 2), "b": (2, 4)}}, images_root=str(fetched.resolve()), overwrite=True)
    rng = np.random.default_rng(0)
    for path, artist in zip(labels["path"], labels["artist"]):
        writer.add(path, hash_file(fetched / path).sha256, 96, 72, {"global": rng.normal(3 if artist == "Vermeer" else -3, 1, 4).astype(np.float32)})
    writer.close()
    clusters = folder / "clusters.csv"
    pd.DataFrame({"path": labels["path"], "cluster": (labels["artist"] == "Hals").astype(int), "probability": np.linspace(1, 0.5, len(labels))}).to_csv(clusters, index=False)
    return folder / "store", clusters


def test_export_iiif_is_a_valid_collection_with_one_manifest_per_cluster(tmp_path, capsys):
    prezi3 = pytest.importorskip("iiif_prezi3")  # the dev extra has it
    Collection, Manifest = prezi3.Collection, prezi3.Manifest

    with Site() as site:
        fetched = _fetched_collection(site, tmp_path / "fetched")
    clusters = tmp_path / "clusters.csv"
    labels = _labels(fetched)
    pd.DataFrame({"path": labels["path"], "cluster": (labels["artist"] == "Hals").astype(int), "probability": 0.9}).to_csv(clusters, index=False)
    out = tmp_path / "clusters.json"
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "Haarlem portraits"}))
    assert main(["export-iiif", str(clusters), "--labels", str(fetched / "labels.csv"), "--out", str(out), "--names", str(names),
                 "--base-url", "https://example.invalid/clusters/"]) == 0
    assert "2 cluster manifests, 6 works" in capsys.readouterr().out
    data = json.loads(out.read_text(encoding="utf-8"))
    Collection(**data)
    for manifest in data["items"]:
        Manifest(**{"@context": CONTEXT3, **manifest})
    assert data["id"] == "https://example.invalid/clusters/clusters.json"
    first, second = data["items"]
    assert (first["id"], second["id"]) == ("https://example.invalid/clusters/clusters/cluster-0", "https://example.invalid/clusters/clusters/cluster-1")
    assert first["label"] == {"none": ["0 · Vermeer 100 % · 1650–1652"]} and second["label"] == {"none": ["1 · Haarlem portraits"]}
    by_cluster = [[c["id"] for c in m["items"]] for m in data["items"]]
    assert by_cluster == [labels.loc[labels["artist"] == a, "canvas"].tolist() for a in ("Vermeer", "Hals")]
    canvas = first["items"][0]
    body = canvas["items"][0]["items"][0]["body"]
    assert body["id"] == labels.loc[0, "image_url"] and "service" not in body
    assert canvas["partOf"] == [{"id": labels.loc[0, "manifest"], "type": "Manifest"}] and canvas["homepage"][0]["id"] == labels.loc[0, "homepage"]
    assert "homepage" not in second["items"][-1]  # javascript: is no link
    assert main(["export-iiif", str(clusters), "--labels", str(fetched / "labels.csv"), "--out", str(clusters)]) == 2  # never over an input
    assert main(["export-iiif", str(clusters), "--labels", str(fetched / "labels.csv"), "--out", str(tmp_path / "local.json")]) == 0
    local = json.loads((tmp_path / "local.json").read_text(encoding="utf-8"))
    Collection(**local)  # ids under the folder's file: URL by default
    assert local["id"] == (tmp_path / "local.json").resolve().as_uri()


@pytest.fixture(scope="module")
def fetched_report(tmp_path_factory):
    """A report and a map of a fetched collection; the site stays up for the records' links."""
    from stylecluster.store import load_store
    from stylecluster.viz import load_explorer, write_map, write_report

    folder = tmp_path_factory.mktemp("fetched-report")
    with Site() as site:
        fetched = _fetched_collection(site, folder / "fetched")
        store, clusters = _store_and_clusters(fetched, folder)
        explorer = load_explorer(load_store(store), clusters, fetched / "labels.csv")
        report = write_report(explorer, folder / "report", per_section=6, workers=1)
        yield site, explorer, report, write_map(explorer, folder / "map.html").html


def test_report_and_map_show_title_artist_date_and_a_safe_link(fetched_report):
    site, explorer, report, map_path = fetched_report
    assert explorer.label_column == "artist"
    pages = "".join(p.read_text(encoding="utf-8") for p in report.pages.values())
    assert "Work &lt;0&gt;" in pages and "Vermeer, c. 1650" in pages and "Work <0>" not in pages
    link = f'<a href="{site.url("/record/0.html")}" rel="noopener noreferrer" target="_blank">record</a>'
    assert link in pages and "javascript:" not in pages
    map_html = map_path.read_text(encoding="utf-8")
    assert site.url("/record/1.html") in map_html and "javascript:alert" not in map_html


def test_browser_follows_a_works_record_link_from_the_report_and_the_map(fetched_report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    site, explorer, report, map_path = fetched_report
    page = next(p for p in report.pages.values() if site.url("/record/0.html") in p.read_text(encoding="utf-8"))
    browser.get(page.resolve().as_uri())
    home = browser.current_window_handle
    link = browser.find_element(By.XPATH, f'//a[@href="{site.url("/record/0.html")}"]')
    assert link.get_attribute("rel") == "noopener noreferrer"
    hits = site.hits["/record/0.html"]
    link.click()
    WebDriverWait(browser, 20).until(lambda d: len(d.window_handles) == 2)
    browser.switch_to.window(next(h for h in browser.window_handles if h != home))
    WebDriverWait(browser, 20).until(lambda d: d.title == "record 0")
    assert site.hits["/record/0.html"] == hits + 1 and browser.execute_script("return window.opener") is None
    browser.close()
    browser.switch_to.window(home)

    browser.get(map_path.resolve().as_uri())
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return !!(window.styleMap && window.styleMap.ready)"))
    titles = explorer.points["title"].tolist()  # point i of the map is row i of the explorer
    for title, expected in (("Work <0>", site.url("/record/0.html")), ("Work <5>", None)):  # work 5's homepage is javascript:
        browser.execute_script("return window.styleMap.show(arguments[0]);", titles.index(title))
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "sc-title").text == title)
        record = browser.find_element(By.ID, "sc-record")
        assert record.get_attribute("href") == expected and record.is_displayed() == (expected is not None)
