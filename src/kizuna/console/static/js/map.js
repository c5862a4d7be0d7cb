// The map: every entity with a location in the tenant, coloured by its state, filtered by type.
// Tens of thousands of points stay fluid because they are one canvas, not one DOM node (or
// Leaflet layer) each: a point is projected once, and each redraw only scales and shifts it.
import { get, tenant } from "./api.js";
import { t } from "./i18n.js";
import { onEvent } from "./live.js";
import { el, local, member, valueOf } from "./names.js";
import { COLOURS, STATES, stateOf } from "./state.js";

const tilesUrl = document.querySelector('meta[name="kizuna-tiles"]')?.content || "";
const RADIUS = 4;

// Web Mercator at zoom 0 (what Leaflet's map.project(latlng, 0) gives), written out: it runs
// for every point of every entity, and Leaflet's allocates a LatLng and a Point each time.
function project([lon, lat]) {
  const sin = Math.sin((Math.max(Math.min(lat, 85.0511287798), -85.0511287798) * Math.PI) / 180);
  return { x: ((lon + 180) / 360) * 256, y: (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * 256 };
}

// One drawn entity: its id, type, state and geometry projected at zoom 0.
function item(entity) {
  const geometry = valueOf(entity.location);
  if (!geometry || !geometry.type) return null;
  const type = Array.isArray(entity.type) ? entity.type[0] : entity.type;
  const base = { id: entity.id, type, state: stateOf(entity) };
  if (geometry.type === "Point") return { ...base, point: project(geometry.coordinates) };
  if (geometry.type === "LineString") return { ...base, line: geometry.coordinates.map(project) };
  if (geometry.type === "Polygon") return { ...base, line: geometry.coordinates[0].map(project) };
  return null;
}

const Points = L.Layer.extend({
  initialize(view) { this.view = view; },
  onAdd(map) {
    this.canvas = L.DomUtil.create("canvas", "leaflet-zoom-hide");
    map.getPanes().overlayPane.appendChild(this.canvas);
    map.on("moveend zoomend resize viewreset", this.redraw, this);
    this.redraw();
  },
  onRemove(map) {
    map.off("moveend zoomend resize viewreset", this.redraw, this);
    this.canvas.remove();
  },
  // Container pixels of a zoom-0 point at the current view.
  transform() {
    const map = this._map;
    const scale = 2 ** map.getZoom();
    const origin = map.getPixelOrigin();
    const shift = map.containerPointToLayerPoint([0, 0]);
    return (p) => [p.x * scale - origin.x - shift.x, p.y * scale - origin.y - shift.y];
  },
  redraw() {
    const map = this._map;
    if (!map) return;
    const size = map.getSize();
    const ratio = window.devicePixelRatio || 1;
    L.DomUtil.setPosition(this.canvas, map.containerPointToLayerPoint([0, 0]));
    this.canvas.width = size.x * ratio;
    this.canvas.height = size.y * ratio;
    this.canvas.style.width = `${size.x}px`;
    this.canvas.style.height = `${size.y}px`;
    const context = this.canvas.getContext("2d");
    context.scale(ratio, ratio);
    const at = this.transform();
    const byState = new Map();
    for (const entry of this.view.shown()) {
      if (!byState.has(entry.state)) byState.set(entry.state, []);
      byState.get(entry.state).push(entry);
    }
    context.lineWidth = 3;
    for (const [state, entries] of byState) {
      context.fillStyle = context.strokeStyle = COLOURS[state];
      const dots = new Path2D();
      const lines = new Path2D();
      for (const entry of entries) {
        if (entry.point) {
          const [x, y] = at(entry.point);
          if (x < -RADIUS || y < -RADIUS || x > size.x + RADIUS || y > size.y + RADIUS) continue;
          dots.moveTo(x + RADIUS, y);
          dots.arc(x, y, RADIUS, 0, 2 * Math.PI);
        } else {
          entry.line.forEach((p, i) => (i ? lines.lineTo(...at(p)) : lines.moveTo(...at(p))));
        }
      }
      context.stroke(lines);
      context.fill(dots);
    }
  },
  // The entity drawn nearest to a container point, within a few pixels.
  near(point) {
    const at = this.transform();
    let best = null;
    let bestDistance = (RADIUS + 4) ** 2;
    for (const entry of this.view.shown()) {
      for (const p of entry.point ? [entry.point] : entry.line) {
        const [x, y] = at(p);
        const distance = (x - point.x) ** 2 + (y - point.y) ** 2;
        if (distance < bestDistance) [best, bestDistance] = [entry, distance];
      }
    }
    return best;
  },
});

class MapView {
  constructor(only) {
    this.only = only; // a type's local name: show only it (#/map/RoadSegmentRisk)
    this.items = new Map();
    this.hidden = new Set();
    this.pending = false;
  }

  *shown() {
    for (const entry of this.items.values()) if (!this.hidden.has(entry.type)) yield entry;
  }

  async render(root) {
    const started = performance.now();
    root.classList.add("full");
    this.bar = el("div", { class: "mapbar" });
    this.legend = el("ul", { class: "legend", "aria-label": t("map.legend") });
    this.element = el("div", { id: "map", "data-markers": "0", "data-ready": "false", tabindex: "0",
      "aria-label": t("map.label") });
    root.append(this.bar, this.element, this.legend);
    // Changes that arrive while the entities are read are applied after them, in order.
    this.early = [];
    this.unsubscribe = onEvent((name, data) => {
      if (name === "reload") this.reload();
      else if (name === "change" && this.loaded) this.changed(data);
      else if (name === "change") this.early.push(data);
    });
    const rows = this.read();
    this.map = L.map(this.element, { preferCanvas: true, attributionControl: true, zoomSnap: 0.5 });
    this.map.attributionControl.setPrefix("Leaflet");
    this.map.setView([51.4344, 6.7623], 12);
    const background = tilesUrl
      ? Promise.resolve(L.tileLayer(tilesUrl, { maxZoom: 19 }).addTo(this.map))
      : fetch("/console/districts.json").then((r) => r.json()).then((districts) =>
          L.geoJSON(districts, { style: { color: "#6b7a88", weight: 1, fillColor: "#dfe6ec", fillOpacity: 0.6 },
            onEachFeature: (f, layer) => layer.bindTooltip(f.properties.name) }).addTo(this.map));
    const layer = await background;
    for (const entity of await rows) this.put(entity);
    // Bounds, filters and legend first, the layer last: it draws once, when it is added.
    this.map.fitBounds(this.bounds() || layer.getBounds(), { animate: false });
    this.filters(this.types);
    this.update();
    this.layer = new Points(this);
    this.layer.addTo(this.map);
    this.map.on("click", (event) => this.pick(event.containerPoint));
    this.element.dataset.ready = "true";
    // For bench/console_map.py: from this view's start, and from the navigation's.
    this.element.dataset.drawnMs = String(Math.round(performance.now() - started));
    this.element.dataset.sinceNavigationMs = String(Math.round(performance.now()));
    this.loaded = true;
    for (const change of this.early) this.changed(change);
  }

  // Only what the map needs, in one compact read (GET /console/map, the node's one answer made
  // for the console: reading 50,000 entities through NGSI-LD pages takes seconds): each
  // located entity's id, type, geometry and the attributes that say its state.
  async read() {
    const answer = await get("/console/map", { tenant: tenant() });
    this.types = answer.types;
    return answer.rows.map(([id, type, location, ...values]) => {
      const entity = { id, type: answer.types[type], location };
      answer.attributes.forEach((name, i) => { if (values[i] !== null) entity[name] = values[i]; });
      return entity;
    });
  }

  // Changes were lost to a long disconnection: read the map's entities again.
  async reload() {
    const entities = await this.read();
    this.items.clear();
    for (const entity of entities) this.put(entity);
    this.update();
  }

  put(entity) {
    const entry = item(entity);
    if (entry) this.items.set(entry.id, entry);
  }

  // The drawn entities' bounds, in zoom-0 pixels turned back into degrees once.
  bounds() {
    if (!this.items.size) return null;
    let [left, top, right, bottom] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const entry of this.items.values()) {
      for (const p of entry.point ? [entry.point] : entry.line) {
        left = Math.min(left, p.x); right = Math.max(right, p.x);
        top = Math.min(top, p.y); bottom = Math.max(bottom, p.y);
      }
    }
    return L.latLngBounds(this.map.unproject([left, bottom], 0), this.map.unproject([right, top], 0));
  }

  filters(typeIds) {
    if (this.only) for (const id of typeIds) if (local(id) !== this.only) this.hidden.add(id);
    this.bar.replaceChildren(el("span", { text: t("map.types") }));
    for (const id of typeIds) {
      const box = el("input", { type: "checkbox", checked: !this.hidden.has(id), onchange: (event) => {
        if (event.target.checked) this.hidden.delete(id); else this.hidden.add(id);
        this.update();
      } });
      this.bar.append(el("label", { title: id }, box, ` ${local(id)}`));
    }
  }

  // The live stream: a write moves or recolours its entity, a deletion removes it.
  changed(change) {
    if (change.op === "delete") this.items.delete(change.id);
    else if (change.entity) {
      const old = this.items.get(change.id);
      const merged = { ...change.entity, id: change.id, type: change.entity.type || change.type };
      if (!member(merged, "location") && old) {
        this.items.set(change.id, { ...old, state: stateOf(merged) });
      } else this.put(merged);
    }
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.update(); });
    }
  }

  update() {
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    let shown = 0;
    for (const entry of this.shown()) {
      counts[entry.state] += 1;
      shown += 1;
    }
    this.element.dataset.markers = String(shown);
    this.legend.replaceChildren(...STATES.filter((s) => counts[s]).map((s) =>
      el("li", { class: `s-${s}`, "data-state": s, "data-count": counts[s] }, `${t(`state.${s}`)} ${counts[s]}`)));
    this.layer?.redraw();
  }

  pick(point) {
    const entry = this.layer.near(point);
    if (!entry) return;
    const at = entry.point ? this.map.unproject(entry.point, 0) : this.map.unproject(entry.line[0], 0);
    const body = el("dl", { class: "popup" },
      el("dt", { text: t("entity.type") }), el("dd", { text: local(entry.type) }),
      el("dt", { text: t("entity.state") }), el("dd", { text: t(`state.${entry.state}`) }),
      el("dd", {}, el("a", { href: `#/entity/${encodeURIComponent(entry.id)}`, text: entry.id })));
    L.popup().setLatLng(at).setContent(body).openOn(this.map);
  }

  close() {
    this.unsubscribe?.();
    this.map?.remove();
  }
}

export function render(root, only) {
  const view = new MapView(only);
  view.render(root).catch((error) => root.dispatchEvent(new CustomEvent("failed", { detail: error })));
  return () => view.close();
}
