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

# Runs after the hover script (uses its `gd` and `data`).
TOOLS_JS = """
var LIST_LIMIT = %(limit)d, selected = [], exportUrl = null;
function clusterText(c) { var n = data.clusterName && data.clusterName[c]; return n || (c < 0 ? 'outliers' : 'cluster ' + c); }
function csvCell(v) {
  v = (v === null || v === undefined) ? '' : String(v);
  if (/^[=+\\-@\\t\\r]/.test(v)) { v = "'" + v; }
  return '"' + v.replace(/"/g, '""') + '"';
}
function selectionCsv(rows) {
  var head = ['path', 'title', 'artist', 'year'].concat(data.label ? [data.labelColumn] : [], ['cluster', 'cluster_name', 'probability']);
  var lines = [head.map(csvCell).join(',')];
  rows.forEach(function (i) {
    var cells = [data.name[i], data.title[i], data.artist[i], data.year[i]];
    if (data.label) { cells.push(data.label[i]); }
    cells.push(data.cluster[i], clusterText(data.cluster[i]), data.prob[i]);
    lines.push(cells.map(csvCell).join(','));
  });
  return lines.join('\\r\\n') + '\\r\\n';
}
function card(i) {
  var box = document.createElement('div'), t = data.thumb[i];
  box.style.cssText = 'font-size:12px;overflow-wrap:anywhere';
  if (t >= 0) { var img = document.createElement('img'); img.src = data.thumbs[t]; img.alt = ''; img.style.cssText = 'width:112px;height:112px;object-fit:contain;background:#eee;display:block'; box.appendChild(img); }
  var name = document.createElement('div'); name.textContent = data.title[i] || data.name[i]; box.appendChild(name);
  var who = document.createElement('div'); who.className = 'muted'; who.textContent = [data.artist[i], data.year[i]].filter(function (v) { return v !== null && v !== ''; }).join(', '); box.appendChild(who);
  return box;
}
function showSelection(rows) {
  selected = Array.from(new Set(rows)).sort(function (a, b) { return a - b; });
  var section = document.getElementById('sc-selection'), list = document.getElementById('sc-selected');
  list.replaceChildren();
  if (exportUrl) { URL.revokeObjectURL(exportUrl); exportUrl = null; }
  if (!selected.length) { section.style.display = 'none'; return; }
  section.style.display = 'block';
  document.getElementById('sc-count').textContent = selected.length + (selected.length === 1 ? ' work selected' : ' works selected');
  document.getElementById('sc-more').textContent = selected.length > LIST_LIMIT ? '(the first ' + LIST_LIMIT + ' shown; the CSV has all)' : '';
  selected.slice(0, LIST_LIMIT).forEach(function (i) { list.appendChild(card(i)); });
  exportUrl = URL.createObjectURL(new Blob([selectionCsv(selected)], {type: 'text/csv;charset=utf-8'}));
  document.getElementById('sc-export').href = exportUrl;
}
gd.on('plotly_selected', function (ev) { showSelection(ev && ev.points ? ev.points.map(function (p) { return p.customdata; }) : []); });
gd.on('plotly_deselect', function () { showSelection([]); });
function search(query) {
  var q = query.trim().toLowerCase(), found = document.getElementById('sc-found');
  if (!q) { Plotly.restyle(gd, {selectedpoints: gd.data.map(function () { return null; })}); found.textContent = ''; showSelection([]); return []; }
  var hit = new Set();
  for (var i = 0; i < data.name.length; i++) {
    if (data.name[i].toLowerCase().indexOf(q) >= 0 || data.title[i].toLowerCase().indexOf(q) >= 0 || data.artist[i].toLowerCase().indexOf(q) >= 0) { hit.add(i); }
  }
  var perTrace = gd._fullData.map(function (t) {
    var keep = [];
    for (var k = 0; k < t.customdata.length; k++) { if (hit.has(t.customdata[k])) { keep.push(k); } }
    return keep;
  });
  Plotly.restyle(gd, {selectedpoints: perTrace}, gd._fullData.map(function (t) { return t.index; }));
  found.textContent = hit.size + (hit.size === 1 ? ' work found' : ' works found');
  showSelection(Array.from(hit));
  return Array.from(hit);
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
