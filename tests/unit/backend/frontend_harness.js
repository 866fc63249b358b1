// Drives roles/caddy/files/frontend/app.js in Node against a running backend, with a
// minimal stand-in for the few DOM calls the page makes (no browser on the test host).
//   node [--experimental-websocket] frontend_harness.js APP_JS BASE_URL MODE RETRIEVAL STREAM QUERY...
// Prints the terminal's lines as JSON: [{"cls": ..., "text": ...}, ...].
"use strict";

const [appJs, base, mode, retrieval, stream, ...queries] = process.argv.slice(2);

class Element {
  constructor(id) {
    Object.assign(this, { id, className: "", textContent: "", value: "", checked: false, disabled: false,
                          scrollTop: 0, scrollHeight: 0, children: [], listeners: {} });
  }
  appendChild(child) { this.children.push(child); return child; }
  replaceChildren() { this.children = []; }
  addEventListener(type, listener) { this.listeners[type] = listener; }
  focus() {}
}

const elements = {};
for (const id of ["log", "input", "mode", "retrieval", "stream", "status", "prompt"]) elements[id] = new Element(id);
elements.mode.value = mode;
elements.retrieval.checked = retrieval === "1";
elements.stream.checked = stream === "1";

global.document = { getElementById: (id) => elements[id], createElement: () => new Element() };
global.location = new URL(base);
const realFetch = global.fetch;
global.fetch = (url, options) => realFetch(new URL(url, base), options); // the page uses same-origin paths

require(appJs);

(async () => {
  for (const query of queries) {
    elements.input.value = query;
    await elements.prompt.listeners.submit({ preventDefault() {} });
  }
  const lines = elements.log.children.map((p) => ({ cls: p.className, text: p.textContent }));
  process.stdout.write(JSON.stringify(lines));
  process.exit(0); // the page keeps its WebSocket open
})();
