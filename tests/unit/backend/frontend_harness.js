// Drives roles/caddy/files/frontend/app.js in Node against a running backend, with a
// minimal stand-in for the few DOM calls the page makes (no browser on the test host).
//   [MMO_KEY=KEY] node [--experimental-websocket] frontend_harness.js APP_JS BASE_URL MODE RETRIEVAL STREAM QUERY...
// When the page asks for an API key, MMO_KEY is typed into its login form. Cookies are kept
// like a browser keeps them (set by responses, sent with fetch and the WebSocket upgrade).
// Prints the terminal's lines as JSON: [{"cls": ..., "text": ...}, ...], then the state of
// the page: {"status", "login_shown"} as the last element.
"use strict";

const [appJs, base, mode, retrieval, stream, ...queries] = process.argv.slice(2);

class Element {
  constructor(id) {
    Object.assign(this, { id, className: "", textContent: "", value: "", checked: false, disabled: false,
                          hidden: false, scrollTop: 0, scrollHeight: 0, children: [], listeners: {} });
  }
  appendChild(child) { this.children.push(child); return child; }
  replaceChildren() { this.children = []; }
  addEventListener(type, listener) { this.listeners[type] = listener; }
  focus() {}
}

const elements = {};
for (const id of ["log", "input", "mode", "retrieval", "stream", "status", "prompt", "login", "key"]) {
  elements[id] = new Element(id);
}
elements.mode.value = mode;
elements.retrieval.checked = retrieval === "1";
elements.stream.checked = stream === "1";

global.document = { getElementById: (id) => elements[id], createElement: () => new Element() };
global.location = new URL(base);
const jar = new Map(); // cookie name -> value
const cookieHeader = () => [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
const realFetch = global.fetch;
global.fetch = async (url, options = {}) => { // the page uses same-origin paths
  const headers = new Headers(options.headers || {});
  if (jar.size && options.credentials !== "omit") headers.set("Cookie", cookieHeader());
  const response = await realFetch(new URL(url, base), { ...options, headers });
  for (const cookie of response.headers.getSetCookie()) {
    const [pair, ...flags] = cookie.split(";").map((part) => part.trim());
    const [name, value] = [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)];
    if (flags.some((flag) => flag.toLowerCase() === "max-age=0")) jar.delete(name);
    else jar.set(name, value);
  }
  return response;
};
if (global.WebSocket) {
  const RealWebSocket = global.WebSocket;
  global.WebSocket = class extends RealWebSocket { // a browser sends the site's cookies with the upgrade
    constructor(url) { super(url, { headers: jar.size ? { Cookie: cookieHeader() } : {} }); }
  };
}

require(appJs);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

(async () => {
  while (!["ready", "key needed"].includes(elements.status.textContent)) await sleep(10); // the session check
  if (elements.status.textContent === "key needed" && process.env.MMO_KEY) {
    elements.key.value = process.env.MMO_KEY;
    await elements.login.listeners.submit({ preventDefault() {} });
  }
  for (const query of queries) {
    elements.input.value = query;
    await elements.prompt.listeners.submit({ preventDefault() {} });
  }
  const lines = elements.log.children.map((p) => ({ cls: p.className, text: p.textContent }));
  lines.push({ status: elements.status.textContent, login_shown: !elements.login.hidden, key_left: elements.key.value });
  process.stdout.write(JSON.stringify(lines));
  process.exit(0); // the page keeps its WebSocket open
})();
