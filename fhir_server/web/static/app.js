/* The apps' only script: progressive enhancement, the pages work without it.
   1. A form marked data-once sends once: its submit buttons are disabled after the first
      submit (the server's idempotency key makes a second send harmless anyway).
   2. An element with data-refresh-url and data-refresh-seconds (at least 10) is replaced by
      a fresh copy from that URL every so often, and the change is announced politely; not
      while the user is filling in a form inside it. */
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-once")) { return; }
    if (form.getAttribute("data-sent") === "yes") { event.preventDefault(); return; }
    form.setAttribute("data-sent", "yes");
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      window.setTimeout(function () { button.disabled = true; }, 0);
      if (button.getAttribute("data-busy")) { button.textContent = button.getAttribute("data-busy"); }
    });
  });

  // Never replace what someone is filling in: an open <details> form or a focused field.
  function busy(region) {
    var active = document.activeElement;
    if (region.querySelector("details[open]")) { return true; }
    return !!(active && region.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName));
  }

  function refresh(region) {
    var url = region.getAttribute("data-refresh-url");
    var seconds = Math.max(10, parseInt(region.getAttribute("data-refresh-seconds") || "15", 10));
    var status = document.getElementById(region.getAttribute("data-refresh-status") || "");
    window.setInterval(function () {
      if (document.hidden || busy(region)) { return; }
      fetch(url, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
        .then(function (response) {
          if (response.status === 200) { return response.text(); }
          return null;
        })
        .then(function (html) {
          if (html === null || html === region.innerHTML) { return; }
          var changed = region.getAttribute("data-version");
          region.innerHTML = html;
          var fresh = region.querySelector("[data-version]");
          var version = fresh ? fresh.getAttribute("data-version") : null;
          if (status && version && version !== changed) {
            status.textContent = "Updated " + new Date().toLocaleTimeString();
          }
          if (version) { region.setAttribute("data-version", version); }
        })
        .catch(function () { /* offline for a moment: try again next time */ });
    }, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh-url]").forEach(refresh);
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  });
})();
