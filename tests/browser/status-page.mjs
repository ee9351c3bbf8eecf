// The status page, end to end in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core): run by daemon/tests/page.rs against a real lokeyd with the emulator.
//
//   LOKEY_URL=http://127.0.0.1:PORT node status-page.mjs
//
// Optional: CHROMIUM (browser path), SCREENSHOT (PNG path for the README's picture).
// Talks to the harness on stdout/stdin: prints "STOP-DAEMON" once it wants the daemon gone and
// waits for a line "STOPPED". Exits 0 when every check passed; otherwise prints why and exits 1.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const base = process.env.LOKEY_URL;
if (!base) {
  console.error("LOKEY_URL is not set");
  process.exit(2);
}

const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

// Polls `probe` until it returns a truthy value (or throws after `secs`).
async function until(what, secs, probe) {
  const deadline = Date.now() + secs * 1000;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${secs} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // The machine has no network and runs as root: no sandbox, nothing in the background.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  // The daemon is healthy before the page is judged: the emulator passes its start-up test
  // and Fortuna reseeds within seconds.
  await until("health ok", 30, async () => (await api("GET", "/api/v1/health")).body.status === "ok");
  // Something served, so that the chart has bars.
  check((await fetch(`${base}/api/v1/random/bytes?n=4096`)).ok, "4096 Fortuna bytes served");

  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    // Chromium logs every non-2xx answer; a 503 from /api/v1/health is how degraded reads.
    const degraded = /status of 503/.test(m.text()) && m.location().url.endsWith("/api/v1/health");
    if (m.type() === "error" && !degraded) problems.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  await page.goto(`${base}/?interval_ms=300`);

  const value = (sel) => page.$eval(sel, (el) => el.dataset.value);
  await until("the page's first update", 10, async () => (await value("#overall")) === "ok");

  // Values shown against the status document read just before and just after: fixed values
  // are equal, counters lie between the two readings.
  const before = (await api("GET", "/api/v1/status")).body;
  const updated = await value("#updated");
  await until("another page update", 5, async () => (await value("#updated")) !== updated);
  // Read in one go: the page cannot redraw in the middle of a synchronous evaluation.
  const shown = await page.evaluate(() => {
    const v = (sel) => document.querySelector(sel).dataset.value;
    const n = (sel) => Number(v(sel));
    return {
      version: v("#version"),
      pid: n("#pid"),
      capacity: n("#queue-capacity"),
      current: n("#queue-current"),
      percent: n("#queue-percent"),
      dash: document.querySelector("#queue-arc").getAttribute("stroke-dasharray"),
      kernelEnabled: v("#kernel-enabled"),
      seeded: v("#fortuna-seeded"),
      reseeds: n("#fortuna-reseeds"),
      fortunaHour: n("#served-fortuna-hour"),
      fortunaTotal: n("#served-fortuna"),
      fortunaBars: document.querySelectorAll("#served-chart rect.fortuna").length,
      sources: [...document.querySelectorAll(".source")].map((c) => ({
        name: c.dataset.name,
        kind: c.querySelector(".kind").dataset.value,
        state: c.querySelector(".state").dataset.value,
        emulatedNote: !c.querySelector(".emulated").hidden,
        read: Number(c.querySelector(".blocks-read").dataset.value),
        passed: Number(c.querySelector(".blocks-passed").dataset.value),
        sampleBytes: Number(c.querySelector(".sample-bytes").dataset.value),
        bars: c.querySelectorAll(".histogram rect").length,
      })),
      flags: Object.fromEntries([...document.querySelectorAll("#health-details li")]
        .map((li) => [li.dataset.name, li.dataset.value === "true"])),
    };
  });
  const after = (await api("GET", "/api/v1/status")).body;
  const between = (v, a, b, what) => check(a <= v && v <= b, `${what}: ${a} <= ${v} <= ${b}`);

  check(shown.version === after.daemon.version, `version ${shown.version}`);
  check(shown.pid === after.daemon.pid, "pid");
  check(shown.capacity === after.trng.queue_capacity, "queue capacity");
  check(shown.current >= 0 && shown.current <= shown.capacity, "queue fill within capacity");
  check(shown.dash === `${Math.min(100, Math.max(0, shown.percent))} 100`,
    `gauge arc ${shown.dash} for ${shown.percent} %`);
  check(shown.kernelEnabled === String(after.kernel.enabled), "kernel feeding flag");
  check(shown.seeded === "true" && after.fortuna_generator.seeded, "Fortuna seeded");
  between(shown.reseeds, before.fortuna_generator.reseed_count, after.fortuna_generator.reseed_count, "reseeds");
  between(shown.fortunaTotal, before.served.fortuna_bytes, after.served.fortuna_bytes, "Fortuna bytes served");
  check(shown.fortunaHour >= 4096, `last hour shows the 4096 bytes served (${shown.fortunaHour})`);
  check(shown.fortunaBars >= 1, "the chart has a Fortuna bar");
  check(shown.sources.length === after.sources.length, "one card per source");
  for (const s of after.sources) {
    const card = shown.sources.find((c) => c.name === s.name);
    check(card, `a card for source ${s.name}`);
    const was = before.sources.find((b) => b.name === s.name);
    check(card.kind === s.kind, `${s.name} kind`);
    check(card.state === "healthy", `${s.name} shown healthy`);
    check(card.emulatedNote === (s.kind === "emulator"), `${s.name} labelled emulated or not`);
    between(card.read, was.blocks_read, s.blocks_read, `${s.name} blocks read`);
    between(card.passed, was.health.blocks_passed, s.health.blocks_passed, `${s.name} blocks passed`);
    check(card.sampleBytes === 0 || card.bars > 0, `${s.name} histogram drawn`);
  }
  const health = (await api("GET", "/api/v1/health")).body;
  for (const [name, ok] of Object.entries(health.details)) {
    check(shown.flags[name] === ok, `health flag ${name}`);
  }

  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }

  // On a phone: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 390, `the page fits a 390 px screen (${wide} px wide)`);
  await page.setViewportSize({ width: 1200, height: 900 });

  // A fault in the emulator: the page turns degraded by itself, without a reload.
  const fault = await api("PUT", "/api/v1/admin/faults", { name: "stuck-output", active: true });
  check(fault.status === 200, `fault switched on (${fault.status})`);
  await until("the page to show degraded", 20, async () => (await value("#overall")) === "degraded");
  check(await page.$eval("body", (b) => b.className) === "state-degraded", "body marked degraded");
  const controller = await page.$eval('#health-details li[data-name="controller"]', (li) => li.dataset.value);
  check(controller === "false", "the controller flag shown failing");
  const chipState = await page.$$eval(".source", (cards) => cards
    .find((c) => c.querySelector(".kind").dataset.value === "emulator")
    .querySelector(".state").dataset.value);
  check(chipState !== "healthy", `the chip's card no longer healthy (${chipState})`);

  // And back: the source recovers by itself once the fault is gone.
  check((await api("PUT", "/api/v1/admin/faults", { name: "stuck-output", active: false })).status === 200,
    "fault switched off");
  await until("the page to show ok again", 90, async () => (await value("#overall")) === "ok");

  // The daemon gone: the page says so and keeps the last values.
  const beforeStop = problems.length;
  console.log("STOP-DAEMON");
  const reply = await lines.next();
  check(reply.value === "STOPPED", `the harness stopped the daemon (${reply.value})`);
  await until("the page to show unreachable", 10, async () => (await value("#overall")) === "unreachable");
  check(!(await page.$eval("#banner", (b) => b.hidden)), "the banner is shown");
  check((await value("#version")) === shown.version, "the last values stay");

  // Expected while the daemon is gone; anything before is a defect.
  const real = problems.filter((p, i) =>
    i < beforeStop || !/ERR_CONNECTION_REFUSED|Failed to load resource|request failed/.test(p));
  check(real.length === 0, `no errors in the page: ${real.join("; ")}`);
  console.log("status page: all checks passed");
} catch (e) {
  console.error(e.message);
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
  stdin.close();
}
