"""The web UI's static files (stylesheet, the one small script, the icon), held
in code so the package needs no data files and the pages load nothing from
elsewhere.

The script only enhances: every form works without it. With it, the upload form
is sent by ``XMLHttpRequest`` (the same multipart body, plus ``Accept:
application/json``) so a progress bar can show bytes sent, rate and percentage;
on success the page reloads (the server has queued the "Uploaded ..." message),
or, when the reply names a ``location`` on this site (a mutable file's page), goes
there.
"""

from __future__ import annotations

from typing import Final

CSS: Final = """
:root { --fg: #1b1f24; --muted: #5b6470; --bg: #fff; --line: #d8dde3; --accent: #0b5cad;
  --ok: #146c2e; --bad: #a4141b; --soft: #f3f5f8; }
* { box-sizing: border-box; }
html { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
body { margin: 0; }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus {
  outline: 3px solid #ffbf47; outline-offset: 1px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; z-index: 2; }
header { display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between;
  gap: 8px 24px; padding: 10px 24px; background: #10263f; color: #fff; }
header a { color: #fff; }
header .site { margin: 0; font-weight: 600; font-size: 1.1rem; }
header .site a { text-decoration: none; }
nav ul { list-style: none; display: inline-flex; flex-wrap: wrap; gap: 4px 18px; margin: 0;
  padding: 0; }
header nav { display: flex; align-items: center; gap: 18px; }
nav a[aria-current="page"] { font-weight: 700; text-decoration-thickness: 3px; }
main { max-width: 1100px; margin: 0 auto; padding: 8px 24px 32px; }
h1 { font-size: 1.6rem; margin: 18px 0 12px; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 28px 0 8px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
h3 { font-size: 1rem; margin: 16px 0 6px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
caption { text-align: left; color: var(--muted); padding: 4px 0; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
thead th { background: var(--soft); font-weight: 600; }
table.facts th { width: 13rem; font-weight: 600; color: var(--muted); }
td .num, .num { font-variant-numeric: tabular-nums; }
code, .id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .88rem; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { background: #fff5d6; border-left: 4px solid #c78a00; padding: 6px 10px; }
.flash { background: #e9f4ec; border-left: 4px solid var(--ok); padding: 8px 12px; }
.flash.bad { background: #fbeaea; border-left-color: var(--bad); }
form.inline { display: inline; }
button { font: inherit; padding: 4px 12px; border: 1px solid #8a96a3; border-radius: 4px;
  background: var(--soft); color: var(--fg); cursor: pointer; }
button:hover { background: #e4e8ee; }
button.danger { background: var(--bad); color: #fff; border-color: var(--bad); }
header button { background: transparent; color: #fff; border-color: #8fa4bb; padding: 2px 10px; }
td form.inline button { padding: 0 8px; font-size: .9rem; }
details.inline { display: inline-block; vertical-align: top; }
details.inline summary { cursor: pointer; color: var(--accent); }
input, select { font: inherit; padding: 3px 6px; }
progress { width: 18rem; max-width: 100%; vertical-align: middle; }
meter { width: 12rem; vertical-align: middle; }
.crumbs ol { list-style: none; padding: 0; margin: 0 0 8px; display: flex; flex-wrap: wrap; }
.crumbs li + li::before { content: "/"; padding: 0 6px; color: var(--muted); }
a.dir { font-weight: 600; }
footer { color: var(--muted); font-size: .85rem; text-align: center; padding: 16px; }
"""

JS: Final = """
'use strict';
(function () {
  function human(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }
  function setup(form) {
    var bar = form.querySelector('progress');
    var text = form.querySelector('[role=status]');
    var box = form.querySelector('.progress');
    var button = form.querySelector('button[type=submit]');
    form.addEventListener('submit', function (ev) {
      if (!window.FormData || !window.XMLHttpRequest) { return; }
      ev.preventDefault();
      var xhr = new XMLHttpRequest();
      var started = Date.now();
      xhr.open('POST', form.action);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.addEventListener('progress', function (e) {
        if (!e.lengthComputable) { return; }
        var secs = Math.max((Date.now() - started) / 1000, 0.001);
        bar.max = e.total; bar.value = e.loaded;
        text.textContent = human(e.loaded) + ' of ' + human(e.total) + ' sent (' +
          Math.floor(100 * e.loaded / e.total) + ' %, ' + human(e.loaded / secs) + '/s)';
        if (e.loaded === e.total) { text.textContent += '; storing…'; }
      });
      xhr.addEventListener('load', function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          text.textContent = 'Done.';
          var go = null;
          try { go = JSON.parse(xhr.responseText).location; } catch (e) { /* reload */ }
          if (typeof go === 'string' && go.indexOf('/mutable/') === 0) {
            window.location.assign(go);  // a new mutable file: its page
          } else {
            window.location.reload();
          }
          return;
        }
        var msg = 'HTTP ' + xhr.status;
        try { msg = JSON.parse(xhr.responseText).error.message; } catch (e) { /* keep */ }
        text.textContent = 'Upload failed: ' + msg;
        button.disabled = false;
      });
      xhr.addEventListener('error', function () {
        text.textContent = 'Upload failed: the connection broke.';
        button.disabled = false;
      });
      box.hidden = false; button.disabled = true;
      text.textContent = 'Starting…';
      xhr.send(new FormData(form));
    });
  }
  document.addEventListener('DOMContentLoaded', function () {
    var form = document.getElementById('upload');
    if (form) { setup(form); }
  });
})();
"""

FAVICON: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#10263f"/>'
    '<circle cx="5" cy="5" r="2" fill="#fff"/><circle cx="11" cy="11" r="2" fill="#fff"/>'
    '<path d="M5 5L11 11" stroke="#fff" stroke-width="1.5"/></svg>'
)

STATIC: Final[dict[str, tuple[str, bytes]]] = {
    "ui.css": ("text/css", CSS.encode()),
    "ui.js": ("text/javascript", JS.encode()),
    "favicon.svg": ("image/svg+xml", FAVICON.encode()),
}
