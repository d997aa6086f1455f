// The inbox page (GET /inbox/{address}): lists the mailbox, shows a message, and
// updates live from the event stream. User data only ever reaches the DOM through
// textContent; message HTML (sanitised by the server) only through the sandboxed
// iframe's srcdoc.
"use strict";
(function () {
  // /inbox/{address}: the server checked the address before sending this page.
  const address = decodeURIComponent(location.pathname.split("/")[2] || "");
  const images = new URLSearchParams(location.search).get("images") === "1";
  document.title = "Inbox " + address;
  document.getElementById("address").textContent = address;
  const toggle = document.getElementById("images");
  toggle.href = images ? "?images=0" : "?images=1";
  toggle.textContent = images ? "hide remote images" : "show remote images";
  const base = "/api/v1/mailboxes/" + encodeURIComponent(address);
  const list = document.getElementById("list");
  const status = document.getElementById("status");
  const view = document.getElementById("view");
  let current = null;

  function row(m) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    if (!m.seen) li.className = "unseen";
    const subject = document.createElement("div");
    subject.textContent = m.subject || "(no subject)";
    const meta = document.createElement("small");
    meta.textContent = m.from + " · " + m.date;
    li.append(subject, meta);
    li.addEventListener("click", () => show(m.id, li));
    return li;
  }

  async function reload() {
    const r = await fetch(base + "/messages?limit=100");
    if (!r.ok) { status.textContent = "error " + r.status; return; }
    const data = await r.json();
    list.replaceChildren(...data.messages.map(row));
  }

  async function show(id, li) {
    const r = await fetch("/api/v1/messages/" + encodeURIComponent(id) + (images ? "?images=1" : ""));
    if (!r.ok) { status.textContent = "error " + r.status; return; }
    const m = await r.json();
    current = id;
    if (li) li.className = "";
    document.getElementById("subject").textContent = m.subject || "(no subject)";
    const from = (m.from || []).map(a => (a.name ? a.name + " " : "") + "<" + (a.address || "") + ">").join(", ");
    document.getElementById("meta").textContent = from + " · " + (m.date || m.received);
    const atts = document.getElementById("attachments");
    atts.replaceChildren(...(m.attachments || []).map(a => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = "/api/v1/messages/" + encodeURIComponent(id) + "/parts/" + a.part;
      link.textContent = (a.name || "attachment") + " (" + a.type + ", " + a.size + " bytes)";
      item.append(link);
      return item;
    }));
    const frame = document.getElementById("html");
    const text = document.getElementById("text");
    if (m.html) {
      frame.hidden = false; text.hidden = true;
      frame.srcdoc = m.html;
    } else {
      frame.hidden = true; text.hidden = false;
      frame.srcdoc = "";
      text.textContent = m.text || "";
    }
    view.hidden = false;
  }

  document.getElementById("delete").addEventListener("click", async () => {
    if (!current) return;
    await fetch("/api/v1/messages/" + encodeURIComponent(current), { method: "DELETE" });
    current = null;
    view.hidden = true;
    reload();
  });

  const events = new EventSource(base + "/events");
  events.addEventListener("ready", () => { status.textContent = "live"; reload(); });
  events.addEventListener("message", e => { list.prepend(row(JSON.parse(e.data))); });
  events.addEventListener("resync", () => reload());
  events.onerror = () => { status.textContent = "reconnecting…"; };
})();
