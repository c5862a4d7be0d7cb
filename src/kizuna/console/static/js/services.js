// The city's services at a glance, each a few questions to the NGSI-LD API: street lighting,
// traffic, Wi-Fi, classrooms and road risk. The simulator's entities use the Smart Data Models
// terms, so each question carries its domain's @context; RoadSegmentRisk uses the core one.
import { all, call, count, NGSI } from "./api.js";
import { t } from "./i18n.js";
import { el, formatValue, member, valueOf } from "./names.js";
import { CO2_LIMIT, lightState } from "./state.js";

const sdm = (domain) => `https://raw.githubusercontent.com/smart-data-models/dataModel.${domain}/master/context.jsonld`;
const LIGHTING = sdm("Streetlighting");
const TRAFFIC = sdm("Transportation");
const WIFI = sdm("WifiNetwork");
const ENVIRONMENT = sdm("Environment");
const TOP = 10;

function card(key, ...content) {
  return el("section", { class: "card", "data-service": key }, el("h3", { text: t(`service.${key}`) }), ...content);
}

function figure(label, value, key) {
  return el("div", { "data-figure": key }, el("div", { class: "big", text: Number(value).toLocaleString() }),
    el("div", { class: "muted", text: label }));
}

function table(headings, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) =>
      el("td", { class: i ? "num" : "" }, c)))))));
}

// A link to an entity, named by the last part of its id (its title is the whole id).
const link = (id, text) => el("a", { href: `#/entity/${encodeURIComponent(id)}`, title: id, text: text || id.split(":").pop() });

async function lighting() {
  const lights = await all({ type: "Streetlight", attrs: "status,powerState,illuminanceLevel,voltage", format: "keyValues" },
    { context: LIGHTING });
  const counts = { on: 0, dimmed: 0, off: 0, faulty: 0 };
  for (const light of lights) counts[lightState(light)] += 1;
  const faults = lights.filter((l) => lightState(l) === "faulty").slice(0, TOP);
  const cabinets = await energyToday();
  return card("lighting",
    el("div", { class: "row" }, Object.entries(counts).map(([state, n]) => figure(t(`state.${state}`), n, state))),
    el("h4", { text: t("lighting.faults") }),
    faults.length ? table(["id", t("lighting.status")], faults.map((l) => [link(l.id), l.voltage === 0 ? "0 V" : l.status]))
      : el("p", { class: "muted", text: t("none") }),
    el("h4", { text: t("lighting.energy") }),
    table([t("lighting.cabinet"), "kWh"], cabinets.slice(0, TOP).map(([id, kwh]) => [link(id), kwh.toFixed(1)])));
}

// Energy since the start of the day of the latest reading: each cabinet's meter counts up, so
// the day's use is the day's highest reading less its lowest.
async function energyToday() {
  const latest = await call("GET", `${NGSI}/entities`, {
    params: { type: "StreetlightControlCabinet", attrs: "energyConsumed", limit: 1 }, context: LIGHTING });
  const at = latest.data[0]?.energyConsumed?.observedAt;
  if (!at) return [];
  const day = new Date(at);
  day.setHours(0, 0, 0, 0);
  const answer = await call("GET", `${NGSI}/temporal/entities`, { context: LIGHTING, params: {
    type: "StreetlightControlCabinet", attrs: "energyConsumed", options: "aggregatedValues", aggrMethods: "min,max",
    aggrPeriodDuration: "P1D", timerel: "after", timeAt: day.toISOString(), limit: 1000 } });
  const used = answer.data.map((cabinet) => {
    const meter = cabinet.energyConsumed || {};
    const high = Math.max(...(meter.max || []).map((m) => m[0]));
    const low = Math.min(...(meter.min || []).map((m) => m[0]));
    return [cabinet.id, Number.isFinite(high - low) ? high - low : 0];
  });
  return used.sort((a, b) => b[1] - a[1]);
}

async function traffic() {
  const [flows, segments] = await Promise.all([
    all({ type: "TrafficFlowObserved", attrs: "intensity,averageVehicleSpeed,congested,refRoadSegment", format: "keyValues" },
      { context: TRAFFIC }),
    all({ type: "RoadSegment", attrs: "name,maximumAllowedSpeed", format: "keyValues" }, { context: TRAFFIC }),
  ]);
  const names = new Map(segments.map((s) => [s.id, s]));
  const slowest = flows.map((f) => ({ ...f, segment: names.get(f.refRoadSegment) }))
    .sort((a, b) => a.averageVehicleSpeed / (a.segment?.maximumAllowedSpeed || 50)
      - b.averageVehicleSpeed / (b.segment?.maximumAllowedSpeed || 50)).slice(0, TOP);
  return card("traffic",
    el("div", { class: "row" }, figure(t("traffic.segments"), flows.length, "segments"),
      figure(t("state.congested"), flows.filter((f) => f.congested === true).length, "congested")),
    table([t("traffic.segment"), t("traffic.flow"), "km/h"], slowest.map((f) =>
      [link(f.refRoadSegment || f.id, f.segment?.name), formatValue(f.intensity), formatValue(f.averageVehicleSpeed)])));
}

async function wifi() {
  const [places, points] = await Promise.all([
    all({ type: "WifiPointOfInterest", attrs: "name,clientsConnected", format: "keyValues" }, { context: WIFI }),
    all({ type: "AccessPoint", attrs: "name,clientsConnected,apState,refPointOfInterest", format: "keyValues" }, { context: WIFI }),
  ]);
  const trams = points.filter((p) => String(p.refPointOfInterest || "").includes("tram"));
  return card("wifi",
    table([t("wifi.place"), t("wifi.clients")], places.map((p) => [link(p.id, p.name), formatValue(p.clientsConnected)])),
    el("h4", { text: t("wifi.trams") }),
    table([t("wifi.tram"), t("wifi.clients")], trams.map((p) => [link(p.id, p.name),
      p.apState === "down" ? t("state.off") : formatValue(p.clientsConnected)])));
}

async function classrooms() {
  const rooms = await all({ type: "IndoorEnvironmentObserved", attrs: "name,co2", format: "keyValues" }, { context: ENVIRONMENT });
  const over = rooms.filter((r) => Number(r.co2) > CO2_LIMIT).sort((a, b) => b.co2 - a.co2);
  const mean = rooms.length ? rooms.reduce((s, r) => s + Number(r.co2 || 0), 0) / rooms.length : 0;
  return card("classrooms",
    el("div", { class: "row" }, figure(t("classrooms.rooms"), rooms.length, "rooms"),
      figure(t("classrooms.over", { limit: CO2_LIMIT }), over.length, "over"), figure(t("classrooms.mean"), Math.round(mean), "mean")),
    over.length ? table([t("classrooms.room"), "ppm"], over.slice(0, TOP).map((r) => [link(r.id, r.name), formatValue(r.co2)]))
      : el("p", { class: "muted", text: t("none") }));
}

async function risk() {
  const total = await count({ type: "RoadSegmentRisk" });
  const high = await count({ type: "RoadSegmentRisk", q: "riskLevel>0.7" });
  const top = total ? (await call("GET", `${NGSI}/entities`, { params: { type: "RoadSegmentRisk", q: "riskLevel>0.4",
    limit: 1000, format: "keyValues" } })).data : [];
  top.sort((a, b) => valueOf(member(b, "riskLevel")) - valueOf(member(a, "riskLevel")));
  return card("risk",
    el("div", { class: "row" }, figure(t("risk.rated"), total, "rated"), figure(t("state.riskhigh"), high, "high")),
    top.length ? table([t("traffic.segment"), t("risk.level")], top.slice(0, TOP).map((r) =>
      [link(r.id), Number(valueOf(member(r, "riskLevel"))).toFixed(2)])) : el("p", { class: "muted", text: t("none") }),
    el("p", {}, el("a", { href: "#/map/RoadSegmentRisk", text: t("risk.map") })));
}

export function render(root) {
  const grid = el("div", { class: "cards" });
  root.append(el("h2", { text: t("nav.services") }), grid);
  const fail = (error) => root.dispatchEvent(new CustomEvent("failed", { detail: error }));
  for (const build of [lighting, traffic, wifi, classrooms, risk]) {
    const slot = el("div", { class: "card muted", text: "…" });
    grid.append(slot);
    build().then((made) => slot.replaceWith(made)).catch((error) => { slot.remove(); fail(error); });
  }
}
