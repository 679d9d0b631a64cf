// The key dashboard's only script, served by the gateway (the page's CSP allows no other).
// Copy buttons: <button data-copy="ID"> copies the text of the element with that id.
// Forms with data-confirm ask before they are sent.
"use strict";

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // Plain HTTP on another host than localhost has no clipboard API: select and copy.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  document.body.removeChild(area);
  return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const done = button.parentElement.querySelector(".copied");
  copyText(source.textContent).then(
    () => { if (done) { done.textContent = "Copied"; done.hidden = false; } },
    () => { if (done) { done.textContent = "Select the key and copy it by hand"; done.hidden = false; } },
  );
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (message && !window.confirm(message)) event.preventDefault();
});
