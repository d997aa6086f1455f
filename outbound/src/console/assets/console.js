// The console's only script (served from /assets: the CSP allows no inline
// script). Pages work without it; it adds live refreshes and the upload's
// progress bar. Same-origin requests only.
"use strict";

function setCounts(counts) {
  for (const [key, value] of Object.entries(counts || {})) {
    for (const el of document.querySelectorAll('[data-count="' + key + '"]')) {
      el.textContent = String(value);
    }
  }
}

// A page with data-live-url polls it (every data-live-every-ms, default 1.5 s):
// {"counts": {...}, "svg": "<svg ...>"}.
// The SVG is built and escaped by the server.
function live(el) {
  const url = el.getAttribute("data-live-url");
  const every = Number(el.getAttribute("data-live-every-ms")) || 1500;
  const tick = async () => {
    try {
      const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (r.ok) {
        const data = await r.json();
        setCounts(data.counts);
        const chart = document.querySelector("[data-chart]");
        if (chart && data.svg) chart.innerHTML = data.svg;
      }
    } catch (e) { /* next tick retries */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

// The upload form sends the file as the request body (X-CSRF-Token header),
// then polls the import's progress until it is finished or failed.
function upload(form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = form.querySelector('input[type="file"]');
    const bar = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    const file = input && input.files && input.files[0];
    if (!file) { status.textContent = "choose a file first"; return; }
    // Rows in a plain CSV, for the percentage (an archive: unknown until done).
    let total = 0;
    if (file.size < 64 * 1024 * 1024 && !/\.(zip|gz|rar)$/i.test(file.name)) {
      const text = await file.text();
      total = Math.max(0, text.split("\n").filter((l) => l.trim() !== "").length - 1);
    }
    const csrf = form.querySelector('input[name="csrf"]').value;
    status.textContent = "uploading…";
    bar.value = 0;
    const r = await fetch(form.getAttribute("data-upload-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/octet-stream" },
      body: file,
    });
    if (!r.ok) { status.textContent = "upload failed: " + (await r.text()); return; }
    const { id } = await r.json();
    const poll = async () => {
      const p = await fetch("/imports/" + id + "/progress", { credentials: "same-origin", cache: "no-store" });
      if (!p.ok) { status.textContent = "progress unavailable"; return; }
      const d = await p.json();
      let pct = total > 0 ? Math.min(99, Math.floor((100 * d.rows_read) / total)) : 0;
      if (d.state === "finished") pct = 100;
      bar.value = pct;
      status.textContent = pct + " % · " + d.state + " · read " + d.rows_read + ", added " +
        d.added + ", updated " + d.updated + ", rejected " + d.rejected;
      setCounts(d.counts);
      if (d.state !== "finished" && d.state !== "failed") setTimeout(poll, 300);
    };
    poll();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const el = document.querySelector("[data-live-url]");
  if (el) live(el);
  const form = document.getElementById("upload-form");
  if (form) upload(form);
});
