// lokey's status page: polls /api/v1/status and /api/v1/health and draws what they say.
// Every shown value also sits in the element's data-value attribute, exactly as the API gave
// it, so that tests (and scripts scraping the page) need not parse the formatted text.
"use strict";

const POLL_MS = Number(new URLSearchParams(location.search).get("interval_ms")) || 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const number = new Intl.NumberFormat("en");

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function ago(secs) {
  if (secs === null || secs === undefined) return "never";
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  return `${Math.floor(secs / 3600)} h ago`;
}

function duration(secs) {
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  return `${m} min ${secs % 60} s`;
}

const yesNo = (b) => (b ? "yes" : "no");

// Shows `text` in `el` and keeps the raw value beside it.
function show(el, value, text) {
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = text === undefined ? String(value) : text;
}

// Colours `el` by `word` (ok, degraded, healthy, quarantined, …), keeping its own classes.
function badge(el, word) {
  el.dataset.classes ??= el.className;
  el.className = `${el.dataset.classes} ${word}`;
  show(el, word, word.replace("_", " "));
}

function bars(svg, values, { width, height, x = (i) => i, barWidth = 1, cls = "", scale }) {
  const max = Math.max(1, ...values);
  const h = scale || ((v) => (v / max) * height);
  const out = [];
  values.forEach((v, i) => {
    if (v <= 0) return;
    const r = document.createElementNS(SVG, "rect");
    const bh = Math.max(0.5, h(v, max));
    r.setAttribute("x", String(x(i)));
    r.setAttribute("y", String(height - bh));
    r.setAttribute("width", String(barWidth));
    r.setAttribute("height", String(bh));
    if (cls) r.setAttribute("class", cls);
    out.push(r);
  });
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return out;
}

function drawSources(sources) {
  const list = $("source-list");
  const template = $("source-template");
  const seen = new Set();
  for (const s of sources) {
    seen.add(s.name);
    let card = list.querySelector(`[data-name="${CSS.escape(s.name)}"]`);
    if (!card) {
      card = template.content.firstElementChild.cloneNode(true);
      card.dataset.name = s.name;
      list.append(card);
    }
    const q = (c) => card.querySelector(`.${c}`);
    show(q("name"), s.name);
    show(q("kind"), s.kind);
    // A source can be in its healthy state while its last blocks were refused (a discard-tier
    // failure, a read error): show that as failing, not as healthy.
    badge(q("state"), s.healthy || s.state !== "healthy" ? s.state : "failing");
    q("emulated").hidden = s.kind !== "emulator";
    show(q("blocks-read"), s.blocks_read, number.format(s.blocks_read));
    show(q("blocks-tested"), s.health.blocks_tested, number.format(s.health.blocks_tested));
    show(q("blocks-passed"), s.health.blocks_passed, number.format(s.health.blocks_passed));
    show(q("blocks-discarded"), s.health.blocks_discarded, number.format(s.health.blocks_discarded));
    show(q("quarantines"), s.health.quarantines, number.format(s.health.quarantines));
    show(q("read-errors"), s.read_errors, number.format(s.read_errors));
    const err = q("last-error");
    err.hidden = !s.last_error;
    show(err, s.last_error || "", s.last_error ? `Last error: ${s.last_error}` : "");
    show(q("sample-bytes"), s.sample_bytes, number.format(s.sample_bytes));
    const svg = q("histogram");
    svg.replaceChildren(...bars(svg, s.sample_histogram, { width: 256, height: 60 }));
  }
  for (const card of [...list.children]) {
    if (!seen.has(card.dataset.name)) card.remove();
  }
}

function drawServed(served) {
  const trng = served.last_hour.trng || [];
  const fortuna = served.last_hour.fortuna || [];
  const all = trng.concat(fortuna);
  const max = Math.max(1, ...all);
  // A log scale: Fortuna serves gigabytes where the chip gives kilobytes.
  const scale = (v) => (Math.log10(1 + v) / Math.log10(1 + max)) * 80;
  const svg = $("served-chart");
  svg.replaceChildren(
    ...bars(svg, trng, { width: 240, height: 80, x: (i) => i * 4, barWidth: 2, cls: "trng", scale }),
    ...bars(svg, fortuna, { width: 240, height: 80, x: (i) => i * 4 + 2, barWidth: 2, cls: "fortuna", scale }),
  );
  const sum = (a) => a.reduce((x, y) => x + y, 0);
  show($("served-trng-hour"), sum(trng), bytes(sum(trng)));
  show($("served-fortuna-hour"), sum(fortuna), bytes(sum(fortuna)));
  show($("served-trng"), served.trng_bytes, bytes(served.trng_bytes));
  show($("served-fortuna"), served.fortuna_bytes, bytes(served.fortuna_bytes));
}

function draw(status, health) {
  const overall = health.status; // "ok" or "degraded"
  document.body.className = `state-${overall}`;
  badge($("overall"), overall);
  $("banner").hidden = true;

  const flags = $("health-details");
  flags.replaceChildren(...Object.entries(health.details).map(([name, ok]) => {
    const li = document.createElement("li");
    li.className = String(ok);
    li.dataset.name = name;
    show(li, ok, name);
    return li;
  }));

  drawSources(status.sources);

  const k = status.kernel;
  show($("kernel-enabled"), k.enabled, yesNo(k.enabled));
  show($("kernel-crng"), k.crng_initialized, yesNo(k.crng_initialized));
  show($("kernel-credited-bits"), k.credited_bits, number.format(k.credited_bits));
  show($("kernel-mixed-bytes"), k.mixed_bytes, bytes(k.mixed_bytes));
  show($("kernel-last-feed"), k.last_feed_secs_ago, ago(k.last_feed_secs_ago));
  show($("kernel-errors"), k.errors, number.format(k.errors));
  const kerr = $("kernel-last-error");
  kerr.hidden = !k.last_error;
  show(kerr, k.last_error || "", k.last_error || "");

  const f = status.fortuna_generator;
  show($("fortuna-seeded"), f.seeded, yesNo(f.seeded));
  show($("fortuna-reseeds"), f.reseed_count, number.format(f.reseed_count));
  show($("fortuna-last-reseed"), f.last_reseed_secs_ago, ago(f.last_reseed_secs_ago));
  show($("fortuna-pool0"), f.pool0_bytes, `${f.pool0_bytes} of 64 bytes`);

  drawBeacon(status.beacon);

  const q = status.trng;
  const pct = Math.min(100, Math.max(0, q.queue_percentage));
  $("queue-arc").setAttribute("stroke-dasharray", `${pct} 100`);
  show($("queue-percent"), q.queue_percentage, `${pct.toFixed(1)} %`);
  show($("queue-current"), q.queue_current, number.format(q.queue_current));
  show($("queue-capacity"), q.queue_capacity, number.format(q.queue_capacity));
  show($("queue-dropped"), q.queue_dropped, number.format(q.queue_dropped));
  show($("queue-consumed"), q.consumed_count, number.format(q.consumed_count));

  drawServed(status.served);

  const d = status.daemon;
  show($("version"), d.version);
  show($("pid"), d.pid);
  show($("uptime"), d.uptime_secs, duration(d.uptime_secs));
  show($("updated"), health.timestamp, new Date().toLocaleTimeString());
}

// The beacon card, shown only while the beacon is on (status.beacon is absent when off).
function drawBeacon(b) {
  $("beacon").hidden = !b;
  if (!b) return;
  const pulse = b.chain_index == null || b.pulse_index == null ? "none yet" : `${b.chain_index}/${b.pulse_index}`;
  show($("beacon-pulse"), pulse, b.emulated ? `${pulse} (emulated key)` : pulse);
  const secs = b.last_time_ms == null ? null : Math.max(0, Math.round((Date.now() - b.last_time_ms) / 1000));
  show($("beacon-last"), secs, secs == null ? "–" : ago(secs));
  show($("beacon-pulses"), b.pulses, `${number.format(b.pulses)} every ${b.period_ms / 1000} s`);
  show($("beacon-late"), b.late, number.format(b.late));
  const mean = b.signatures ? (1000 * b.sign_seconds) / b.signatures : null;
  show($("beacon-signing"), mean, mean == null ? "–" : `${mean.toFixed(0)} ms mean, ${(1000 * b.sign_seconds_max).toFixed(0)} ms max`);
  show($("beacon-key"), b.key_id, b.key_id ? `${b.key_id.slice(0, 16)}…` : "–");
  const problem = $("beacon-problem");
  problem.hidden = !b.problem;
  show(problem, b.problem || "", b.problem || "");
}

let lostSince = null;

function unreachable(why) {
  lostSince = lostSince || new Date();
  document.body.className = "state-unreachable";
  badge($("overall"), "unreachable");
  const banner = $("banner");
  banner.hidden = false;
  banner.textContent = `lokeyd does not answer since ${lostSince.toLocaleTimeString()} (${why}); the values below are the last ones seen.`;
}

async function poll() {
  let status;
  let health;
  try {
    [status, health] = await Promise.all([
      fetch("/api/v1/status", { cache: "no-store" }).then((r) => {
        if (!r.ok) throw new Error(`status: HTTP ${r.status}`);
        return r.json();
      }),
      // 503 with the same JSON shape means degraded, not unreachable.
      fetch("/api/v1/health", { cache: "no-store" }).then((r) => r.json()),
    ]);
    lostSince = null;
  } catch (e) {
    unreachable(e.message);
    return;
  } finally {
    setTimeout(poll, POLL_MS);
  }
  // A fault in this page is not the daemon's: report it as the page's own.
  try {
    draw(status, health);
  } catch (e) {
    console.error(`status page: ${e.stack || e}`);
    const banner = $("banner");
    banner.hidden = false;
    banner.textContent = `This page failed to show the status (${e.message}); /api/v1/status has it.`;
  }
}

poll();
