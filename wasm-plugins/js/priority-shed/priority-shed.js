// priority-shed: an Accord SLA policy plugin in JavaScript, the same policy as the Python
// build in wasm-plugins/python/priority-shed (and the same cases.yaml holds both).
//
// While the route burns its error budget fast over both a long and a short window (the
// multi-window rule, so the plugin never locks itself out: its refusals are not valid events,
// and the short window empties once traffic stops failing), requests whose priority header is
// not critical are refused with 503 and Retry-After. One refusal in every `probe_every` is let
// through so the windows keep seeing fresh traffic. The priority is passed on to the backend
// as `x-accord-priority`, and refusals are counted per priority in the plugin's state.
//
// Built with componentize-js through jco from the WIT alone (see wasm-plugins/README.md):
//
//   npx jco componentize priority-shed/priority-shed.js --wit ../wit --world-name policy \
//     --out priority_shed.wasm
//
// In JavaScript, WIT names are camelCase, variants are {tag, val}, an `option` is a value or
// undefined, `result` errors are thrown, and 64-bit integers (s64, u64) are BigInts.

import { header, setHeader } from "accord:policy/request@0.2.1";
import { header as responseHeader, setHeader as setResponseHeader } from "accord:policy/response@0.2.1";
import { route as slaRoute } from "accord:policy/sla@0.2.1";
import { incr } from "accord:policy/state@0.2.1";
import { annotate, counter } from "accord:policy/telemetry@0.2.1";

const DEFAULTS = {
  header: "x-priority",
  critical: ["critical"],
  factor: 14.4,
  long: "1h",
  short: "5m",
  min_valid: 10,
  probe_every: 20,
  retry_after_seconds: 30,
};
const WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

let config = { ...DEFAULTS };
let refused = 0;

// The worst indicator's burn rate over `window`.
function burnRate(route, window) {
  let worst = 0;
  for (const indicator of route.indicators) {
    for (const [name, rate] of indicator.burnRates) {
      if (name === window && rate > worst) worst = rate;
    }
  }
  return worst;
}

function validEvents(route, window) {
  const stats = route.windows.find((w) => w.window === window);
  return stats ? stats.valid : 0;
}

// Both windows at or above the factor, with enough valid events in the short one.
function burning(route) {
  if (validEvents(route, config.short) < config.min_valid) return false;
  return burnRate(route, config.long) >= config.factor && burnRate(route, config.short) >= config.factor;
}

export function configure(text) {
  const given = text.trim() === "" ? {} : JSON.parse(text);
  if (typeof given !== "object" || given === null || Array.isArray(given)) {
    throw "the configuration must be a JSON object";
  }
  for (const key of Object.keys(given)) {
    if (!(key in DEFAULTS)) {
      throw `unknown field '${key}', expected one of ${Object.keys(DEFAULTS).join(", ")}`;
    }
  }
  const next = { ...DEFAULTS, ...given };
  for (const key of ["long", "short"]) {
    if (!WINDOWS.includes(next[key])) {
      throw `${key}: '${next[key]}' is not a window (${WINDOWS.join(", ")})`;
    }
  }
  if (typeof next.factor !== "number" || next.factor <= 0) {
    throw "factor: must be a number above 0";
  }
  config = next;
  refused = 0;
}

export function onRequest(head) {
  const priority = (header(config.header) ?? "standard").toLowerCase();
  setHeader("x-accord-priority", priority);
  if (config.critical.includes(priority)) return { tag: "allow" };
  const route = slaRoute();
  if (route === undefined || !burning(route)) return { tag: "allow" };
  refused += 1;
  if (refused % Math.max(1, config.probe_every) === 0) {
    annotate("priority_shed", "probe");
    return { tag: "allow" };
  }
  const shed = incr(`shed:${priority}`, 1n, 3_600_000n);
  counter(`shed_${priority}`, 1n);
  return {
    tag: "reject",
    val: {
      status: 503,
      reason: `the route is burning its error budget: ${priority} traffic is shed (${shed} refused in the last hour)`,
      headers: [],
      retryAfterSeconds: config.retry_after_seconds,
    },
  };
}

export function onResponse(head) {
  if (head.status === 503 && responseHeader("retry-after") === undefined) {
    setResponseHeader("retry-after", String(config.retry_after_seconds));
  }
  return { tag: "keep" };
}
