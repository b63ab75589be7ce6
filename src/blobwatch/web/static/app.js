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
