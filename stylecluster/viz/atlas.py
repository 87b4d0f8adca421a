"""Images as points: every thumbnail packed into one texture (an atlas) and drawn by WebGL.

PixPlot's approach: one JPEG holds all thumbnails in a grid; the map draws each point as a
WebGL point sprite that samples its thumbnail's rectangle of that texture, so 10k images cost one
texture upload and one draw call, and redrawing after a zoom or a pan is immediate. Sprites
grow with the zoom (from :data:`BASE_SPRITE` px), so a cluster opened up shows its images.

Cells are as large as fit a :data:`MAX_SIDE`-pixel texture (WebGL 1 guarantees only 4096, and
SwiftShader, the software WebGL of headless Chromium, allows 8192): 64 px up to ~4,000 images,
40 px at 10k, never below 16: up to :data:`ATLAS_LIMIT` (65,536) images. Larger maps have no images
mode (their thumbnails are loaded one by one, on hover; a tiled atlas would be needed). The cell
is the thumbnail's longest side; the shader keeps its proportions.

A page opened from disk (``file://``) may not give WebGL a picture loaded from another file: Chromium
treats every file as its own origin, and a texture from another origin is refused (measured: the
10k-image map in folder mode never drew). So the atlas travels as a data URI — inline in a
self-contained map, else in a script file beside the page (``atlas.js``) that the page loads only
when the reader first switches to images (a script may load across files; the picture inside it
is then same-origin).

The canvas sits above plotly's WebGL points and below its selection outline and hover layer,
and lets the mouse through, so hovering, clicking, lasso and search work the same in both modes.
"""
from __future__ import annotations

import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .thumbs import jpeg_uri

MAX_SIDE = 4096
MAX_CELL = 64
MIN_CELL = 16
BASE_SPRITE = 22
JPEG_QUALITY = 80
#: Most thumbnails one atlas holds: 16-px cells filling a 4096-px texture.
ATLAS_LIMIT = (MAX_SIDE // MIN_CELL) ** 2


@dataclass
class Atlas:
    image: bytes  # JPEG
    size: tuple[int, int]  # width, height in pixels
    cell: int
    rects: list[list[int]]  # per thumbnail, in the given order: x, y, width, height in the atlas

    def data(self, script: str | None = None) -> dict:
        """What the page's script needs: the atlas inline, or ``script``, the relative URL of the
        file written by :meth:`script_text`."""
        where = {"script": script} if script else {"src": jpeg_uri(self.image)}
        return {**where, "size": list(self.size), "rect": self.rects, "sprite": BASE_SPRITE}

    def script_text(self) -> str:
        """The content of ``atlas.js``: hands the atlas's data URI to the page."""
        return f"window.styleMapAtlasLoaded({json.dumps(jpeg_uri(self.image))});\n"


def cell_size(n: int) -> int:
    columns = max(1, math.ceil(math.sqrt(n)))
    return max(MIN_CELL, min(MAX_CELL, MAX_SIDE // columns))


def build_atlas(thumbnails: list[Path], workers: int = 2) -> Atlas:
    """One atlas of the thumbnail files, in their order (a file that cannot be read leaves its cell empty)."""
    n = len(thumbnails)
    cell = cell_size(n)
    columns = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    canvas = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))

    def small(file: Path) -> Image.Image | None:
        try:
            with Image.open(file) as image:
                image.draft("RGB", (cell, cell))  # JPEG decodes at 1/2, 1/4, 1/8 scale: ~3x faster here
                image = image.convert("RGB")
                image.thumbnail((cell, cell), Image.Resampling.BILINEAR)
                return image
        except OSError:
            return None

    rects = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, image in enumerate(pool.map(small, thumbnails)):
            x, y = (i % columns) * cell, (i // columns) * cell
            if image is None:
                rects.append([x, y, 0, 0])
                continue
            canvas.paste(image, (x, y))
            rects.append([x, y, image.width, image.height])
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return Atlas(buffer.getvalue(), canvas.size, cell, rects)


BUTTON_HTML = '<button id="sc-mode" type="button" style="padding:3px 10px">show images</button>'

# Runs after the hover script (uses its `gd` and `data`). `data.atlas` is absent without an atlas.
ATLAS_JS = """
(function () {
  var button = document.getElementById('sc-mode');
  if (!data.atlas) { button.style.display = 'none'; return; }
  var atlas = data.atlas, canvas = null, gl = null, program = null, count = 0, texture = null, images = false, baseRange = null;
  var VS = 'attribute vec2 pos; attribute vec4 rect; uniform vec4 view; uniform float size; varying vec4 vRect;' +
    'void main() { gl_Position = vec4((pos.x - view.x) / (view.y - view.x) * 2.0 - 1.0, (pos.y - view.z) / (view.w - view.z) * 2.0 - 1.0, 0.0, 1.0);' +
    ' gl_PointSize = size; vRect = rect; }';
  var FS = 'precision mediump float; uniform sampler2D atlas; uniform vec2 atlasSize; varying vec4 vRect;' +
    'void main() { float m = max(vRect.z, vRect.w); vec2 f = vRect.zw / m; vec2 q = (gl_PointCoord - 0.5) / f + 0.5;' +
    ' if (q.x < 0.0 || q.x > 1.0 || q.y < 0.0 || q.y > 1.0) discard;' +
    ' gl_FragColor = texture2D(atlas, (vRect.xy + q * vRect.zw) / atlasSize); }';
  function shader(type, source) { var s = gl.createShader(type); gl.shaderSource(s, source); gl.compileShader(s); return s; }
  function setup() {
    canvas = document.createElement('canvas');
    canvas.id = 'sc-atlas';
    canvas.style.cssText = 'position:absolute;pointer-events:none';
    (gd.querySelector('.gl-container') || gd.querySelector('.svg-container')).appendChild(canvas);
    gl = canvas.getContext('webgl', {preserveDrawingBuffer: true, premultipliedAlpha: false});
    program = gl.createProgram();
    gl.attachShader(program, shader(gl.VERTEX_SHADER, VS));
    gl.attachShader(program, shader(gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(program);
    gl.useProgram(program);
    var pos = [], rect = [];
    gd._fullData.forEach(function (t) {
      for (var k = 0; k < t.x.length; k++) {
        var i = t.customdata[k], th = arrays.thumb[i];
        if (th < 0 || !atlas.rect[th][2]) { continue; }
        pos.push(t.x[k], t.y[k]);
        rect.push.apply(rect, atlas.rect[th]);
      }
    });
    count = pos.length / 2;
    [['pos', pos, 2], ['rect', rect, 4]].forEach(function (a) {
      var buffer = gl.createBuffer(), where = gl.getAttribLocation(program, a[0]);
      gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
      gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(a[1]), gl.STATIC_DRAW);
      gl.enableVertexAttribArray(where);
      gl.vertexAttribPointer(where, a[2], gl.FLOAT, false, 0, 0);
    });
    var fl = gd._fullLayout;
    baseRange = fl.xaxis.range[1] - fl.xaxis.range[0];
  }
  function draw() {
    if (!images || !texture) { return; }
    var fl = gd._fullLayout, s = fl._size, ratio = window.devicePixelRatio || 1;
    canvas.style.left = s.l + 'px'; canvas.style.top = s.t + 'px'; canvas.style.width = s.w + 'px'; canvas.style.height = s.h + 'px';
    canvas.width = Math.round(s.w * ratio); canvas.height = Math.round(s.h * ratio);
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0, 0, 0, 0); gl.clear(gl.COLOR_BUFFER_BIT);
    var zoom = baseRange / (fl.xaxis.range[1] - fl.xaxis.range[0]);
    var size = Math.min(160, Math.max(8, atlas.sprite * Math.sqrt(zoom))) * ratio;
    gl.uniform4f(gl.getUniformLocation(program, 'view'), fl.xaxis.range[0], fl.xaxis.range[1], fl.yaxis.range[0], fl.yaxis.range[1]);
    gl.uniform1f(gl.getUniformLocation(program, 'size'), Math.min(size, gl.getParameter(gl.ALIASED_POINT_SIZE_RANGE)[1]));
    gl.uniform2f(gl.getUniformLocation(program, 'atlasSize'), atlas.size[0], atlas.size[1]);
    gl.drawArrays(gl.POINTS, 0, count);
    window.styleMap.atlasDrawn = performance.now();
  }
  function show(on) {
    images = on;
    button.textContent = on ? 'show dots' : 'show images';
    if (!canvas) { setup(); }
    canvas.style.display = on ? 'block' : 'none';
    if (on && !texture) {
      var img = new Image();
      img.onload = function () {
        texture = gl.createTexture();
        gl.bindTexture(gl.TEXTURE_2D, texture);
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, img);
        [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T].forEach(function (p) { gl.texParameteri(gl.TEXTURE_2D, p, gl.CLAMP_TO_EDGE); });
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
        draw();
      };
      if (atlas.src) { img.src = atlas.src; } else {
        window.styleMapAtlasLoaded = function (uri) { img.src = uri; };
        var script = document.createElement('script');
        script.src = atlas.script;
        document.head.appendChild(script);
      }
    } else { draw(); }
  }
  button.addEventListener('click', function () { show(!images); });
  gd.on('plotly_relayout', draw);
  gd.on('plotly_afterplot', draw);
  window.styleMap.showImages = show;
})();
"""
