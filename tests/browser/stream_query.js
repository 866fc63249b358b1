// The frontend in a real browser: Debian's chromium, headless, driven by playwright-core
// (no browser download). Opens https://localhost/ (resolved to the given address, so the
// certificate's name matches), logs in with the site's API key when the page asks for one,
// sends a query with streaming on, and waits for the answer to finish. Prints one JSON
// document: what the answer looked like each time it grew (the streamed tokens), the page's
// lines, the WebSocket frames it received; writes a screenshot.
//
//   node stream_query.js ADDRESS API_KEY INTERMEDIATE_CA_FILE SCREENSHOT [CHROMIUM]
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const { chromium } = require("playwright-core");

async function main() {
  const [address, apiKey, caFile, screenshot, executable = "/usr/bin/chromium"] = process.argv.slice(2);
  // Caddy's own CA (tls internal) trusted by the public key of its intermediate certificate,
  // which Caddy sends with the site's (chromium matches the pin against the chain it gets).
  const ca = new crypto.X509Certificate(fs.readFileSync(caFile));
  const spki = crypto.createHash("sha256").update(ca.publicKey.export({ type: "spki", format: "der" })).digest("base64");
  const browser = await chromium.launch({
    executablePath: executable,
    headless: true,
    args: [
      `--host-resolver-rules=MAP localhost ${address}`,
      `--ignore-certificate-errors-spki-list=${spki}`,
      "--no-sandbox", // root in CI: chromium's sandbox needs an unprivileged user
    ],
  });
  const result = { growth: [], lines: [], frames: 0, errors: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
    page.on("pageerror", (error) => result.errors.push(String(error)));
    page.on("websocket", (ws) => ws.on("framereceived", () => { result.frames += 1; }));
    // The page asks for a key when the site has API keys (GET /api/session answers 401).
    const session = page.waitForResponse((response) => response.url().endsWith("/api/session"));
    await page.goto("https://localhost/", { waitUntil: "load" });
    result.title = await page.title();
    result.session = (await session).status();
    await page.waitForTimeout(200); // the page's handler of that answer
    if (await page.isVisible("#login")) {
      await page.fill("#key", apiKey);
      await page.click("#login button");
      await page.waitForSelector("#prompt", { state: "visible" });
    }
    // Every change of the answer's text, as the page shows it, with the time it happened.
    await page.exposeFunction("grew", (text) => result.growth.push([Date.now(), text.length]));
    await page.evaluate(() => {
      new MutationObserver(() => {
        const answers = document.querySelectorAll("#log p.answer");
        if (answers.length) window.grew(answers[answers.length - 1].textContent);
      }).observe(document.getElementById("log"), { childList: true, subtree: true, characterData: true });
    });
    await page.selectOption("#mode", "simple");
    await page.check("#stream");
    result.sent = Date.now();
    // A new query each run: a cached answer would come in one piece.
    await page.fill("#input", `Tell me a long story about tiny models (${crypto.randomUUID().slice(0, 8)})`);
    await page.press("#input", "Enter");
    // Done when the status is back to ready and the meta line (tier, instance) is under the answer.
    await page.waitForFunction(() => document.getElementById("status").textContent === "ready"
      && document.querySelector("#log p.answer") !== null, null, { timeout: 120000 });
    result.done = Date.now();
    result.lines = await page.$$eval("#log p", (ps) => ps.map((p) => [p.className, p.textContent.slice(0, 300)]));
    await page.screenshot({ path: screenshot, fullPage: true });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
