// orderwatch console: ask before every action. A form with data-confirm shows its message
// in a confirmation dialog; when the operator agrees, confirmed=yes goes with the form, so
// the server runs the action at once (without script, the server asks on a page instead).
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) {
    return;
  }
  if (!window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  var field = form.querySelector('input[name="confirmed"]');
  if (field) {
    field.value = "yes";
  }
});
