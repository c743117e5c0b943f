// roost console: live swaps over Server-Sent Events, confirmations, local times. No build step.
//
// * An element with data-live="topic.a topic.b" and data-src="<url>" is re-fetched (GET data-src, its
//   innerHTML replaced) when /console/live reports one of its topics, debounced ~100 ms.
// * While the tab is hidden the stream is closed; when it shows again the stream reopens and, once it
//   is open, one catch-up refresh of every live element. After a reconnect or an "overflow", the same.
// * A form with data-confirm="text" asks first. <time data-local> shows the viewer's zone, UTC in title.
(function () {
  "use strict";
  var DEBOUNCE_MS = 100;
  var source = null;
  var pending = new Set();
  var timer = null;
  var opened = false;

  function liveElements() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live][data-src]"));
  }

  function topicsOf(el) {
    return (el.getAttribute("data-live") || "").split(/\s+/).filter(Boolean);
  }

  function allTopics() {
    var seen = new Set();
    liveElements().forEach(function (el) { topicsOf(el).forEach(function (t) { seen.add(t); }); });
    return Array.from(seen).sort();
  }

  function localTimes(root) {
    (root || document).querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      if (!el.title) { el.title = when.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC"); }
      var parts = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
      if (when.getFullYear() !== new Date().getFullYear()) { parts.year = "numeric"; }
      el.textContent = when.toLocaleString(undefined, parts);
    });
  }

  function refresh(el) {
    var url = el.getAttribute("data-src");
    el.setAttribute("aria-busy", "true");
    return fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "roost-console" } })
      .then(function (response) {
        if (response.redirected && /\/console\/login/.test(response.url)) {
          window.location.reload();  // the session ended: sign in again
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          el.innerHTML = html;
          localTimes(el);
          el.dispatchEvent(new CustomEvent("console:swapped", { bubbles: true }));
        }
      })
      .catch(function () { /* the stream's reconnect triggers a catch-up */ })
      .finally(function () { el.removeAttribute("aria-busy"); });
  }

  function flush() {
    timer = null;
    if (document.hidden) { return; }  // kept pending: refreshed when the tab shows again
    var topics = pending;
    pending = new Set();
    liveElements().forEach(function (el) {
      if (topicsOf(el).some(function (t) { return topics.has(t); })) { refresh(el); }
    });
  }

  function changed(topics) {
    topics.forEach(function (t) { pending.add(t); });
    if (timer === null) { timer = window.setTimeout(flush, DEBOUNCE_MS); }
  }

  function catchUp() {
    changed(allTopics());
  }

  // Listen to the stream; true when a new one was opened (its "open" then catches up, so nothing
  // that changes between the catch-up and the stream is missed).
  function open() {
    var topics = allTopics();
    if (!topics.length || source !== null || typeof EventSource === "undefined") { return false; }
    source = new EventSource("/console/live?topics=" + encodeURIComponent(topics.join(" ")));
    source.addEventListener("open", function () {
      if (opened) { catchUp(); }  // a reconnect: anything may have changed meanwhile
      opened = true;
      document.documentElement.setAttribute("data-live-state", "open");
    });
    source.addEventListener("change", function (e) {
      try { changed(JSON.parse(e.data).topics || []); } catch (err) { catchUp(); }
    });
    source.addEventListener("overflow", function () { catchUp(); });
    source.addEventListener("error", function () {
      document.documentElement.setAttribute("data-live-state", "reconnecting");
    });
    return true;
  }

  function close() {
    if (source !== null) { source.close(); source = null; }
    document.documentElement.setAttribute("data-live-state", "paused");
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      close();
    } else if (!open()) {
      catchUp();
    }
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    var text = form.getAttribute && form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { e.preventDefault(); }
  });

  function start() {
    localTimes(document);
    if (!document.hidden) { open(); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
  window.roostConsole = { refresh: refresh, catchUp: catchUp, localTimes: localTimes };
})();
