// Terminal client of the multimodel backend: POST /api/query, or streaming over WebSocket /ws.
// Plain browser JavaScript, no build step. Every text from the server goes in via
// textContent, never innerHTML, so an answer cannot inject markup.
// API keys: when GET /api/session answers 401 the page shows its login form, sends the key
// once to POST /api/login (Authorization: Bearer) and from then on relies on the cookie the
// backend sets (HttpOnly: this script never sees it again; same-site: sent to /api and /ws).
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
const input = $("input");
const past = []; // queries typed, for ↑/↓
let historyAt = 0;
let socket = null; // one WebSocket, opened on the first streamed query and reused
let pending = null; // {answer, resolve} of the query the socket is answering

function line(text, cls) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  log.appendChild(p);
  log.scrollTop = log.scrollHeight;
  return p;
}

class KeyNeeded extends Error {}

// The login form instead of the prompt (show) or the other way round.
function askForKey(show, why) {
  $("login").hidden = !show;
  $("prompt").hidden = show;
  $("status").textContent = show ? "key needed" : "ready";
  if (why) line(why, show ? "error" : "meta");
  (show ? $("key") : input).focus();
}

async function checkSession() {
  try {
    const response = await fetch("/api/session", { credentials: "same-origin" });
    askForKey(response.status === 401, response.status === 401 ? "this site needs an API key: enter it below" : "");
  } catch (err) {
    line(`error: cannot reach the backend: ${err.message}`, "error");
    $("status").textContent = "ready";
  }
}

async function logIn(key) {
  const response = await fetch("/api/login", {
    method: "POST",
    credentials: "same-origin",
    headers: { Authorization: `Bearer ${key}` },
    body: "", // Content-Length: 0 (a proxy may refuse a POST without one)
  });
  if (response.status === 204) {
    askForKey(false, "logged in");
  } else {
    askForKey(true, response.status === 401 ? "error: that key was refused" : `error: HTTP ${response.status}`);
  }
}

async function logOut() {
  if (socket) socket.close();
  await fetch("/api/logout", { method: "POST", credentials: "same-origin", body: "" });
  await checkSession();
}

function setBusy(busy, status) {
  input.disabled = busy;
  $("status").textContent = status;
  if (!busy) input.focus();
}

// "[simple] Q2_FAST_1 · cached · 42 ms" under each answer, then its sources.
function showMeta(reply) {
  const cached = reply.cached ? "cached" : "fresh";
  line(`[${reply.tier}] ${reply.instance} · ${cached} · ${reply.latency_ms} ms`, "meta");
  (reply.sources || []).forEach((s, n) => {
    const where = s.source || s.id;
    const score = typeof s.score === "number" ? ` (${s.index} ${s.score.toFixed(2)})` : ` (${s.index})`;
    line(`[${n + 1}] ${where}${score}`, "sources");
  });
}

function request() {
  return {
    query: input.value.trim(),
    mode: $("mode").value,
    use_retrieval: $("retrieval").checked,
  };
}

async function viaHttp(body) {
  const response = await fetch("/api/query", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (response.status === 401) throw new KeyNeeded("the API key is missing or no longer valid: log in again");
  let reply;
  try {
    reply = await response.json();
  } catch (err) {
    throw new Error(`HTTP ${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(reply.detail || `HTTP ${response.status}`);
  line(reply.answer, "answer");
  showMeta(reply);
}

function openSocket(retry = true) {
  if (socket && socket.readyState === WebSocket.OPEN) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    let opened = false;
    ws.onopen = () => { opened = true; socket = ws; resolve(ws); };
    ws.onerror = () => {
      if (opened) return;
      // A Caddy reload can close the odd connection before its upgrade: open it once more.
      if (retry) {
        setTimeout(() => openSocket(false).then(resolve, reject), 250);
        return;
      }
      // The browser does not say why an upgrade failed: a missing key is one reason.
      fetch("/api/session", { credentials: "same-origin" }).then(
        (r) => reject(r.status === 401 ? new KeyNeeded("the API key is missing or no longer valid: log in again")
          : new Error("cannot open the WebSocket /ws")),
        () => reject(new Error("cannot open the WebSocket /ws")));
    };
    ws.onclose = () => {
      if (socket === ws) socket = null;
      if (pending) { pending.reject(new Error("connection closed mid-answer")); pending = null; }
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (!pending) return;
      if (message.type === "token") {
        pending.answer.textContent += message.text;
        log.scrollTop = log.scrollHeight;
      } else if (message.type === "done") {
        showMeta(message);
        pending.resolve();
        pending = null;
      } else if (message.type === "error") {
        pending.reject(new Error(message.message));
        pending = null;
      }
    };
  });
}

async function viaWebSocket(body) {
  const ws = await openSocket();
  const answer = line("", "answer");
  await new Promise((resolve, reject) => {
    pending = { answer, resolve, reject };
    ws.send(JSON.stringify(body));
  });
}

async function command(text) {
  if (text === "/clear") {
    log.replaceChildren();
  } else if (text === "/logout") {
    await logOut();
  } else {
    line("/clear  empty the screen   /logout  forget the API key   ↑/↓  previous queries   Enter  send", "meta");
    line("mode: auto picks the tier from the question; retrieval adds passages from the FAISS indexes;", "meta");
    line("stream: tokens arrive as they are generated (WebSocket /ws), else one POST /api/query", "meta");
  }
}

$("prompt").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = request();
  if (!body.query) return;
  past.push(body.query);
  historyAt = past.length;
  input.value = "";
  line(`> ${body.query}`, "echo");
  if (body.query.startsWith("/")) {
    await command(body.query);
    return;
  }
  setBusy(true, "thinking…");
  let keyNeeded = false;
  try {
    await ($("stream").checked ? viaWebSocket(body) : viaHttp(body));
  } catch (err) {
    line(`error: ${err.message}`, "error");
    keyNeeded = err instanceof KeyNeeded;
  } finally {
    setBusy(false, "ready");
  }
  if (keyNeeded) askForKey(true);
});

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  $("key").value = ""; // the cookie carries it from now on
  if (key) await logIn(key);
});

input.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
  event.preventDefault();
  historyAt = Math.max(0, Math.min(past.length, historyAt + (event.key === "ArrowUp" ? -1 : 1)));
  input.value = past[historyAt] || "";
});

checkSession();
