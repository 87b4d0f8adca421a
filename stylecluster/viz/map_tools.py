"""Selection and search on the map, in the browser and offline.

Lasso or box (plotly's own tools, in the plot's tool bar) or the search box select works; the
selected works are listed with their thumbnails under the map and a link downloads them as CSV.
The search box matches file names, titles and artists (case-insensitive substring) and selects
its matches, so a search can be exported the same way; plotly dims what is not selected.

Everything runs in the page: the CSV is built in the browser and handed over as a ``blob:`` URL,
so nothing is sent anywhere. Every value is put into the page with ``textContent``. CSV cells
that a spreadsheet would run as a formula (starting with ``= + - @``, tab or return) get a
leading apostrophe, the OWASP advice for CSV injection, since titles and names are user data.
"""
from __future__ import annotations

#: Selected works listed with thumbnails; the CSV always holds them all. 500 cards keep the page
#: responsive (each is an <img>); a selection of more is for export, not for reading.
LIST_LIMIT = 500

TOOLS_HTML = """
<div class="sc-tools" style="display:flex;gap:12px;align-items:center;margin:6px 0">
  <input id="sc-search" type="search" placeholder="Find works by file name, title or artist" style="width:340px;padding:4px 6px">
  <span id="sc-found" class="muted"></span>
  <span class="muted">Lasso or box (tool bar above the map) selects works; double-click the map to clear.</span>
</div>
"""

SELECTION_HTML = """
<section id="sc-selection" style="display:none">
  <h2><span id="sc-count"></span> · <a id="sc-export" download="selection.csv" href="#">download as CSV</a>
      <span id="sc-more" class="muted"></span></h2>
  <div id="sc-selected" style="display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:8px"></div>
</section>
"""

# Runs after the hover script (uses its `gd`, `data`, `arrays` and the payload's record loaders).
# A large map's text arrives in chunks (see stylecluster.viz.payload): cards and the CSV wait for
# the chunks of their rows, a search for all of them; `shown` drops answers to older requests.
TOOLS_JS = """
var LIST_LIMIT = %(limit)d, selected = [], exportUrl = null, shown = 0;
function clusterText(c) { var n = data.clusterName && data.clusterName[c]; return n || (c < 0 ? 'outliers' : 'cluster ' + c); }
function csvCell(v) {
  v = (v === null || v === undefined) ? '' : String(v);
  if (/^[=+\\-@\\t\\r]/.test(v)) { v = "'" + v; }
  return '"' + v.replace(/"/g, '""') + '"';
}
function csvText(records) {
  var labelled = data.labelColumn !== null;
  var head = ['path', 'title', 'artist', 'year'].concat(labelled ? [data.labelColumn] : [], ['cluster', 'cluster_name', 'probability']);
  var lines = [head.map(csvCell).join(',')];
  records.forEach(function (r) {
    var cells = [r.name, r.title, r.artist, r.year];
    if (labelled) { cells.push(r.label); }
    cells.push(r.cluster, clusterText(r.cluster), Math.round(r.prob * 1e4) / 1e4);
    lines.push(cells.map(csvCell).join(','));
  });
  return lines.join('\\r\\n') + '\\r\\n';
}
function selectionCsv(rows) { return withRecords(rows).then(csvText); }
function card(r) {
  var box = document.createElement('div');
  box.style.cssText = 'font-size:12px;overflow-wrap:anywhere';
  if (r.src) { var img = document.createElement('img'); img.src = r.src; img.alt = ''; img.style.cssText = 'width:112px;height:112px;object-fit:contain;background:#eee;display:block'; box.appendChild(img); }
  var name = document.createElement('div'); name.textContent = r.title || r.name; box.appendChild(name);
  var who = document.createElement('div'); who.className = 'muted'; who.textContent = [r.artist, r.date || r.year].filter(function (v) { return v !== null && v !== ''; }).join(', '); box.appendChild(who);
  return box;
}
function showSelection(rows) {
  var request = ++shown;
  selected = Array.from(new Set(rows)).sort(function (a, b) { return a - b; });
  var section = document.getElementById('sc-selection'), list = document.getElementById('sc-selected'), link = document.getElementById('sc-export');
  list.replaceChildren();
  if (exportUrl) { URL.revokeObjectURL(exportUrl); exportUrl = null; link.removeAttribute('href'); }
  if (!selected.length) { section.style.display = 'none'; return Promise.resolve(); }
  section.style.display = 'block';
  document.getElementById('sc-count').textContent = selected.length + (selected.length === 1 ? ' work selected' : ' works selected');
  document.getElementById('sc-more').textContent = selected.length > LIST_LIMIT ? '(the first ' + LIST_LIMIT + ' shown; the CSV has all)' : '';
  return withRecords(selected).then(function (records) {
    if (request !== shown) { return; }
    records.slice(0, LIST_LIMIT).forEach(function (r) { list.appendChild(card(r)); });
    exportUrl = URL.createObjectURL(new Blob([csvText(records)], {type: 'text/csv;charset=utf-8'}));
    link.href = exportUrl;
  });
}
gd.on('plotly_selected', function (ev) { showSelection(ev && ev.points ? ev.points.map(function (p) { return p.customdata; }) : []); });
gd.on('plotly_deselect', function () { showSelection([]); });
function matches(query) {
  var hit = [];
  chunks.forEach(function (c, k) {
    for (var j = 0; j < c.name.length; j++) {
      if (c.name[j].toLowerCase().indexOf(query) >= 0 || c.title[j].toLowerCase().indexOf(query) >= 0 || c.artist[j].toLowerCase().indexOf(query) >= 0) { hit.push(k * data.chunk + j); }
    }
  });
  return hit;
}
function search(query) {
  var q = query.trim().toLowerCase(), found = document.getElementById('sc-found');
  if (!q) { Plotly.restyle(gd, {selectedpoints: gd.data.map(function () { return null; })}); found.textContent = ''; showSelection([]); return Promise.resolve([]); }
  found.textContent = 'searching…';
  return allRecords().then(function () {
    var hits = matches(q), hit = new Set(hits);
    var perTrace = gd._fullData.map(function (t) {
      var keep = [];
      for (var k = 0; k < t.customdata.length; k++) { if (hit.has(t.customdata[k])) { keep.push(k); } }
      return keep;
    });
    Plotly.restyle(gd, {selectedpoints: perTrace}, gd._fullData.map(function (t) { return t.index; }));
    found.textContent = hits.length + (hits.length === 1 ? ' work found' : ' works found');
    return showSelection(hits).then(function () { return hits; });
  });
}
var searchTimer = null;
document.getElementById('sc-search').addEventListener('input', function (ev) {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(function () { search(ev.target.value); }, 150);
});
window.styleMap.search = search;
window.styleMap.selected = function () { return selected.slice(); };
window.styleMap.selectionCsv = function () { return selectionCsv(selected); };
""" % {"limit": LIST_LIMIT}
