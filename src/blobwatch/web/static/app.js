// blobwatch review app: the only JavaScript. Sortable tables, click-to-zoom cut-outs, and the
// reviewer check of Confirm (which skips the form's validation, since a reason is for Reject).
"use strict";

function cellValue(row, index) {
  const cell = row.cells[index];
  const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  const num = Number(raw);
  return raw !== "" && !Number.isNaN(num) ? num : raw.toLowerCase();
}

function sortTable(table, index, header) {
  const body = table.tBodies[0];
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const va = cellValue(a, index), vb = cellValue(b, index);
    const order = va < vb ? -1 : va > vb ? 1 : 0;
    return ascending ? order : -order;
  });
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  rows.forEach((row) => body.appendChild(row));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const table of document.querySelectorAll("table.sortable")) {
    Array.from(table.tHead.rows[0].cells).forEach((th, index) => {
      th.title = "sort";
      th.addEventListener("click", () => sortTable(table, index, th));
    });
  }
  for (const button of document.querySelectorAll("button[data-action=confirm]")) {
    button.addEventListener("click", (event) => {
      const reviewer = button.form.elements.namedItem("reviewer");
      if (reviewer && !reviewer.checkValidity()) {
        event.preventDefault();
        reviewer.reportValidity();
      }
    });
  }
  for (const img of document.querySelectorAll("img.zoomable")) {
    img.addEventListener("click", () => img.classList.toggle("zoomed"));
  }
});

// ---------------------------------------------------------------- pixel viewer
// The image and candidate pages embed a Bokeh figure (/images/{id}/viewer.json, BokehJS served
// from the bokeh package), set its circles and view from the same JSON, and fill it with the
// float32 pixels of /images/{id}/{kind}.f32.
// Around it, as in DS9: x / y / value under the cursor (0-based and DS9's 1-based), the scale
// (zscale from the server, min-max and percentiles computed here) and the colour map.

window.blobwatchViewers = [];

function quantile(sorted, q) {
  const pos = q * (sorted.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function formatValue(v) {
  if (!Number.isFinite(v)) return "NaN";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(4) : v.toPrecision(6);
}

async function startViewer(box) {
  const id = box.dataset.image, cand = box.dataset.candidate;
  const readout = box.querySelector(".viewer-readout");
  const controls = {kind: box.querySelector("select[name=kind]"), scale: box.querySelector("select[name=scale]"),
                    cmap: box.querySelector("select[name=cmap]")};
  const response = await fetch(`/images/${id}/viewer.json${cand ? `?candidate=${cand}` : ""}`);
  if (!response.ok) throw new Error(`viewer of image ${id}: HTTP ${response.status}`);
  const spec = await response.json();
  await Bokeh.embed.embed_item(spec.item, box.querySelector(".viewer-plot"));
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const fig = doc.get_model_by_name("bw-figure"), source = doc.get_model_by_name("bw-pixels");
  const mapper = doc.get_model_by_name("bw-mapper");
  // the figure is shared by every image of this shape: this image's circles and view are set here
  doc.get_model_by_name("bw-markers").data = spec.markers;
  const [x0, x1] = spec.view.x, [y0, y1] = spec.view.y;
  fig.x_range.setv({start: x0, end: x1, reset_start: x0, reset_end: x1});
  fig.y_range.setv({start: y0, end: y1, reset_start: y0, reset_end: y1});
  const ndarray = Bokeh.require("core/util/ndarray").ndarray;
  const state = {kind: null, data: null, rows: 0, cols: 0, zscale: [0, 1], sorted: null};
  const viewer = {box, fig, mapper, state, doc};
  window.blobwatchViewers.push(viewer);

  function finiteSorted() {
    if (state.sorted === null) {
      state.sorted = state.data.filter(Number.isFinite).sort();
    }
    return state.sorted;
  }

  function applyScale() {
    let lo = state.zscale[0], hi = state.zscale[1];
    const mode = controls.scale.value;
    if (mode !== "zscale") {
      const sorted = finiteSorted();
      if (sorted.length) {
        const tail = mode === "minmax" ? 0 : (100 - Number(mode)) / 200;
        lo = quantile(sorted, tail);
        hi = quantile(sorted, 1 - tail);
      }
    }
    if (!(hi > lo)) hi = lo + 1;
    mapper.low = lo;
    mapper.high = hi;
    box.dataset.low = lo;
    box.dataset.high = hi;
  }

  async function load(kind) {
    box.dataset.state = "loading";
    const r = await fetch(`/images/${id}/${kind}.f32`);
    if (!r.ok) {
      readout.textContent = `${kind}: not available (HTTP ${r.status})`;
      box.dataset.state = "error";
      return;
    }
    const [rows, cols] = r.headers.get("X-Shape").split(",").map(Number);
    const buffer = await r.arrayBuffer();
    Object.assign(state, {kind, rows, cols, data: new Float32Array(buffer), sorted: null,
                          zscale: r.headers.get("X-Zscale").split(",").map(Number)});
    source.data = {image: [ndarray(buffer, {dtype: "float32", shape: [rows, cols]})]};
    applyScale();
    box.dataset.kind = kind;
    box.dataset.state = "ready";
  }

  function pixelAt(event) {
    const view = Bokeh.index.get_one(fig);
    const rect = view.canvas_view.el.getBoundingClientRect();
    const sx = event.clientX - rect.left, sy = event.clientY - rect.top;
    const bbox = view.frame.bbox;
    if (sx < bbox.left || sx > bbox.right || sy < bbox.top || sy > bbox.bottom) return null;
    const x = Math.round(view.frame.x_scale.invert(sx)), y = Math.round(view.frame.y_scale.invert(sy));
    return x >= 0 && y >= 0 && x < state.cols && y < state.rows ? [x, y] : null;
  }

  box.querySelector(".viewer-plot").addEventListener("mousemove", (event) => {
    if (state.data === null) return;
    const at = pixelAt(event);
    if (at === null) {
      readout.textContent = "x – y – value –";
      return;
    }
    const [x, y] = at, value = state.data[y * state.cols + x];
    readout.textContent = `x ${x}  y ${y}  (DS9 ${x + 1}, ${y + 1})  ${state.kind} ${formatValue(value)}`;
    Object.assign(readout.dataset, {x, y, value});
  });
  controls.kind.addEventListener("change", () => load(controls.kind.value));
  controls.scale.addEventListener("change", applyScale);
  controls.cmap.addEventListener("change", () => { mapper.palette = spec.palettes[controls.cmap.value]; });
  await load(controls.kind.value);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const box of document.querySelectorAll("div.viewer[data-image]")) {
    if (typeof Bokeh === "undefined") {
      box.querySelector(".viewer-readout").textContent = "the viewer needs BokehJS (/bokeh/js/bokeh.min.js)";
      continue;
    }
    startViewer(box).catch((err) => {
      box.dataset.state = "error";
      box.querySelector(".viewer-readout").textContent = String(err);
    });
  }
});
