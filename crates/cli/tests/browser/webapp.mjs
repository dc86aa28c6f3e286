// Drives the web app at / in Debian's headless Chromium, as a person would: paste the key,
// drop a real clip, choose light + WebM + transparent, start, wait, and check the result.
// Run by crates/cli/tests/process/webapp.rs with CLEARBG_URL, CLEARBG_KEY, CLEARBG_CLIP, CLEARBG_SHOT.
// Prints one JSON line of facts on success; exits 1 with the reason otherwise.
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

const { CLEARBG_URL: base, CLEARBG_KEY: key, CLEARBG_CLIP: clip, CLEARBG_SHOT: shot } = process.env;
if (!base || !key || !clip || !shot) throw new Error("set CLEARBG_URL, CLEARBG_KEY, CLEARBG_CLIP and CLEARBG_SHOT");

const profile = mkdtempSync(join(tmpdir(), "clearbg-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1100, height: 1400 },
  // The flags this machine needs: without the networking ones Chromium tries Google's hosts.
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required"],
});
const facts = {};
const foreign = [];
const consoleErrors = [];
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith(base) && !url.startsWith("data:") && !url.startsWith("blob:")) foreign.push(url);
  });
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  await page.goto(base + "/", { waitUntil: "load" });
  facts.title = await page.title();

  // The key: pasted, checked against the API, kept in localStorage.
  await page.fill("#api-key", key);
  await page.click("#save-key");
  await page.waitForFunction(() => document.querySelector("#key-status").textContent.includes("credits"));
  facts.stored_key = (await page.evaluate(() => localStorage.getItem("clearbg.apiKey"))) === key;

  // Drag and drop: a real DataTransfer carrying the clip's bytes, dropped on the drop zone.
  const bytes = readFileSync(clip).toString("base64");
  const dataTransfer = await page.evaluateHandle(({ b64, name }) => {
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([raw], name, { type: "video/mp4" }));
    return dt;
  }, { b64: bytes, name: basename(clip) });
  await page.dispatchEvent("#drop", "dragenter", { dataTransfer });
  await page.dispatchEvent("#drop", "drop", { dataTransfer });
  await page.waitForFunction(() => document.querySelector("#upload-status").textContent.startsWith("Uploaded"),
    null, { timeout: 60_000 });
  facts.upload_progress = await page.$eval("#upload-progress", (p) => p.value);

  await page.selectOption("#model", "light");
  await page.selectOption("#format", "webm");
  await page.check('input[name="bg"][value="transparent"]');
  await page.waitForSelector("#start:not([disabled])");
  await page.click("#start");

  // Live progress, then completion.
  await page.waitForSelector("#result-card:not([hidden])");
  const seen = new Set();
  const deadline = Date.now() + 180_000;
  for (;;) {
    const status = await page.$eval("#job-status", (s) => s.textContent);
    seen.add(status);
    if (status === "completed") break;
    if (status === "failed" || status === "cancelled") {
      throw new Error(`the job ${status}: ${await page.$eval("#job-error", (e) => e.textContent)}`);
    }
    if (Date.now() > deadline) throw new Error(`still ${status} after 180 s`);
    await page.waitForTimeout(200);
  }
  facts.statuses_seen = [...seen];
  facts.progress = await page.$eval("#job-progress", (p) => p.value);
  facts.speed = await page.$eval("#job-speed", (s) => s.textContent);

  // The preview plays: it has frames and its clock moves.
  await page.waitForFunction(() => document.querySelector("#after").readyState >= 2, null, { timeout: 30_000 });
  const t0 = await page.$eval("#after", (v) => v.currentTime);
  await page.waitForFunction((t) => {
    const v = document.querySelector("#after");
    return !v.paused && v.currentTime > t + 0.2;
  }, t0, { timeout: 15_000 });
  facts.plays = true;

  // Its pixels are transparent where the background was: draw a frame and read the alpha.
  facts.alpha = await page.evaluate(() => {
    const v = document.querySelector("#after");
    const c = document.createElement("canvas");
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0);
    const data = g.getImageData(0, 0, c.width, c.height).data;
    let clear = 0;
    let solid = 0;
    for (let i = 3; i < data.length; i += 4) {
      if (data[i] < 255) clear++;
      if (data[i] === 255) solid++;
    }
    const n = data.length / 4;
    return { width: c.width, height: c.height, transparent: clear / n, opaque: solid / n };
  });
  if (!(facts.alpha.transparent > 0.1 && facts.alpha.opaque > 0.05)) {
    throw new Error(`expected a person over a cleared background, got ${JSON.stringify(facts.alpha)}`);
  }

  // The comparison: the original is under the slider, and the download link is the output.
  facts.before_loaded = await page.$eval("#before", (v) => v.readyState >= 1 || v.error === null);
  await page.fill("#slider", "30");
  facts.slider = await page.$eval("#compare", (c) => c.style.getPropertyValue("--pos"));
  facts.download = await page.$eval("#download", (a) => ({ href: a.href, download: a.hasAttribute("download") }));
  if (!facts.download.href.includes("/files/outputs/")) throw new Error(`download link ${facts.download.href}`);

  // The recent jobs list shows this job, completed.
  await page.waitForFunction(() => [...document.querySelectorAll("#jobs tr")]
    .some((tr) => tr.querySelector(".badge.completed")), null, { timeout: 15_000 });
  facts.jobs_listed = await page.$$eval("#jobs tr", (rows) => rows.length);

  await page.waitForTimeout(300);
  await page.screenshot({ path: shot, fullPage: true });
  facts.screenshot = shot;

  // The API reference renders offline: Swagger UI from the binary, reading /openapi.json.
  await page.goto(base + "/docs", { waitUntil: "load" });
  await page.waitForFunction(() => document.querySelectorAll(".opblock").length >= 20, null, { timeout: 30_000 });
  facts.docs_operations = await page.$$eval(".opblock", (ops) => ops.length);
  facts.docs_title = await page.$eval(".info .title", (t) => t.textContent);
  const docsShot = shot.replace(/\.png$/, "") + "-docs.png";
  await page.screenshot({ path: docsShot });
  facts.docs_screenshot = docsShot;

  if (foreign.length) throw new Error(`the pages reached beyond the server: ${foreign.join(", ")}`);
  if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);
  console.log(JSON.stringify(facts));
} catch (err) {
  console.error(`webapp test failed: ${err.stack || err}`);
  console.error(`facts so far: ${JSON.stringify(facts)}`);
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: shot, fullPage: true });
  } catch { /* best effort */ }
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
