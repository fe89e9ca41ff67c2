// Live updates of the page: a Server-Sent Events stream says when what the page shows changed; the page's main
// content is then fetched again and swapped in place. The operator can pause them (remembered for the tab).
(function () {
  "use strict";
  var button = document.getElementById("pausa");
  var status = document.getElementById("stato-aggiornamenti");
  if (!button || !window.EventSource) { return; }
  var paused = sessionStorage.getItem("st-pausa") === "1";
  var stale = false;
  function show() {
    button.setAttribute("aria-pressed", paused ? "true" : "false");
    button.textContent = paused ? "Riprendi gli aggiornamenti" : "Metti in pausa gli aggiornamenti";
    status.textContent = paused ? "Aggiornamenti in pausa" : "Aggiornamenti in tempo reale attivi";
  }
  function refresh() {
    if (paused) { stale = true; return; }
    stale = false;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("contenuto");
        var main = document.getElementById("contenuto");
        // A form being filled in is not swapped away under the operator's hands.
        var typing = main.contains(document.activeElement) && /^(TEXTAREA|INPUT|SELECT)$/.test(document.activeElement.tagName);
        if (fresh && !typing) { main.innerHTML = fresh.innerHTML; }
      });
  }
  button.addEventListener("click", function () {
    paused = !paused;
    sessionStorage.setItem("st-pausa", paused ? "1" : "0");
    show();
    if (!paused && stale) { refresh(); }
  });
  show();
  var events = new EventSource(button.getAttribute("data-eventi"));
  events.addEventListener("cambiato", refresh);
})();
