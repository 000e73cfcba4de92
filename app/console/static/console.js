// Console forms post with the x-csrf-token header (the csrftoken cookie's value), which a
// plain HTML form cannot send; without this script state changes are refused by design.
"use strict";
(function () {
  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function showPage(html) {
    var page = new DOMParser().parseFromString(html, "text/html");
    var fresh = page.querySelector("main");
    var current = document.querySelector("main");
    if (fresh && current) {
      current.replaceWith(fresh);
      document.title = page.title;
      fresh.focus();
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-console")) return;
    event.preventDefault();
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/x-www-form-urlencoded",
        "x-csrf-token": csrfToken()
      },
      body: new URLSearchParams(new FormData(form))
    }).then(function (response) {
      if (response.ok && response.redirected) {
        window.location.assign(response.url);
        return null;
      }
      return response.text().then(showPage);
    }).catch(function () {
      showPage("<main tabindex='-1'><div class='error' role='alert'><p>The registry did not answer; try again.</p></div></main>");
    }).finally(function () {
      if (button) button.disabled = false;
    });
  });
})();
