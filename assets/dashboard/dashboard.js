// idlegrid dashboard: keeps the page current without reloading it. The server sends a `change`
// message on /events naming what changed (the pool, some jobs, or everything); when it concerns
// this page, the page fetches its own <main> again (rendered and escaped by the server) and
// swaps it in, no more often than `data-min-ms` allows. Without this script the page is the
// same tables, read-only.
"use strict";
(function () {
  const main = document.getElementById("main");
  const badge = document.getElementById("live");
  if (!main || !main.dataset.live || !window.EventSource) return;
  const job = main.dataset.job || null;
  const minMs = Number(main.dataset.minMs || 250);
  let last = 0;
  let timer = null;
  let inFlight = false;
  let again = false;

  function setLive(on) {
    if (!badge) return;
    badge.textContent = on ? "live" : "reconnecting";
    badge.className = on ? "live on" : "live off";
  }

  async function refresh() {
    timer = null;
    if (inFlight) { again = true; return; }
    inFlight = true;
    last = Date.now();
    try {
      const resp = await fetch(window.location.pathname, {
        headers: { "X-Idlegrid-Fragment": "1" },
        credentials: "same-origin",
        redirect: "manual",
      });
      if (resp.status === 200) {
        main.innerHTML = await resp.text();
        main.dataset.refreshed = String(Date.now());
      } else if (resp.type === "opaqueredirect" || resp.status === 401) {
        window.location.assign("/"); // the session ended: sign in again
      }
    } catch (e) {
      setLive(false);
    } finally {
      inFlight = false;
      if (again) { again = false; schedule(); }
    }
  }

  function schedule() {
    if (timer !== null) return;
    const wait = Math.max(0, last + minMs - Date.now());
    timer = window.setTimeout(refresh, wait);
  }

  function concernsThisPage(change) {
    if (change.all) return true;
    if (job === null) return true; // the front page shows the pool and every job
    return change.pool || (Array.isArray(change.jobs) && change.jobs.indexOf(job) >= 0);
  }

  const events = new EventSource("/events");
  events.addEventListener("open", () => { setLive(true); schedule(); });
  events.addEventListener("error", () => setLive(false));
  events.addEventListener("change", (e) => {
    let change;
    try { change = JSON.parse(e.data); } catch (_) { change = { all: true }; }
    if (concernsThisPage(change)) schedule();
  });
  // What moves by itself (makespans, replica progress) is brought up to date now and then
  // while anything runs.
  window.setInterval(() => {
    if (main.querySelector(".js-running")) schedule();
  }, Math.max(2000, minMs));
})();
