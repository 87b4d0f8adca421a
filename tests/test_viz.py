"""Exploration: the style map, the HTML report (escaping, cluster sections, patches), style search
and their CLI commands, on a small synthetic collection with hostile file names and labels."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import MeanColourBranch, make_image
from stylecluster.cli import main
from stylecluster.config import Config, LocalConfig
from stylecluster.data.discovery import discover_images
from stylecluster.features.embedder import embed_images
from stylecluster.store import load_store
from stylecluster.viz import find_similar, load_explorer, write_map, write_report
from stylecluster.viz.html import script_json
from stylecluster.viz.members import SECTIONS, cluster_members
from stylecluster.viz.patch_strip import GAP
from stylecluster.viz.strokes import STROKES, nearest_to_centroid
from vizdata import HOSTILE_LABEL, HOSTILE_NAME, QUOTED_NAME, hostile_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return hostile_collection(tmp_path_factory.mktemp("viz") / "collection", n=120, n_clusters=4)


@pytest.fixture(scope="module")
def explorer(collection):
    return load_explorer(load_store(collection.store), collection.clusters, collection.labels, "style")


@pytest.fixture(scope="module")
def report(explorer, tmp_path_factory):
    # per_section 100: every member is shown, so the hostile image is on a page.
    return write_report(explorer, tmp_path_factory.mktemp("report") / "report", per_section=100, workers=1)


class _Document(HTMLParser):
    """Tags, attributes, script bodies and visible text of a page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.text: list[str] = []
        self._in_script: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "script":
            self._in_script = attrs
            self.scripts.append((attrs, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        else:
            self.text.append(data)


def _points_json(page: str) -> dict:
    doc = _Document(page)
    (body,) = [body for attrs, body in doc.scripts if attrs.get("id") == "sc-points"]
    return json.loads(body)


def _array(data: dict, name: str) -> np.ndarray:
    """One of the page's typed arrays, decoded here independently of stylecluster.viz.payload."""
    spec = data["arrays"][name]
    return np.frombuffer(base64.b64decode(spec["data"]), dtype=np.dtype(spec["dtype"]))


def _text(data: dict, column: str) -> list:
    return [v for chunk in data["text"] for v in chunk[column]]


def _traces(page: str) -> list[np.ndarray]:
    """The points (positions) of each trace, from the page's trace array."""
    data = _points_json(page)
    trace = _array(data, "trace")
    return [np.flatnonzero(trace == k) for k in range(len(data["traces"]))]


def _sidecar_text(folder: Path) -> list[dict]:
    """The text chunks a large map wrote beside it, in order."""
    chunks = []
    for k in range(len(list((folder / "text").glob("*.js")))):
        body = (folder / "text" / f"{k}.js").read_text()
        prefix = f"window.styleMapText({k}, "
        assert body.startswith(prefix) and body.endswith(");\n")
        chunks.append(json.loads(body[len(prefix) : -3]))
    return chunks


# ----------------------------------------------------------------------------- map


def test_map_is_self_contained_and_has_every_point(explorer, tmp_path):
    result = write_map(explorer, tmp_path / "map.html", workers=1)
    page = result.html.read_text()
    assert result.self_contained and result.n_points == 120 and result.n_thumbnails == 120
    doc = _Document(page)
    # Nothing is loaded from elsewhere: no script/link/img references outside the file.
    assert not [a for t, a in doc.tags if t == "script" and a.get("src")]
    assert not [t for t, _ in doc.tags if t == "link"]
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js itself is inlined
    data = _points_json(page)
    assert sorted(_text(data, "name")) == sorted(explorer.store.paths)
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in data["thumbs"]) and len(data["thumbs"]) == 120
    assert min(_array(data, "thumb")) >= 0
    # each point is drawn exactly once, across the per-cluster WebGL traces
    traces = _traces(page)
    assert len(traces) == 4 and np.array_equal(np.sort(np.concatenate(traces)), np.arange(120))
    assert HOSTILE_NAME not in page


def test_large_collection_gets_a_folder_of_thumbnails(explorer, tmp_path):
    result = write_map(explorer, tmp_path / "big.html", embed_limit=50, workers=1)
    assert not result.self_contained and result.thumbs_dir == tmp_path / "big_files" / "thumbs"
    page = result.html.read_text()
    data = _points_json(page)
    # Nothing per point is in the page: no thumbnail, no file name, no text; they are beside it.
    assert "data:image/jpeg" not in page and "thumbs" not in data and "text" not in data and "arrays" not in data
    assert not any(sha in page for sha in explorer.points["sha256"]) and not any(p in page for p in explorer.points["path"] if len(p) > 8)
    text = _sidecar_text(tmp_path / "big_files")
    assert [len(c["name"]) for c in text] == [120]
    srcs = [src for chunk in text for src in chunk["src"]]
    assert len(srcs) == 120 and len(set(srcs)) == 120
    for src in srcs:
        assert src.startswith("big_files/thumbs/") and (tmp_path / src).is_file()
    assert result.html.stat().st_size < 6_000_000


def test_colour_by_label_escapes_legend_and_caches_umap(explorer, tmp_path, monkeypatch):
    write_map(explorer, tmp_path / "first.html", workers=1)  # fits (or reuses) the reducer
    cached = list((Path(explorer.store.path) / "_viz").glob("umap-*.npy"))
    assert len(cached) == 1

    import umap

    def refit(*args, **kwargs):
        raise AssertionError("UMAP was refitted although a cached reducer exists")

    monkeypatch.setattr(umap.UMAP, "fit_transform", refit)
    page = write_map(explorer, tmp_path / "label.html", color_by="label", workers=1).html.read_text()
    assert len(_traces(page)) == 4
    names = [t["name"] for t in _points_json(page)["traces"]]
    assert "&lt;img src=x onerror=alert(2)&gt; (30)" in names  # legend entry, escaped for plotly, with its count
    assert HOSTILE_LABEL not in page
    assert _points_json(page)["labelColumn"] == "style"


def test_binary_arrays_decode_to_the_maps_numbers(explorer, tmp_path):
    from stylecluster.viz.umap_map import umap_coordinates

    page = write_map(explorer, tmp_path / "map.html", workers=1).html.read_text()
    data = _points_json(page)
    coords = umap_coordinates(explorer.fused, Path(explorer.store.path) / "_viz")  # the cached layout the map drew
    assert np.array_equal(_array(data, "x"), coords[:, 0]) and np.array_equal(_array(data, "y"), coords[:, 1])
    assert np.array_equal(_array(data, "cluster"), explorer.points["cluster"].to_numpy())
    assert np.array_equal(_array(data, "prob"), explorer.points["probability"].to_numpy().astype(np.float32))
    assert _array(data, "x").dtype == np.float32 and _array(data, "trace").dtype == np.uint16
    # 22 bytes a point before base64 (8 coordinates, 2 trace, 4 cluster, 4 probability, 4 thumbnail)
    assert sum(len(base64.b64decode(a["data"])) for a in data["arrays"].values()) == 22 * 120
    # the thumbnail index points at each point's own thumbnail
    thumb = _array(data, "thumb")
    order = sorted(explorer.points["sha256"])
    assert [order[t] for t in thumb] == explorer.points["sha256"].tolist()


def _synthetic_points(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = pd.DataFrame({
        "path": [f"folder/painting_{i:07d}.jpg" for i in range(n)],
        "sha256": [f"{i:064x}" for i in range(n)],
        "cluster": rng.integers(-1, 20, n),
        "probability": rng.uniform(size=n),
        "year": np.where(rng.uniform(size=n) < 0.5, np.nan, rng.integers(1400, 2000, n)),
        "title": [f"work {i}" for i in range(n)],
        "artist": [f"artist_{i % 97}" for i in range(n)],
    })
    return points, rng.normal(size=(n, 2)).astype(np.float32)


def test_large_map_page_stays_the_same_size_as_points_grow(tmp_path):
    from stylecluster.viz.payload import CHUNK
    from stylecluster.viz.umap_map import Sidecar, map_fragment

    sizes, sidecar = {}, {}
    for n in (1_000, 50_000):
        points, coords = _synthetic_points(n)
        thumbs = {sha: f"m/thumbs/{sha}.jpg" for sha in points["sha256"]}
        folder = tmp_path / str(n)
        sizes[n] = len(map_fragment(points, coords, thumbs, sidecar=Sidecar(folder, "m")).encode())
        sidecar[n] = (folder / "points.js").stat().st_size
        assert len(list((folder / "text").glob("*.js"))) == -(-n // CHUNK)
    assert abs(sizes[50_000] - sizes[1_000]) < 2_000  # only the legend's counts change
    # the arrays: 22 bytes a point as base64 (4/3), plus a constant
    assert abs(sidecar[50_000] - sidecar[1_000] - 49_000 * 22 * 4 / 3) < 1_000


def test_place_by_neighbours_by_hand():
    from stylecluster.viz.umap_map import place_by_neighbours

    fused = np.array([[0, 0], [10, 0], [0, 10], [1, 0], [5, 0], [0, 9]], np.float32)
    sample = np.array([0, 1, 2])
    coords = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
    placed = place_by_neighbours(fused, sample, coords, metric="euclidean", k=2)
    assert np.array_equal(placed[:3], coords)
    # (1, 0): distances 1 and 9 to points 0 and 1, weights 1/1 and 1/9: x = (1/9) / (1 + 1/9) = 0.1
    assert np.allclose(placed[3], [0.1, 0.0], atol=1e-5)
    # (5, 0): halfway between 0 and 1 (5 away from each; point 2 is 11.2 away)
    assert np.allclose(placed[4], [0.5, 0.0], atol=1e-5)
    # (0, 9): 1 from point 2 and 9 from point 0: y = 1 / (1 + 1/9) = 0.9
    assert np.allclose(placed[5], [0.0, 0.9], atol=1e-5)


def test_large_layout_fits_umap_on_a_seeded_sample(monkeypatch):
    from stylecluster.viz import umap_map

    fitted = []

    def fake_fit(fused, params):
        fitted.append(fused.copy())
        return fused[:, :2] * 2.0

    monkeypatch.setattr(umap_map, "LAYOUT_SAMPLE", 40)
    monkeypatch.setattr(umap_map, "_fit_umap", fake_fit)
    fused = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    coords = umap_map.umap_coordinates(fused)
    assert coords.shape == (100, 2) and len(fitted) == 1 and len(fitted[0]) == 40
    sample = [i for i in range(100) if any(np.array_equal(fused[i], row) for row in fitted[0])]
    assert len(sample) == 40 and np.array_equal(coords[sample], fused[sample, :2] * 2.0)
    again = umap_map.umap_coordinates(fused)
    assert np.array_equal(coords, again) and np.array_equal(fitted[0], fitted[1])  # the same seed, the same sample


def test_script_json_cannot_close_its_script():
    text = script_json({"name": "</script><script>alert(1)</script>", "x": "a&b\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["name"] == "</script><script>alert(1)</script>"


# ----------------------------------------------------------------------------- report


def _pages(report):
    return [report.index, *report.pages.values()]


def test_report_escapes_file_names_and_labels(report):
    for path in _pages(report):
        page = path.read_text()
        assert HOSTILE_NAME not in page and HOSTILE_LABEL not in page and "<b>name</b>" not in page, path.name
        doc = _Document(page)
        assert not [(t, k) for t, attrs in doc.tags for k in attrs if k.startswith("on")], path.name
        if path != report.index:
            assert not doc.scripts, f"{path.name} should need no script at all"
    # the hostile names are shown, as text
    page = report.pages[0].read_text()  # the hostile image is in cluster 0, the quoted one in 1
    visible = "".join(_Document(page).text) + "".join(_Document(report.pages[1].read_text()).text)
    assert HOSTILE_NAME in visible and QUOTED_NAME in visible and HOSTILE_LABEL in visible
    assert html.escape(HOSTILE_NAME) in page
    # the index's only scripts are plotly's and our own data/hover code
    index = _Document(report.index.read_text())
    assert [a.get("type") for a, _ in index.scripts].count("application/json") == 1
    assert not [a for a, _ in index.scripts if a.get("src")]


def test_cluster_pages_list_typical_uncertain_and_outliers(report, explorer):
    assert sorted(report.pages) == [0, 1, 2, 3]
    points = explorer.points
    for cluster, path in report.pages.items():
        page = path.read_text()
        sections = {}
        for block in page.split("<section>")[1:]:
            title = html.unescape(re.search(r"<h2>(.*?) <span", block).group(1))
            sections[title] = [html.unescape(n) for n in re.findall(r'<div class="name">(.*?)</div>', block)]
        assert list(sections) == list(SECTIONS)
        members = points[points["cluster"] == cluster]
        shown = [name for names in sections.values() for name in names]
        assert sorted(shown) == sorted(members["path"])  # per_section=100: all shown, each once
        prob = dict(zip(members["path"], members["probability"]))
        typical = [prob[n] for n in sections["Most typical"]]
        assert typical == sorted(typical, reverse=True)
        # the one misplaced image (probability 0.3) is the least certain member
        assert sections["Least certain"][0] == members.loc[members["probability"].idxmin(), "path"]
        assert prob[sections["Least certain"][0]] == pytest.approx(0.3)
        assert "composition" in page and 'class="bar"' in page


def test_every_shown_image_has_its_five_dog_patches_and_thumbnail(report):
    page = report.pages[1].read_text()
    strips = re.findall(r'<img class="patches" src="\.\./(patches/[0-9a-f]{64}\.png)"', page)
    thumbs = re.findall(r'<img class="thumb" src="\.\./(thumbs/[0-9a-f]{64}\.jpg)"', page)
    assert len(strips) == len(thumbs) == page.count('<div class="card">') == 30
    size = LocalConfig().patch_size
    for rel in strips:
        with Image.open(report.folder / rel) as strip:
            assert strip.size == (5 * size + 4 * GAP, size)
            assert np.asarray(strip).std() > 0  # real DoG content, not a blank strip
    assert all((report.folder / rel).is_file() for rel in thumbs)


def test_index_has_map_metrics_and_sizes(report):
    page = report.index.read_text()
    assert report.metrics is not None and 0.5 < report.metrics["nmi"] <= 1.0
    assert "NMI" in page and "purity" in page
    for cluster in range(4):
        assert f'href="clusters/cluster-{cluster}.html"' in page
    assert _points_json(page)["clusterHref"]["0"] == "clusters/cluster-0.html"


def test_members_are_disjoint_and_bounded(explorer):
    for members in cluster_members(explorer.points, explorer.fused, per=4):
        lists = [set(rows["path"]) for rows in members.sections.values()]
        assert all(len(s) <= 4 for s in lists)
        assert sum(map(len, lists)) == len(set().union(*lists))


def test_cluster_page_lists_a_bounded_number_and_counts_the_rest(explorer):
    from stylecluster.viz.report import cluster_page

    for per in (2, 4):
        members = cluster_members(explorer.points, explorer.fused, per)[0]
        html = cluster_page(members, (None, None), explorer.points, "style", {}, {})
        assert html.count('class="card"') == 3 * per
        assert f"{members.size - 3 * per} more members are not listed here" in html


def test_report_refuses_foreign_folder_and_needs_overwrite(explorer, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a stylecluster report"):
        write_report(explorer, foreign, workers=1)
    out = tmp_path / "report"
    write_report(explorer, out, per_section=2, workers=1)
    with pytest.raises(ValueError, match="--overwrite"):
        write_report(explorer, out, workers=1)
    write_report(explorer, out, per_section=2, workers=1, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- similar


def test_similar_returns_the_image_itself_first(explorer, collection, tmp_path):
    query = explorer.points["path"].iloc[7]
    result = find_similar(explorer, query, k=5)
    assert result.inside and len(result.neighbours) == 5
    assert result.neighbours["path"].iloc[0] == query
    assert result.neighbours["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert result.neighbours["similarity"].is_monotonic_decreasing
    # by its file, and by a copy elsewhere (same content): still the stored image
    by_file = find_similar(explorer, collection.images / query, k=3)
    assert by_file.inside and by_file.neighbours["path"].iloc[0] == query
    copy = tmp_path / "copy.jpg"
    shutil.copyfile(collection.images / query, copy)
    assert find_similar(explorer, copy, k=3).neighbours["path"].iloc[0] == query
    # nearest neighbours of a synthetic image are mostly of its own group
    same_group = result.neighbours["label"].iloc[1:] == result.neighbours["label"].iloc[0]
    assert same_group.mean() >= 0.75


def test_similar_embeds_an_outside_image_with_the_stores_branches(image_folder, tmp_path, monkeypatch):
    from stylecluster.features import embedder

    config = Config()
    config.embed.workers = 0
    store_path = tmp_path / "s.store"
    embed_images(discover_images(image_folder), image_folder, store_path, config, quiet=True, branches=[MeanColourBranch()])
    explorer = load_explorer(load_store(store_path), None)
    outside = make_image(tmp_path / "elsewhere" / "new.png", size=(50, 40), noise_seed=99)

    monkeypatch.setattr(embedder, "build_branches", lambda config, device: [MeanColourBranch()])
    result = find_similar(explorer, outside, k=4)
    assert not result.inside and len(result.neighbours) == 4
    assert result.neighbours["similarity"].is_monotonic_decreasing

    monkeypatch.setattr(embedder, "build_branches", lambda config, device: [MeanColourBranch(tag="v2")])
    with pytest.raises(ValueError, match="--config"):
        find_similar(explorer, outside, k=4)


def test_similar_outside_image_with_the_real_backbone(tmp_path):
    from stylecluster.demo import sample_dir

    config = Config()
    config.embed.workers = 0
    paths = discover_images(sample_dir() / "images")
    embed_images(paths[:8], sample_dir(), tmp_path / "real.store", config, quiet=True)
    explorer = load_explorer(load_store(tmp_path / "real.store"), None)
    result = find_similar(explorer, paths[20], k=3, config=config)
    assert not result.inside and len(result.neighbours) == 3
    inside = find_similar(explorer, paths[2], k=3, config=config)
    assert inside.inside and inside.neighbours["path"].iloc[0] == "images/" + paths[2].name

    # The report's patches are the ones the local branch encoded: same parameters, same seed.
    store = explorer.store
    if store.local is None:
        pytest.skip("the embedder made no local branch: nothing to compare the patches with")
    from stylecluster.data.decode import load_image
    from stylecluster.features.local_ import LocalBranch
    from stylecluster.viz.patch_strip import drawn_patches
    from stylecluster.viz.provenance import config_for_store

    store_config = config_for_store(store, config)
    patches = drawn_patches(load_image(paths[3]), store.sha256[3], store_config)
    vector = LocalBranch(store_config.local).encode((patches.dog[None, :, None] / 255.0).astype(np.float32))
    assert np.allclose(vector[0], store.local[3], atol=1e-4)


# ----------------------------------------------------------------------------- CLI


def test_cli_plot_report_similar(collection, tmp_path, capsys):
    store, clusters, labels = str(collection.store), str(collection.clusters), str(collection.labels)
    out = tmp_path / "map.html"
    assert main(["plot", store, "--clusters", clusters, "--labels", labels, "--color-by", "artist", "--out", str(out), "-q"]) == 0
    assert "self-contained" in capsys.readouterr().out
    assert _points_json(out.read_text())["labelColumn"] == "artist"
    assert main(["plot", store, "--clusters", clusters, "--out", str(out), "-q"]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["plot", store, "--clusters", clusters, "--color-by", "style", "--out", str(tmp_path / "m2.html"), "-q"]) == 2

    report = tmp_path / "report"
    assert main(["report", store, "--clusters", clusters, "--labels", labels, "--label-column", "style", "--out", str(report), "-q"]) == 0
    assert "4 cluster pages" in capsys.readouterr().out
    assert (report / "index.html").is_file() and (report / "clusters" / "cluster-3.html").is_file()

    similar = tmp_path / "similar.html"
    query = pd.read_csv(clusters)["path"].iloc[5]
    assert main(["similar", store, query, "--k", "3", "--clusters", clusters, "--out", str(similar), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["1", "1.000"] and lines[1].endswith(query)
    assert query in similar.read_text() and "data:image/jpeg;base64," in similar.read_text()
    assert main(["similar", store, "no/such/image.jpg", "-q"]) == 2


# ----------------------------------------------------------------------------- names and time (issue 16)


def test_cluster_names_from_labels_and_years():
    from stylecluster.viz.names import name_table

    points = pd.DataFrame({
        "cluster": [0] * 10 + [1] * 4 + [-1] * 2,
        "label": ["Baroque"] * 7 + ["Rococo"] * 2 + ["Gothic"] + ["Pop"] * 3 + ["(no label)"] + ["Pop", "Pop"],
        "year": [1690.0 + 10 * i for i in range(10)] + [np.nan] * 6,
    })
    table = name_table(points, has_labels=True).set_index("cluster")
    # Gothic (10 %) is the third value: only two are named; the span is the middle 80 % of the years
    assert table.loc[0, "name"] == "Baroque 70 % · Rococo 20 % · 1699–1771"
    assert table.loc[1, "name"] == "Pop 100 %"  # shares among the labelled works; no years, no span
    assert table.loc[-1, "name"] == "outliers: Pop 100 %"
    assert table.index.tolist() == [0, 1, -1]
    assert name_table(points.drop(columns="year"), has_labels=False)["name"].tolist() == ["cluster 0", "cluster 1", "outliers"]


def test_name_overrides_are_validated(tmp_path):
    from stylecluster.errors import InputError
    from stylecluster.viz.names import read_name_overrides

    good = tmp_path / "names.json"
    good.write_text(json.dumps({"3": " Venetian colour ", "-1": "unplaced"}))
    assert read_name_overrides(good) == {3: "Venetian colour", -1: "unplaced"}
    for text, message in (("[1, 2]", "JSON object"), ('{"x": "a"}', "not a cluster number"), ('{"1": ""}', "non-empty"), ("{", "not JSON")):
        good.write_text(text)
        with pytest.raises(InputError, match=message):
            read_name_overrides(good)


def test_years_are_read_from_free_text_dates():
    from stylecluster.viz.works import parse_year

    assert [parse_year(v) for v in ("c. 1615", "1885–86", "1890s", 1981, "1981.0")] == [1615, 1885, 1890, 1981, 1981]
    assert all(np.isnan(parse_year(v)) for v in ("n.d.", "", None, "12345", np.nan))


def test_report_names_clusters_in_the_companion_table_and_pages(explorer, tmp_path):
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"2": "<b>Venetian</b> & co"}))
    report = write_report(explorer, tmp_path / "report", per_section=3, workers=1, names=names)
    table = pd.read_csv(report.folder / "CLUSTERS.names.csv")
    assert table.columns.tolist() == ["cluster", "name", "auto_name", "size", "share", "composition", "span"]
    assert table["size"].sum() == len(explorer.points)
    row = table.set_index("cluster").loc[2]
    assert row["name"] == "<b>Venetian</b> & co" and row["auto_name"].startswith("style_2 ")
    page_text = (report.folder / "clusters" / "cluster-2.html").read_text()
    assert "&lt;b&gt;Venetian&lt;/b&gt; &amp; co" in page_text and "<b>Venetian" not in page_text
    index = report.index.read_text()
    assert 'id="sc-timeline"' in index and 'id="sc-decades"' in index
    assert len(list((report.folder / "montages").glob("*.jpg"))) == explorer.points["cluster"].nunique()


def test_timeline_and_decades_from_the_api(explorer):
    from stylecluster import viz

    fig = viz.timeline(explorer)
    assert len(fig.data) == explorer.points["cluster"].nunique()
    assert sum(len(t.x) for t in fig.data) == explorer.points["year"].notna().sum()
    shares = viz.decade_shares(explorer.points)
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert len(viz.decades(explorer).data) == explorer.points["cluster"].nunique()
    assert viz.cluster_names(explorer, {0: "mine"}).set_index("cluster").loc[0, "name"] == "mine"


def test_timeline_draws_a_bounded_seeded_sample(explorer):
    from stylecluster.viz.chronology import timeline_figure
    from stylecluster.viz.names import cluster_names

    table = cluster_names(explorer)
    dated = int(explorer.points["year"].notna().sum())
    fig = timeline_figure(explorer.points, table, limit=25)
    drawn = sorted(i for t in fig.data for i in t.customdata)
    assert len(drawn) == 25 and set(drawn) <= set(np.flatnonzero(explorer.points["year"].notna()))
    assert f"{dated} dated works" in fig.layout.title.text and "a sample of 25 drawn" in fig.layout.title.text
    assert len(fig.data) == explorer.points["cluster"].nunique()  # every cluster keeps its row
    assert drawn == sorted(i for t in timeline_figure(explorer.points, table, limit=25).data for i in t.customdata)


def test_cli_report_with_names(collection, tmp_path, capsys):
    names = tmp_path / "names.json"
    names.write_text('{"1": "first"}')
    out = tmp_path / "rep"
    args = ["report", str(collection.store), "--clusters", str(collection.clusters), "--labels", str(collection.labels), "--out", str(out), "--names", str(names), "--workers", "1"]
    assert main(args) == 0
    assert "first" in (out / "CLUSTERS.names.csv").read_text()
    names.write_text("[]")
    assert main([*args, "--overwrite"]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_ward_tree_of_weighted_centres_matches_scipy_on_the_works():
    from scipy.cluster.hierarchy import linkage as scipy_linkage

    from stylecluster.viz.comparison import geometry, linkage

    rng = np.random.default_rng(0)
    sizes = [5, 8, 6, 4, 9]
    centres = rng.normal(0, 5, size=(len(sizes), 3))
    fused = np.concatenate([np.repeat(c[None], n, axis=0) for c, n in zip(centres, sizes)])  # every work at its centre
    points = pd.DataFrame({"cluster": np.repeat(np.arange(len(sizes)), sizes)})
    mine = linkage(geometry(points, fused + 1e-12))
    # scipy's Ward over every work: its last k-1 merges are the clusters' merges
    assert np.allclose(mine[:, 2], scipy_linkage(fused, "ward")[-(len(sizes) - 1):, 2])


def test_works_between_two_clusters(explorer):
    from stylecluster import viz
    from stylecluster.errors import InputError
    from stylecluster.viz.comparison import geometry, memberships

    member = memberships(explorer.fused, geometry(explorer.points, explorer.fused))
    assert np.allclose(member.sum(axis=1), 1.0)
    # the synthetic collection's misplaced works (true group g0, assigned 1) sit between 0 and 1
    result = viz.compare(explorer, 0, 1, n=50)
    assert result.distance > 2  # well-separated blobs
    strays = explorer.points[(explorer.points["cluster"] == 1) & explorer.points["path"].str.startswith("g0/")]
    assert set(strays["path"]) <= set(result.between["path"])
    assert (result.between[["membership_a", "membership_b"]].min(axis=1).diff().dropna() <= 1e-12).all()  # most balanced first
    with pytest.raises(InputError, match="no cluster 99"):
        viz.compare(explorer, 0, 99)
    fig = viz.dendrogram(explorer)
    assert len(fig.layout.yaxis.ticktext) == explorer.points["cluster"].nunique()


def test_report_compares_neighbouring_clusters(report):
    page = (report.folder / "compare.html").read_text()
    assert "Works between" in page and "Every pair" in page and "<script" not in page
    assert 'id="sc-tree"' in report.index.read_text()


def test_nearest_to_centroid_by_hand():
    # mean 3.25: distances 3.25, 2.25, 1.25, 6.75
    assert nearest_to_centroid(np.array([[0.0], [1.0], [2.0], [10.0]]), 3).tolist() == [2, 1, 0]


def _tiles(file, size):
    with Image.open(file) as strip:
        pixels = np.asarray(strip, dtype=np.int16)
    return [pixels[:, x : x + size] for x in range(0, pixels.shape[1], size + GAP)]


def test_cluster_pages_show_typical_strokes_drawn_from_their_members(report, explorer):
    size = LocalConfig().patch_size
    for cluster, path in report.pages.items():
        if cluster < 0:
            continue
        page = path.read_text()
        assert "Typical strokes" in page
        src = re.search(r'src="\.\./(strokes/cluster-\d+\.png)" alt="typical strokes"', page).group(1)
        strokes = _tiles(report.folder / src, size)
        assert len(strokes) == STROKES and all(tile.shape == (size, size) for tile in strokes)
        # every typical stroke is one of the patches the cluster's own members were embedded from
        members = explorer.points.loc[explorer.points["cluster"] == cluster, "sha256"]
        own = [tile for sha in members if (report.folder / "patches" / f"{sha}.png").is_file()
               for tile in _tiles(report.folder / "patches" / f"{sha}.png", size)]
        for tile in strokes:
            assert min(np.abs(tile - other).max() for other in own) <= 1


# ----------------------------------------------------------------------------- the map at ten million points


def test_density_raster_counts_every_point_by_hand():
    from stylecluster.viz.density import DensityRaster

    # extent 4 x 2 at 4 pixels along the longer side: 2 rows x 4 columns of 1 x 1; row 0 is the top (y in [1, 2])
    raster = DensityRaster((0.0, 4.0, 0.0, 2.0), n_groups=2, side=4)
    coords = np.array([[0.5, 0.5], [0.2, 0.9], [3.5, 1.5], [4.0, 2.0], [1.5, 1.0], [2.5, 0.1], [9.0, 1.0]], np.float32)
    groups = np.array([0, 1, 0, 1, 1, 0, 0])
    raster.fit(coords, groups)
    expected = np.zeros((2, 2, 4), np.int64)
    expected[0, 1, 0] = 1  # (0.5, 0.5): bottom row, first column
    expected[1, 1, 0] = 1  # (0.2, 0.9)
    expected[0, 0, 3] = 1  # (3.5, 1.5): top row, last column
    expected[1, 0, 3] = 1  # (4, 2): the far corner falls into the last pixel
    expected[1, 1, 1] = 1  # (1.5, 1.0): y on the middle cut belongs to the lower row (rows count from the top)
    expected[0, 1, 2] = 1  # (2.5, 0.1)
    assert np.array_equal(raster.counts_, expected)  # (9, 1) lies outside the extent: not counted
    assert raster.n_points_ == 6
    rgba = raster.rgba(["#ff0000", "#0000ff"])
    assert rgba.shape == (2, 4, 4)
    assert rgba[1, 0].tolist() == [128, 0, 128, 255]  # half red, half blue; the fullest pixel (2 points) opaque
    assert rgba[1, 2].tolist() == [255, 0, 0, round(255 * (0.25 + 0.75 * np.log(2) / np.log(3)))]  # 1 point, log scale
    assert rgba[0, 0, 3] == 0  # no point: transparent


def test_density_raster_built_in_batches_equals_one_shot():
    from stylecluster.viz.density import DensityRaster, padded_extent

    rng = np.random.default_rng(3)
    coords = np.vstack([rng.normal(c, 0.3, size=(4000, 2)) for c in (-2, 0, 3)]).astype(np.float32)
    groups = rng.integers(0, 5, len(coords))
    extent = padded_extent(coords, batch_rows=997)
    assert extent == padded_extent(coords)
    one = DensityRaster(extent, 5, side=64).fit(coords, groups, batch_rows=len(coords))
    batched = DensityRaster(extent, 5, side=64).fit(coords, groups, batch_rows=997)
    assert np.array_equal(one.counts_, batched.counts_)
    assert batched.counts_.sum() == batched.n_points_ == len(coords)  # the padded extent holds every point
    assert np.array_equal(batched.counts_.sum(axis=(1, 2)), np.bincount(groups, minlength=5))
    assert batched.png_uri(["#112233"] * 5).startswith("data:image/png;base64,")


def test_zoom_tiles_partition_the_points():
    from stylecluster.viz.density import padded_extent
    from stylecluster.viz.payload import zoom_tiles

    rng = np.random.default_rng(4)
    coords = np.vstack([rng.normal(0, 0.05, size=(3000, 2)), rng.uniform(-5, 5, size=(2000, 2)),
                        np.ones((700, 2))]).astype(np.float32)  # a dense core, a spread, 700 points on one spot
    tiles = zoom_tiles(coords, padded_extent(coords), capacity=300)
    rows = np.concatenate([t[4] for t in tiles])
    assert np.array_equal(np.sort(rows), np.arange(len(coords)))  # every point in exactly one tile
    for x0, x1, y0, y1, members in tiles:
        inside = coords[members]
        assert (inside[:, 0] >= x0).all() and (inside[:, 0] <= x1).all() and (inside[:, 1] >= y0).all() and (inside[:, 1] <= y1).all()
        assert len(members) <= 300 or np.unique(inside, axis=0).shape[0] == 1  # only a stack of one spot is left whole
    assert max(len(t[4]) for t in tiles) == 700 and len(tiles) > 16


def _sampled_page(points, coords, folder, monkeypatch, sample=500, tile_points=400):
    from stylecluster.viz import payload, umap_map

    monkeypatch.setattr(umap_map, "OVERVIEW_SAMPLE", sample)
    monkeypatch.setattr(payload, "TILE_POINTS", tile_points)
    thumbs = {sha: f"m/thumbs/{sha}.jpg" for sha in points["sha256"]}
    return umap_map.map_fragment(points, coords, thumbs, sidecar=umap_map.Sidecar(folder, "m"), density_from=1000)


def _script_payload(file: Path, call: str) -> dict:
    """The JSON a sidecar script hands to ``call`` (``window.styleMapArrays = `` or ``window.styleMapTile(k, ``)."""
    text = file.read_text()
    assert text.startswith(call)
    return json.loads(text[len(call) : text.rindex(")" if call.endswith(", ") else ";")])


def test_large_collection_page_carries_the_raster_and_a_sample(tmp_path, monkeypatch):
    from stylecluster.viz.payload import decode_array

    points, coords = _synthetic_points(3000)
    fragment = _sampled_page(points, coords, tmp_path / "big", monkeypatch)
    data = _points_json(fragment)
    assert data["nPoints"] == 3000 and "arrays" not in data and "text" not in data
    (image,) = data["layout"]["images"]
    raster = np.asarray(Image.open(io.BytesIO(base64.b64decode(image["source"].split(",", 1)[1]))))
    assert raster.shape[2] == 4 and list(raster.shape[:2]) == data["overview"]["raster"]
    assert (raster[..., 3] > 0).sum() > 1000  # 3000 normal points cover much of the raster
    x0, x1, y0, y1 = data["overview"]["extent"]
    assert (image["x"], image["y"], image["sizex"], image["sizey"]) == (x0, y1, x1 - x0, y1 - y0)
    assert data["layout"]["xaxis"]["range"] == [x0, x1] and data["layout"]["yaxis"]["range"] == [y0, y1]
    # points.js: the seeded sample of 500, with their global index and their own coordinates
    sample = _script_payload(tmp_path / "big" / "points.js", "window.styleMapArrays = ")
    index = decode_array(sample["index"]["data"], "<i4")
    assert len(index) == 500 and len(set(index)) == 500 and (np.diff(index) > 0).all()
    assert np.array_equal(decode_array(sample["x"]["data"], "<f4"), coords[index, 0])
    assert np.array_equal(decode_array(sample["cluster"]["data"], "<i4"), points["cluster"].to_numpy()[index])
    # the tiles hold every point once, as the page's tile table says
    seen = []
    for k, (tx0, tx1, ty0, ty1, count) in enumerate(data["tiles"]):
        tile = _script_payload(tmp_path / "big" / "tiles" / f"{k}.js", f"window.styleMapTile({k}, ")
        rows = decode_array(tile["index"]["data"], "<i4")
        assert len(rows) == count <= 400
        x = decode_array(tile["x"]["data"], "<f4")
        assert np.array_equal(x, coords[rows, 0]) and (x >= tx0).all() and (x <= tx1).all()
        seen.append(rows)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(3000))
    assert len(list((tmp_path / "big" / "text").glob("*.js"))) == 2  # the text in chunks, as on the full page


def test_small_collection_page_is_unchanged_by_the_density_mode(tmp_path, monkeypatch):
    from stylecluster.viz.umap_map import Sidecar, map_fragment

    points, coords = _synthetic_points(999)
    thumbs = {sha: f"m/thumbs/{sha}.jpg" for sha in points["sha256"]}
    below = map_fragment(points, coords, thumbs, sidecar=Sidecar(tmp_path / "a", "m"), density_from=1000)
    never = map_fragment(points, coords, thumbs, sidecar=Sidecar(tmp_path / "b", "m"), density_from=10**9)
    assert below == never
    assert (tmp_path / "a" / "points.js").read_bytes() == (tmp_path / "b" / "points.js").read_bytes()
    assert not (tmp_path / "a" / "tiles").exists() and "images" not in _points_json(below)["layout"]
    assert "styleMapTile" not in below
