// Opens Accord's SLA dashboard in headless Chromium (Debian's, driven by playwright-core),
// waits for it to render, compares the numbers it shows with GET /sla, and saves a screenshot.
//
// Usage: node dashboard.mjs <admin base URL> <screenshot path> [<first budget drop, ms>]
// With the third argument, the first route's "Error budget left" line must leave 100% exactly
// at that minute's x position (not before the traffic that spent the budget).
// Exits non-zero, with the reason, when a check fails.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [admin, screenshot, firstDropMs] = process.argv.slice(2);
const fail = message => { console.error(`dashboard check failed: ${message}`); process.exit(1); };

const profile = mkdtempSync(join(tmpdir(), "accord-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1500 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  page.on("console", m => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(`${admin}/dashboard`);
  await page.waitForSelector("body[data-loaded]", { timeout: 15000 });
  const shown = await page.$$eval("[data-field]", nodes => nodes.map(n => ({
    route: n.getAttribute("data-route"), field: n.getAttribute("data-field"),
    value: n.getAttribute("data-value"), text: n.textContent.trim(),
  })));
  const sla = await (await fetch(`${admin}/sla`)).json();
  const find = (route, field) => shown.find(s => s.route === route && s.field === field);
  const close = (a, b) => Math.abs(Number(a) - Number(b)) <= 1e-9 * Math.max(1, Math.abs(Number(b)));
  let checked = 0;
  for (const r of sla.routes) {
    const status = find(r.route, "status");
    if (!status || status.text.replace(" ", "_") !== r.status) fail(`${r.route}: status ${status?.text} vs ${r.status}`);
    for (const ind of r.indicators) {
      const budget = find(r.route, `budget-${ind.indicator}`);
      if (!budget || !close(budget.value, ind.budget.remaining_ratio)) fail(`${r.route}: ${ind.indicator} budget ${budget?.value} vs ${ind.budget.remaining_ratio}`);
      const attainment = find(r.route, `attainment-${ind.indicator}`);
      if (!attainment || !close(attainment.value, ind.attainment)) fail(`${r.route}: ${ind.indicator} attainment ${attainment?.value} vs ${ind.attainment}`);
      checked += 2;
    }
    const requests = find(r.route, "requests-1h");
    const total = r.windows.find(w => w.window === "1h").requests.total;
    if (!requests || !close(requests.value, total)) fail(`${r.route}: requests ${requests?.value} vs ${total}`);
    for (const b of r.backends) {
      const state = find(r.route, `backend-${b.backend}`);
      if (!state || state.text !== b.state) fail(`${r.route}: backend ${b.backend} ${state?.text} vs ${b.state}`);
    }
    if (r.canary) {
      const phase = find(r.route, "canary-phase");
      if (!phase || phase.text.replace(" ", "_") !== r.canary.phase) fail(`${r.route}: canary ${phase?.text} vs ${r.canary.phase}`);
      const share = find(r.route, "canary-share");
      if (!share || share.text !== `${Math.round(r.canary.share * 100)}% of the traffic`) fail(`${r.route}: canary share ${share?.text} vs ${r.canary.share}`);
      const entries = shown.filter(s => s.route === r.route && s.field === "canary-entry").length;
      if (entries !== r.canary.timeline.length) fail(`${r.route}: ${entries} canary entries vs ${r.canary.timeline.length}`);
      checked += 3;
    }
    const events = shown.filter(s => s.route === r.route && s.field === "event").length;
    if (events !== r.events.length) fail(`${r.route}: ${events} events shown vs ${r.events.length}`);
    checked += 2 + r.backends.length;
  }
  const charts = await page.$$eval(".chart svg", svgs => svgs.map(s => s.querySelectorAll("polyline, rect").length));
  if (charts.length !== 4 * sla.routes.length) fail(`${charts.length} charts for ${sla.routes.length} routes`);
  if (charts.some(n => n === 0)) fail(`a chart is empty: ${JSON.stringify(charts)}`);
  if (firstDropMs) {
    const drop = await page.$eval(".chart svg[aria-label='Error budget left']", svg => {
      const [x0, x1, left, right] = ["data-x0", "data-x1", "data-left", "data-right"].map(a => Number(svg.getAttribute(a)));
      const points = svg.querySelector("polyline").getAttribute("points").trim().split(" ").map(p => p.split(",").map(Number));
      const first = points.find(([, y]) => y > points[0][1] + 0.05);
      return { x0, x1, left, right, x: first?.[0] ?? null, full: points[0][1] };
    });
    const expected = drop.left + (drop.right - drop.left) * (Number(firstDropMs) - drop.x0) / (drop.x1 - drop.x0);
    if (drop.x == null || Math.abs(drop.x - expected) > 0.15) {
      fail(`the budget drops at x=${drop.x}, expected x=${expected.toFixed(1)} (minute ${new Date(Number(firstDropMs)).toISOString()})`);
    }
    checked += 1;
  }
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ routes: sla.routes.length, checked, charts: charts.length, screenshot }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
