// Keeps the Sync page's progress current without a reload. The page works without it: the
// "Refresh" link and the button's server-side state say the same.
(function () {
  "use strict";
  var panels = document.querySelectorAll("[data-sync-token]");
  if (!panels.length) {
    return;
  }
  var wasRunning = {};
  // 1204 → "1,204", as the server writes counts.
  function n(value) {
    return String(value).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  function set(panel, role, text) {
    var el = panel.querySelector('[data-role="' + role + '"]');
    if (el) {
      el.textContent = text;
    }
  }
  function update(live) {
    live.forEach(function (t) {
      var panel = document.querySelector('[data-sync-token="' + t.token + '"]');
      if (!panel) {
        return;
      }
      var status = panel.querySelector('[data-role="status"]');
      var button = panel.querySelector('[data-role="button"]');
      if (t.running) {
        status.textContent = "";
        var tag = document.createElement("span");
        tag.className = "tag tag--blue";
        tag.textContent = "Running";
        status.appendChild(tag);
        status.appendChild(document.createTextNode(" " + (t.kind || "Sync") + ": " + n(t.pages) + " pages, " +
          n(t.devices) + " devices so far (" + n(t.added) + " added, " + n(t.modified) + " changed, " +
          n(t.removed) + " removed)."));
        set(panel, "hint", "The button is available again when this sync finishes.");
      } else if (wasRunning[t.token]) {
        // The run just ended: reload once to show its row in the history.
        window.location.reload();
        return;
      }
      if (button) {
        var disabled = t.running || !!t.available_at;
        button.disabled = disabled;
        button.setAttribute("aria-disabled", disabled ? "true" : "false");
      }
      wasRunning[t.token] = t.running;
    });
  }
  function poll() {
    fetch("/sync/live", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (live) { if (live) { update(live); } })
      .catch(function () {})
      .then(function () { window.setTimeout(poll, 1500); });
  }
  panels.forEach(function (p) {
    wasRunning[p.getAttribute("data-sync-token")] = !!p.querySelector(".sync-status .tag--blue");
  });
  window.setTimeout(poll, 1000);
})();
