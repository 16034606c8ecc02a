// End-to-end test of the dashboard in headless Chromium, driven by Playwright. Run by
// crates/ignis/tests/all/ui.rs against a server it started, with a function "greeter" deployed:
//   IGNIS_URL=http://127.0.0.1:PORT IGNIS_KEY=id:secret SCREENSHOTS=dir [CHROMIUM=/usr/bin/chromium] node dashboard.mjs
// Logs in with a key, opens the function list, invokes greeter from the JSON editor, sees the
// activation and its logs (stored and live), the usage and the instances pages, and saves a
// screenshot of each page. Fails on any request to another origin (the pages must work
// offline) and on any script error.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const url = process.env.IGNIS_URL;
const key = process.env.IGNIS_KEY;
const out = process.env.SCREENSHOTS;
assert.ok(url && key && out, "IGNIS_URL, IGNIS_KEY and SCREENSHOTS are required");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Root in CI: Chromium's own sandbox needs an unprivileged user.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(15000);
  const origin = new URL(url).origin;
  const foreign = [];
  const errors = [];
  page.on("request", (r) => {
    if (new URL(r.url()).origin !== origin) foreign.push(r.url());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    // A refused login is an expected 401 in the console.
    if (m.type() === "error" && !m.text().includes("401")) errors.push(m.text());
  });
  const step = (what) => console.log(`ui: ${what}`);

  step("login page");
  await page.goto(`${url}/ui`);
  await page.waitForSelector("#login-form");
  await page.fill("#key", "ik_nosuchkey:wrong");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#login-error:has-text('Cannot log in')");
  await page.fill("#key", "");
  await page.screenshot({ path: `${out}/login.png` });

  step("log in and see the function list with its charts");
  await page.fill("#key", key);
  await page.click("#login-form button[type=submit]");
  const row = 'section.fn[data-function="greeter"]';
  await page.waitForSelector(row);
  assert.equal(await page.locator(`${row} .chart svg`).count(), 4);
  assert.ok((await page.locator(`${row} .chart svg rect`).count()) > 0, "no invocation bars");
  await page.screenshot({ path: `${out}/functions.png`, fullPage: true });

  step("open the function, invoke it from the JSON editor");
  await page.click(`${row} .fn-head a`);
  await page.waitForSelector("#event");
  await page.waitForSelector('#live-logs[data-ready="true"]');
  await page.fill("#event", "{not json");
  await page.waitForSelector("#json-error:has-text('invalid JSON')");
  assert.equal(await page.isDisabled("#invoke"), true);
  await page.fill("#event", '{"name": "Ada"}');
  assert.equal(await page.isDisabled("#invoke"), false);
  await page.click("#invoke");
  await page.waitForSelector("#invoke-status");
  assert.equal(await page.textContent("#invoke-status"), "success");
  assert.match(await page.textContent("#invoke-output"), /Hello, Ada!/);
  const id = (await page.textContent("#invoke-activation")).trim();
  assert.match(id, /^[0-9a-f]{32}$/);

  step("the activation is listed, its line arrived live, its logs are shown");
  await page.waitForSelector(`tr.activation[data-id="${id}"]`);
  await page.waitForSelector('#live-logs:has-text("greeting Ada")');
  await page.click(`tr.activation[data-id="${id}"] a`);
  await page.waitForSelector('#activation-logs:has-text("greeting Ada")');
  assert.match(await page.textContent("#activation-result"), /Hello, Ada!/);
  await page.screenshot({ path: `${out}/function.png`, fullPage: true });

  step("usage page");
  await page.click('#nav a[data-page="usage"]');
  await page.waitForSelector("#usage-total");
  assert.match(await page.textContent("#usage-table"), /greeter/);
  await page.screenshot({ path: `${out}/usage.png`, fullPage: true });

  step("instances page");
  await page.click('#nav a[data-page="instances"]');
  await page.waitForSelector("#instances");
  assert.match(await page.textContent("#instances"), /greeter/);
  await page.screenshot({ path: `${out}/instances.png`, fullPage: true });

  assert.deepEqual(foreign, [], "requests to other origins");
  assert.deepEqual(errors, [], "script errors");
  step("all good");
} finally {
  await browser.close();
}
