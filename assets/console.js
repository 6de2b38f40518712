// casewatch console: live refresh. A page whose <main> carries data-live asks /live every
// second; when the token changes (a consumer's flush landed), the page's <main> is fetched
// again and swapped in. Pages work without this script.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !main.dataset.live) { return; }
  var busy = false;
  function poll() {
    if (busy) { return; }
    busy = true;
    fetch("/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (token) {
        if (token === null || token === main.dataset.live) { return null; }
        return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
          .then(function (r) { return r.text(); })
          .then(function (html) {
            var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
            if (!next) { return; }
            main.innerHTML = next.innerHTML;
            // A page that is no longer live (an action was applied) stops following.
            if (next.dataset.live) { main.dataset.live = next.dataset.live; } else { clearInterval(timer); }
          });
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  var timer = setInterval(poll, 1000);
})();
