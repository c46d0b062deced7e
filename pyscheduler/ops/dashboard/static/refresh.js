// pyscheduler dashboard: reload the page's live region every few hundred milliseconds.
// The server renders everything (escaped); this only swaps in the fresh fragment, and the
// page works the same without it (the "reload" link).
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("refresh-status");
  if (!live || !window.fetch) return;
  var every = Math.max(250, Number(live.getAttribute("data-refresh-ms")) || 1000);
  var refreshes = 0;

  function show(state, text) {
    if (!status) return;
    status.setAttribute("data-state", state);
    status.textContent = text;
  }

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  // One request at a time, the next `every` ms after the last one ended: a slow server is
  // never asked faster than it answers.
  function later() {
    window.setTimeout(tick, every);
  }

  function tick() {
    // Not while hidden, or while someone uses a control inside the region.
    var focused = document.activeElement;
    if (document.hidden || (focused && focused !== document.body && live.contains(focused))) {
      later();
      return;
    }
    fetch(fragmentUrl(), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        refreshes += 1;
        live.setAttribute("data-refreshes", String(refreshes));
        show("live", "live");
      })
      .catch(function () {
        show("offline", "offline");
      })
      .then(later);
  }

  show("live", "live");
  later();
})();
