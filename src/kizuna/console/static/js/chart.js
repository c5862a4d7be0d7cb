// An attribute's history as a chart: the latest instances as they were recorded, or averages
// by hour or by day for long ranges (the temporal API aggregates, so a year is 365 points).
// Answers cut by the node's instance limit (206, Content-Range) are followed to the next range.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { call, NGSI } from "./api.js";

export const RANGES = { recent: null, hour: "PT1H", day: "P1D" };
const MOST = 5000; // points in one chart

function instancesOf(answer, attribute) {
  let member = answer[attribute];
  if (Array.isArray(member)) member = member[0];
  if (!member) return [];
  if (member.values) return member.values.map(([value, at]) => [Date.parse(at) / 1000, value]);
  if (member.avg) return member.avg.map(([value, from]) => [Date.parse(from) / 1000, value]);
  return [];
}

// The bounds of a partial answer: "date-time <start>-<end>/<size>".
function cut(headers) {
  const match = /^date-time (\S+?Z)-(\S+?Z)\//.exec(headers.get("Content-Range") || "");
  return match ? { start: match[1], end: match[2] } : null;
}

export async function history(id, attribute, range) {
  const period = RANGES[range];
  const base = period
    ? { attrs: attribute, options: "aggregatedValues", aggrMethods: "avg", aggrPeriodDuration: period }
    : { attrs: attribute, options: "temporalValues", lastN: MOST };
  const points = new Map();
  let bound = {};
  while (points.size < MOST) {
    const answer = await call("GET", `${NGSI}/temporal/entities/${encodeURIComponent(id)}`, { params: { ...base, ...bound } });
    const before = points.size;
    for (const [at, value] of instancesOf(answer.data, attribute)) {
      if (typeof value === "number" || typeof value === "boolean") points.set(at, Number(value));
    }
    const partial = answer.status === 206 ? cut(answer.headers) : null;
    if (!partial || points.size === before) break;
    // lastN reads newest first, so the rest is before the range; otherwise after it.
    bound = period ? { timerel: "after", timeAt: partial.end } : { timerel: "before", timeAt: partial.start };
  }
  const sorted = [...points.entries()].sort((a, b) => a[0] - b[0]);
  return [sorted.map((p) => p[0]), sorted.map((p) => p[1])];
}

export function draw(container, name, data) {
  const width = Math.max(280, container.clientWidth || 600);
  container.replaceChildren();
  container.dataset.points = String(data[0].length);
  return new uPlot({
    width, height: 280,
    series: [{}, { label: name, stroke: "#0b63b6", width: 1.5, points: { show: data[0].length < 60 } }],
    axes: [{}, {}],
  }, data, container);
}
