"""Style search: the paintings nearest to one image, by cosine similarity in the fused space.

The index
---------
faiss over the L2-normalised fused vectors, inner product (= cosine of unit vectors):

* up to :data:`FLAT_LIMIT` (500k) rows an exact ``IndexFlatIP`` — the same neighbours as a
  brute-force scan. It scans every vector: at 1M x 64, one thread, a query took 18 ms once with
  the machine lightly loaded (load average 2.7; numpy's product + argpartition took 40 ms) but
  60 ms under a load average of ~10, when memory bandwidth is shared (``benchmarks/import_index.py``);
  the scan is linear in n, so 500k rows stay near 30 ms even then;
* above it an ``IndexIVFFlat`` with ``nlist = sqrt(n)`` lists and ``nprobe = nlist / 8``, which
  scans ~1/8 of the vectors. At 1M x 64 under the same load of ~10, on the fused vectors of 20
  Gaussian blobs: nprobe 31 answered in 0.4 ms with recall@12 0.962, nprobe 125 (the default) in
  3.5 ms with recall 1.000, nprobe 250 in 19 ms; training its k-means took 18.5 s (6.3 s with
  the machine quieter), which is what saving the index is for. Real collections are less
  clustered than blobs, hence the generous nprobe. Through :class:`StyleIndex` in another run
  (same load): built and saved in 20.1 s, reopened in 1.9 s, a :meth:`~StyleIndex.query` (search
  plus the neighbours' table) 18.9 ms median and 23.5 ms p90, against 59.9 ms for the flat search
  alone in that run. At 100k rows (flat) a query took 6.6 ms, 1.1 ms of it the search;
* above :data:`PQ_LIMIT` (2M) rows an ``IndexIVFPQ``: the same sqrt(n) lists, each vector kept as
  a 32-byte code (one byte per :data:`PQ_DIMS_PER_CODE` = 2 dimensions, 8-bit sub-quantizers) and
  its id, 40 bytes a row against IVF-Flat's 4 d + 8 = 264 (64-d): at 10M rows 0.4 GB instead of
  2.64 GB on top of the explorer's own 2.56 GB of vectors.
  The codes only shortlist :data:`RERANK` x k rows, which are read from the explorer's fused
  vectors (a memory map from a million rows: a few hundred rows a query) and ranked exactly, so
  the similarities shown are true cosines and the raw vectors are not stored twice. On 200k
  synthetic fused rows (20 Gaussians with isotropic noise, the hardest case for codes; 200 fresh
  queries, load ~9 on 2 cores) recall@10 against exact search was, for a shortlist of 10 / 20 / 50
  x k: 16-byte codes 0.42 / 0.57 / 0.76, 32-byte codes 0.987 / 0.998 / 1.000 (0.6 ms a query),
  64-byte codes 1.000 but 20x slower to add. At ten million such rows (``benchmarks/similar_scale.py``,
  one thread, load ~2.3; RESULTS.md "Search at ten million rows"): built in 124 s with 0.97 GB of
  the process's own memory at its peak (0.4 GB of it the index), 1,000 fresh queries in 10.9 ms
  median and 12.5 ms p90 with recall@10 0.970; a shortlist of 10 x k gave 0.904 and 5 x k 0.799,
  hence 20; probing nlist/8 lists gave the same recall as nlist/16 (:data:`PQ_PROBE_DIVISOR`) in
  twice the time, nlist/32 0.953. At one million rows IVF-Flat is still the better index: built in
  6.7 s against 10.5 s, recall 1.000 against 0.990, 2.2 ms against 1.6 ms, for 0.26 GB against
  0.04 GB — hence :data:`PQ_LIMIT` = 2M, where IVF-Flat holds 0.53 GB.

Every index is built from the explorer's fused vectors a batch of :data:`BATCH_ROWS` rows at a time
— normalised, hashed (:func:`vectors_sha256`: the same digest as hashing them whole) and added —
so building needs the index and one batch, never a normalised copy of the matrix, whether the
explorer holds an array or a memory map. An IVF or IVF-PQ index's recall@10 on 100 stored rows
against exact search (:func:`exact_search`, batch by batch) is measured when it is built and
recorded in its sidecar with its parameters.

The index is built once per store and fusion and saved in the store's visualisation cache
(``STORE/_viz/``, :mod:`.cache`) as ``similar-<fusion>.faiss`` — faiss's own binary format
(``faiss.serialize_index``), never a pickle — with a JSON sidecar recording what it was built from:
the number of rows and the sha256 of the normalised vectors (which changes with any change of the
store, the clustering's rows or the fusion), the fusion's hash (its blocks, PCA and scales) and
the sha256 of the index file itself (and the kind, its parameters and the recall measured at
build, for the reader; indexes saved before IVF-PQ existed still load). A sidecar that does not match the current vectors, an index
file that is not the one the sidecar hashed (copied from another store with the same paths, or
damaged: 60 flipped bytes gave similarities of 3e26), or an index in which a few stored vectors
(:attr:`StyleIndex.PROBES`) do not come back as their own nearest neighbour, with every id in
range, is rebuilt, never used. Both files are written atomically, the sidecar last and removed first, so an interrupted
write leaves an index without a sidecar, which is rebuilt. Hashing 1M x 64 vectors takes 0.24 s;
a flat index of 1M rows is built in 0.25 s and read back in 0.28 s, so saving pays for the IVF
index only — one code path keeps both.

Queries
-------
A query image inside the store (given by its stored path, by its file, or by a file with the
same content) uses its stored vector, so it is its own first neighbour (similarity 1). An image
outside the store is embedded with the store's own branches (rebuilt from its provenance; see
:mod:`stylecluster.viz.provenance`) and mapped through the same fusion — which a store of
imported vectors (:mod:`stylecluster.importer`) cannot do: its queries are its stored paths.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..data.decode import hash_file, load_image
from ..importer import imported_from
from ..vectors import import_faiss, unit_batches, unit_rows
from ..io import OutputError, printable, save_atomic
from .html import esc, page
from .provenance import check_branches, config_for_store
from .thumbs import data_uri, ensure_thumbnails, jpeg_uri, thumbnail_bytes
from ..errors import InputError, MissingInputError

log = logging.getLogger("stylecluster")

INDEX_FORMAT = "stylecluster.similar-index"
INDEX_VERSION = 1
#: Largest collection searched exactly (flat index); larger ones get an IVF index (module docstring).
FLAT_LIMIT = 500_000
#: Largest collection given an IVF-Flat index; larger ones get IVF-PQ (module docstring).
PQ_LIMIT = 2_000_000
#: Rows normalised, hashed and added at a time (16 MB of 64-d float32).
BATCH_ROWS = 65_536
#: Dimensions per byte of an IVF-PQ code (64-d: 32 sub-quantizers, 32 bytes a row).
PQ_DIMS_PER_CODE = 2
#: An IVF-PQ index probes nlist / PQ_PROBE_DIVISOR lists.
PQ_PROBE_DIVISOR = 16
#: An IVF-PQ search shortlists RERANK * k rows by their codes, then ranks them exactly.
RERANK = 20


def fusion_sha256(fusion) -> str:
    """A hash of what maps stored vectors to fused ones: the fitted fuser's blocks, PCAs and scales."""
    fuser = fusion.fuser_
    digest = hashlib.sha256()
    for block in fuser.blocks:  # numbers may come back from a model file as numpy values
        digest.update(json.dumps([block.column, block.part]).encode())
        digest.update(np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in (block.start, block.stop, block.weight, block.whiten)]).tobytes())
    for pca in fuser.pcas_:
        digest.update(repr((pca.n_components_, bool(pca.whiten))).encode())
        for name in ("components_", "mean_", "explained_variance_"):
            digest.update(np.ascontiguousarray(getattr(pca, name), dtype=np.float64).tobytes())
    digest.update(np.asarray(fuser.scales_, dtype=np.float64).tobytes())
    return digest.hexdigest()


def index_kind(rows: int, flat_limit: int = FLAT_LIMIT, pq_limit: int = PQ_LIMIT) -> str:
    """``"flat"`` up to ``flat_limit`` rows, ``"ivf"`` up to ``pq_limit``, ``"ivfpq"`` above."""
    return "flat" if rows <= flat_limit else "ivf" if rows <= pq_limit else "ivfpq"


def vectors_sha256(vectors: np.ndarray, batch_rows: int = BATCH_ROWS) -> str:
    """sha256 of the unit rows of ``vectors``, read a batch at a time: the same digest as hashing
    ``unit_rows(vectors)`` whole (sidecars written before batches existed still match)."""
    digest = hashlib.sha256()
    for _, batch in unit_batches(vectors, batch_rows):
        digest.update(batch.data)
    return digest.hexdigest()


def pq_subquantizers(dim: int) -> int:
    """Sub-quantizers of the product quantizer: one per :data:`PQ_DIMS_PER_CODE` dimensions
    (the largest divisor of ``dim`` not above ``dim / PQ_DIMS_PER_CODE``)."""
    return next(m for m in range(max(1, dim // PQ_DIMS_PER_CODE), 0, -1) if dim % m == 0)


def build_index(vectors: np.ndarray, flat_limit: int = FLAT_LIMIT, pq_limit: int = PQ_LIMIT, batch_rows: int = BATCH_ROWS):
    """A faiss inner-product index of the unit rows of ``vectors`` (an array or a memory map, read
    a batch at a time): exact (flat) up to ``flat_limit`` rows, IVF up to ``pq_limit``, IVF-PQ above."""
    faiss = import_faiss()
    n, dim = vectors.shape
    kind = index_kind(n, flat_limit, pq_limit)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = max(1, int(np.sqrt(n)))
        if kind == "ivf":
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = max(1, nlist // 8)
        else:
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_subquantizers(dim), 8, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = max(1, nlist // PQ_PROBE_DIVISOR)
        # the product quantizer's 256 codes need ~40 points each, whatever the lists need
        size = max(64 * nlist, 40 * 256) if kind == "ivfpq" else 64 * nlist
        sample = np.sort(np.random.default_rng(0).choice(n, size=min(n, size), replace=False))
        index.train(unit_rows(vectors[sample]))
    for _, batch in unit_batches(vectors, batch_rows):
        index.add(batch)
    return index


def index_parameters(index) -> dict:
    """What a built index was made with, for its sidecar."""
    faiss = import_faiss()
    if not isinstance(index, faiss.IndexIVF):
        return {}
    parameters = {"nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    if isinstance(index, faiss.IndexIVFPQ):
        parameters.update(pq_subquantizers=int(index.pq.M), pq_bits=int(index.pq.nbits), rerank=RERANK)
    return parameters


def search_index(index, vectors: np.ndarray, queries: np.ndarray, k: int, rerank: int = RERANK) -> tuple[np.ndarray, np.ndarray]:
    """``(similarity, ids)``, each (queries, k), of unit ``queries`` in ``index`` over ``vectors``;
    ids of -1 where an IVF index's probed lists hold fewer than k. An IVF-PQ index's codes only
    shortlist ``rerank * k`` candidates; those rows of ``vectors`` are read and ranked exactly, so
    the similarities are true cosines and the raw vectors are not stored twice."""
    faiss = import_faiss()
    if not isinstance(index, faiss.IndexIVFPQ):
        return index.search(queries, k)
    n = len(vectors)
    _, shortlist = index.search(queries, min(n, rerank * k))
    similarity = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for i, (query, candidates) in enumerate(zip(queries, shortlist)):
        candidates = np.unique(candidates[(candidates >= 0) & (candidates < n)])  # sorted: one pass over a memory map
        cosine = unit_rows(vectors[candidates]) @ query
        best = np.argsort(-cosine, kind="stable")[:k]
        similarity[i, : len(best)], ids[i, : len(best)] = cosine[best], candidates[best]
    return similarity, ids


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, batch_rows: int = BATCH_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` (similarity, ids) of unit ``queries`` among the unit rows of ``vectors``,
    scanned a batch at a time with a flat faiss index (ties: the lower row first)."""
    faiss = import_faiss()
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for start, batch in unit_batches(vectors, batch_rows):
        flat = faiss.IndexFlatIP(batch.shape[1])
        flat.add(batch)
        similarity, ids = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(batch)))
        similarity = np.concatenate([best, similarity], axis=1)
        ids = np.concatenate([best_ids, np.where(ids >= 0, ids + start, -1)], axis=1)
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        best, best_ids = np.take_along_axis(similarity, order, axis=1), np.take_along_axis(ids, order, axis=1)
    return best, best_ids


def recall_at(index, vectors: np.ndarray, k: int = 10, queries: int = 100, batch_rows: int = BATCH_ROWS, seed: int = 0) -> float:
    """Mean share of the exact top ``k`` that :func:`search_index` finds, over ``queries`` stored
    rows drawn with ``seed`` (each is its own exact first neighbour, as in use)."""
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=min(len(vectors), queries), replace=False))
    unit = unit_rows(vectors[rows])
    _, truth = exact_search(vectors, unit, k, batch_rows)
    _, found = search_index(index, vectors, unit, k)
    return float(np.mean([len(np.intersect1d(t[t >= 0], f[f >= 0])) / max(1, (t >= 0).sum()) for t, f in zip(truth, found)]))


class StyleIndex:
    """Nearest neighbours of the explorer's images in the fused space (cosine, faiss).

    Loads the index saved for the explorer's vectors from ``cache`` (default: the store's
    visualisation cache), or builds and saves it; ``reused`` says which happened, ``file`` where
    it is. See the module docstring for the choice of index and when a saved one is stale.
    """

    def __init__(self, explorer, cache: Path | None = None, flat_limit: int = FLAT_LIMIT, pq_limit: int = PQ_LIMIT,
                 batch_rows: int = BATCH_ROWS):
        from .cache import cache_dir

        self.explorer = explorer
        self.batch_rows = batch_rows
        fused = explorer.fused  # read a batch at a time: never normalised or copied whole
        fusion = fusion_sha256(explorer.fusion)
        folder = Path(cache) if cache is not None else cache_dir(explorer.store)
        self.file = folder / f"similar-{fusion[:16]}.faiss"
        self.sidecar = self.file.with_suffix(".json")
        self.built_from = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "kind": index_kind(len(fused), flat_limit, pq_limit),
            "rows": int(fused.shape[0]),
            "dim": int(fused.shape[1]),
            "vectors_sha256": vectors_sha256(fused, batch_rows),
            "fusion_sha256": fusion,
            "store": str(getattr(explorer.store, "path", "")),
        }
        self.index = self._load()
        self.reused = self.index is not None
        if self.index is None:
            self.index = self._build_and_save(flat_limit, pq_limit)

    def _load(self):
        faiss = import_faiss()
        try:
            recorded = json.loads(self.sidecar.read_text())
        except (OSError, ValueError, RecursionError):
            return None
        keys = ("format", "format_version", "kind", "rows", "dim", "vectors_sha256", "fusion_sha256")
        if not isinstance(recorded, dict) or any(recorded.get(k) != self.built_from[k] for k in keys):
            log.info("%s: built from other vectors than the explorer's; rebuilding it", printable(self.file))
            return None
        try:
            data = self.file.read_bytes()
        except OSError:
            return None
        # The sidecar speaks for the index only if it names these very bytes: an index copied from
        # another store beside a matching sidecar, or a damaged one, is rebuilt, never searched.
        if recorded.get("index_sha256") != hashlib.sha256(data).hexdigest():
            log.warning("%s: the saved index is not the one its sidecar describes (changed or copied); rebuilding it", printable(self.file))
            return None
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:  # faiss raises RuntimeError for a damaged file
            log.warning("%s: cannot read the saved index (%s); rebuilding it", printable(self.file), printable(str(exc).splitlines()[0]))
            return None
        if index.ntotal != self.built_from["rows"] or index.d != self.built_from["dim"] or not self._finds_itself(index):
            log.warning("%s: the saved index does not find stored images as their own neighbours; rebuilding it", printable(self.file))
            return None
        return index

    #: Stored vectors that must come back as their own nearest neighbour before a saved index is used.
    PROBES = 8

    def _finds_itself(self, index) -> bool:
        """A few stored rows (seeded) searched in ``index``: every id in range, each probe among its
        own top hits at similarity ~1 (a duplicate image may tie with it)."""
        fused = self.explorer.fused
        n = len(fused)
        rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, self.PROBES), replace=False))
        k = min(n, self.PROBES)
        similarity, ids = search_index(index, fused, unit_rows(fused[rows]), k)
        if ((ids < -1) | (ids >= n)).any() or not np.isfinite(similarity[ids >= 0]).all():
            return False
        return all(row in found[sim >= 1 - 1e-4] for row, found, sim in zip(rows, ids, similarity))

    #: Stored rows whose recall@10 is measured when an IVF or IVF-PQ index is built (one more pass over the rows).
    RECALL_QUERIES = 100

    def _build_and_save(self, flat_limit: int, pq_limit: int):
        faiss = import_faiss()
        fused = self.explorer.fused
        began = time.perf_counter()
        index = build_index(fused, flat_limit, pq_limit, self.batch_rows)
        record = {**self.built_from, "seconds": round(time.perf_counter() - began, 3), "faiss": faiss.__version__,
                  "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "parameters": index_parameters(index)}
        if record["kind"] != "flat":
            recall = recall_at(index, fused, 10, self.RECALL_QUERIES, self.batch_rows)
            record["recall_at_10"] = {"queries": min(len(fused), self.RECALL_QUERIES), "recall": round(recall, 4)}
        try:
            self.sidecar.unlink(missing_ok=True)
            data = faiss.serialize_index(index)  # one copy of the index (10M rows of IVF-PQ: 0.4 GB), hashed and written as it is
            save_atomic(self.file, data.tofile)
            save_atomic(self.sidecar, json.dumps({**record, "index_sha256": hashlib.sha256(data).hexdigest()}, indent=2))
        except (OutputError, OSError, RuntimeError) as exc:  # a full or read-only cache: search works, the index is built again next time
            log.warning("%s: could not save the search index (%s)", printable(self.file), printable(exc))
        return index

    def query(self, vector: np.ndarray, k: int = 12) -> pd.DataFrame:
        """The ``k`` nearest images: their ``points`` rows plus ``rank`` and ``similarity`` (cosine)."""
        if int(k) < 1:
            raise InputError(f"--k must be at least 1, got {k}")
        k = min(int(k), len(self.explorer.points))
        similarity, index = search_index(self.index, self.explorer.fused, unit_rows(np.asarray(vector).reshape(1, -1)), k)
        # an IVF index returns -1 when its probed lists hold fewer than k
        found = (index[0] >= 0) & (index[0] < len(self.explorer.points))
        rows, similarity = index[0][found], similarity[0][found]
        neighbours = self.explorer.points.iloc[rows].reset_index(drop=True)
        return neighbours.assign(rank=np.arange(1, len(rows) + 1), similarity=np.round(similarity.astype(np.float64), 6))


class _OneImage:
    """Store-shaped view of one image's branch vectors, for the fusion's ``embed``."""

    def __init__(self, store, vectors: dict[str, np.ndarray]):
        self.store = store
        self._vectors = vectors

    def vectors(self, column: str) -> np.ndarray | None:
        return self._vectors.get(column)

    def parts(self, column: str):
        return self.store.parts(column)


def embed_outside_image(explorer, image: Path, config: Config | None = None) -> np.ndarray:
    """Fused coordinates (1, d) of an image file that is not in the store."""
    from ..data.dataset import ImageDataset, WorkItem, collate_items
    from ..device import resolve_device
    from ..features.embedder import build_branches
    from ..features.runtime import resolve_runtime

    store = explorer.store
    imported = imported_from(store)
    if imported is not None:
        raise InputError(f"{printable(image)}: not an image of the store {printable(store.path)}, whose vectors were imported from "
                         f"{printable(imported.get('source'))}; an outside image cannot be embedded the same way — give a stored path")
    config = config_for_store(store, config)
    config = resolve_runtime(config, images=1)  # one image: compiling a runtime would cost more than it saves
    branches = build_branches(config, resolve_device(config.embed.device))
    check_branches(store, branches)
    item = WorkItem(0, image, hash_file(image).sha256)
    sample = ImageDataset([item], branches, config.ingest.max_pixels, config.ingest.min_side, seed=config.embed.seed)[0]
    if "error" in sample:
        raise InputError(f"{image}: {sample['error']}")
    batch, _ = collate_items([sample])
    vectors = {b.name: b.encode(batch["inputs"][b.name]) for b in branches}
    return explorer.fusion.embed(_OneImage(store, vectors))


@dataclass
class SimilarResult:
    query: str  # the stored path, or the outside file as given
    inside: bool  # True when the query is an image of the store
    query_file: Path | None  # the file, when the query was given as one
    neighbours: pd.DataFrame  # points rows + rank + similarity, nearest first


def _find_in_store(explorer, image: str) -> int | None:
    """Position in ``points`` of the query, if it is a store image; None otherwise."""
    points = explorer.points
    by_path = np.flatnonzero((points["path"] == image).to_numpy())
    if len(by_path):
        return int(by_path[0])
    file = Path(image)
    if not file.is_file():
        raise MissingInputError(f"{image}: neither an image of the store nor a file")
    root = explorer.images_root
    if root is not None:
        try:
            rel = file.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = None
        hit = np.flatnonzero((points["path"] == rel).to_numpy()) if rel else []
        if len(hit):
            return int(hit[0])
    same = np.flatnonzero((points["sha256"] == hash_file(file).sha256).to_numpy())
    return int(same[0]) if len(same) else None


def find_similar(explorer, image: str | Path, k: int = 12, config: Config | None = None, index: StyleIndex | None = None) -> SimilarResult:
    """The ``k`` images of the store nearest in style to ``image`` (inside or outside the store)."""
    index = index or StyleIndex(explorer)
    image = str(image)
    position = _find_in_store(explorer, image)
    file = Path(image) if Path(image).is_file() else None
    if position is not None:
        found = index.query(explorer.fused[position], k)
        return SimilarResult(explorer.points["path"].iloc[position], True, file, found)
    found = index.query(embed_outside_image(explorer, Path(image), config), k)
    return SimilarResult(image, False, file, found)


def _query_thumb(result: SimilarResult, explorer, thumbs: dict[str, Path]) -> str | None:
    if result.inside:
        sha = explorer.points.loc[explorer.points["path"] == result.query, "sha256"].iloc[0]
        return data_uri(thumbs[sha]) if sha in thumbs else None
    return jpeg_uri(thumbnail_bytes(load_image(result.query_file, min_side=1)))


def similar_page(result: SimilarResult, explorer, cache: Path | None = None) -> str:
    """A self-contained HTML page: the query and its neighbours with thumbnails."""
    from .cache import cache_dir

    cache = cache if cache is not None else cache_dir(explorer.store)
    found = result.neighbours
    thumbs = ensure_thumbnails(explorer.images_root, zip(found["path"], found["sha256"]), cache, workers=2)
    if result.inside:
        row = explorer.points[explorer.points["path"] == result.query]
        thumbs.update(ensure_thumbnails(explorer.images_root, zip(row["path"], row["sha256"]), cache, workers=1))
    query_src = _query_thumb(result, explorer, thumbs)
    query_img = f'<img class="thumb" src="{query_src}" alt="">' if query_src else '<div class="missing">image not available</div>'
    where = "an image of the store" if result.inside else "outside the store, embedded with the store's branches"
    cards = []
    for row in found.itertuples(index=False):
        src = data_uri(thumbs[row.sha256]) if row.sha256 in thumbs else None
        img = f'<img class="thumb" src="{src}" alt="{esc(row.path)}">' if src else '<div class="missing">image not available</div>'
        facts = [f"#{row.rank} · similarity {row.similarity:.3f}"]
        if explorer.has_clusters:
            facts.append("outlier" if row.cluster < 0 else f"cluster {row.cluster}")
        label = f"<div>{esc(explorer.label_column)}: {esc(row.label)}</div>" if explorer.has_labels else ""
        cards.append(f'<div class="card">{img}<div class="name">{esc(row.path)}</div><div>{label}<div class="muted">{" · ".join(facts)}</div></div></div>')
    body = (
        f"<h1>Nearest in style to {esc(result.query)}</h1><p class=\"muted\">{esc(where)}; cosine similarity in the fused style space.</p>"
        f'<div class="grid"><div class="card">{query_img}<div class="name">{esc(result.query)}</div><div class="muted">query</div></div></div>'
        f"<h2>{len(found)} nearest</h2><div class=\"grid\">{''.join(cards)}</div>"
    )
    return page(f"Nearest in style to {result.query}", body)


def write_similar(result: SimilarResult, explorer, out: str | Path, cache: Path | None = None) -> Path:
    return save_atomic(out, similar_page(result, explorer, cache))
