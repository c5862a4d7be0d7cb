// Every read and write of the console goes through the node's public APIs, with the user's token
// (auth.js keeps it in memory) and the tenant chosen in the header.
import { token } from "./auth.js";

export const NGSI = "/ngsi-ld/v1";
export const MANAGEMENT = "/management/v1";
const settings = { tenant: "" };

export function tenant() { return settings.tenant; }
export function setTenant(name) { settings.tenant = name.trim(); }

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
  }
}

function headers(accept, context) {
  const out = { Accept: accept };
  if (context) out.Link = `<${context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"`;
  if (settings.tenant) out["NGSILD-Tenant"] = settings.tenant;
  const bearer = token();
  if (bearer) out.Authorization = `Bearer ${bearer}`;
  return out;
}

export function url(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

// One request; the answer's JSON (or null for 204) with its headers. `context` is the @context
// the request's names are in (a Link header); without one the core context's.
export async function call(method, path, { params, body, context, accept = "application/json" } = {}) {
  const init = { method, headers: headers(accept, context) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path, params), init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, headers: response.headers, status: response.status };
}

export async function get(path, params, context) { return (await call("GET", path, { params, context })).data; }

// The number of entities a query selects, without reading them.
export async function count(params, context) {
  const answer = await call("GET", `${NGSI}/entities`, { params: { ...params, limit: 0, count: "true" }, context });
  return Number(answer.headers.get("NGSILD-Results-Count") || 0);
}

// Every entity a query selects: the first page tells the total, the rest are read `parallel` at
// a time (a browser opens six connections to one origin).
export async function all(params, { pageSize = 1000, parallel = 6, context } = {}) {
  const first = await call("GET", `${NGSI}/entities`, { params: { ...params, limit: pageSize, count: "true" }, context });
  const total = Number(first.headers.get("NGSILD-Results-Count") || first.data.length);
  const offsets = [];
  for (let offset = pageSize; offset < total; offset += pageSize) offsets.push(offset);
  const pages = [first.data];
  let next = 0;
  async function worker() {
    while (next < offsets.length) {
      const index = next++;
      pages[index + 1] = await get(`${NGSI}/entities`, { ...params, limit: pageSize, offset: offsets[index] }, context);
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, offsets.length) }, worker));
  return pages.flat();
}

// The entity types of the tenant with their attributes (IRIs: the console reads with the core
// @context, so names stay unambiguous whatever context wrote them).
export async function types() {
  const answer = await get(`${NGSI}/types`, { details: "true" });
  return answer.map((t) => ({ id: t.typeName, attributes: t.attributeNames }));
}
