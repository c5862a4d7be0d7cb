// The state an entity is drawn in, from the few attributes that say it (the map reads only
// these: kizuna/console/map_points.py names them). Names are local names: the simulator writes
// Smart Data Models terms, the risk service core-context ones.
import { local, member, valueOf } from "./names.js";

export const CO2_LIMIT = 1000; // ppm: a classroom above it needs airing
export const STATES = [
  "on", "dimmed", "off", "faulty", "congested", "flowing", "co2high", "co2ok",
  "riskhigh", "riskmid", "risklow", "other",
];
export const COLOURS = {
  on: "#f2c200", dimmed: "#b08d2a", off: "#7d8790", faulty: "#d0312d", congested: "#d0312d",
  flowing: "#2e9d52", co2high: "#d0312d", co2ok: "#2e9d52", riskhigh: "#d0312d", riskmid: "#e07b00",
  risklow: "#2e9d52", other: "#3b7bd4",
};

export function lightState(entity) {
  const status = valueOf(member(entity, "status"));
  const voltage = valueOf(member(entity, "voltage"));
  if ((status !== undefined && status !== "ok") || voltage === 0) return "faulty";
  if (valueOf(member(entity, "powerState")) !== "on") return "off";
  const level = valueOf(member(entity, "illuminanceLevel"));
  return typeof level === "number" && level < 1 ? "dimmed" : "on";
}

export function stateOf(entity) {
  const type = local(Array.isArray(entity.type) ? entity.type[0] : entity.type);
  switch (type) {
    case "Streetlight":
      return lightState(entity);
    case "TrafficFlowObserved":
      return valueOf(member(entity, "congested")) === true ? "congested" : "flowing";
    case "IndoorEnvironmentObserved":
      return Number(valueOf(member(entity, "co2"))) > CO2_LIMIT ? "co2high" : "co2ok";
    case "RoadSegmentRisk": {
      const risk = Number(valueOf(member(entity, "riskLevel")));
      return risk > 0.7 ? "riskhigh" : risk > 0.4 ? "riskmid" : "risklow";
    }
    case "AccessPoint":
      return valueOf(member(entity, "apState")) === "down" ? "off" : "other";
    default:
      return "other";
  }
}
