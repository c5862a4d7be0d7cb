// One entity: its attributes (relationships as links to their targets), its raw JSON in each
// representation, and the history of a numeric attribute as a chart.
import { call, NGSI } from "./api.js";
import { draw, history, RANGES } from "./chart.js";
import { t } from "./i18n.js";
import { el, formatValue, local } from "./names.js";

const FORMATS = ["normalized", "keyValues", "concise"];

function link(id) {
  return el("a", { href: `#/entity/${encodeURIComponent(id)}`, text: id });
}

function cells(name, instance) {
  const value = instance.type === "Relationship"
    ? [instance.object].flat().flatMap((id, i) => (i ? [", ", link(id)] : [link(id)]))
    : formatValue(instance.value ?? instance.languageMap ?? instance.json ?? instance.vocab);
  return el("tr", { "data-attribute": name },
    el("th", { scope: "row", title: name, text: local(name) }), el("td", { text: instance.type }),
    el("td", {}, value, instance.unitCode ? ` ${instance.unitCode}` : ""),
    el("td", { class: "muted", text: instance.observedAt || instance.modifiedAt || "" }));
}

export function render(root, id) {
  const path = `${NGSI}/entities/${encodeURIComponent(id)}`;
  const fail = (error) => root.dispatchEvent(new CustomEvent("failed", { detail: error }));
  const attributes = el("table", { class: "attributes" });
  const raw = el("pre", { id: "raw", tabindex: "0" });
  const format = el("select", { id: "format", "aria-label": t("entity.format") },
    FORMATS.map((f) => el("option", { value: f, text: f })));
  const attributeBox = el("select", { id: "chart-attribute", "aria-label": t("entity.attribute") });
  const rangeBox = el("select", { id: "chart-range", "aria-label": t("chart.range") },
    Object.keys(RANGES).map((r) => el("option", { value: r, text: t(`chart.${r}`) })));
  const chart = el("div", { id: "chart", class: "chart", "data-points": "" });
  root.append(el("h2", { text: id }),
    el("section", { class: "card" }, el("h3", { text: t("entity.attributes") }), el("div", { class: "scroll" }, attributes)),
    el("section", { class: "card" }, el("h3", { text: t("entity.history") }),
      el("div", { class: "row" }, attributeBox, rangeBox), chart),
    el("section", { class: "card" }, el("h3", { class: "row" }, t("entity.raw"), format), raw));

  async function showRaw() {
    const params = format.value === "normalized" ? {} : { format: format.value };
    raw.textContent = JSON.stringify((await call("GET", path, { params })).data, null, 2);
    raw.dataset.format = format.value;
  }

  async function showChart() {
    if (!attributeBox.value) return;
    chart.dataset.points = "";
    const data = await history(id, attributeBox.value, rangeBox.value);
    draw(chart, local(attributeBox.value), data);
  }

  (async () => {
    const entity = (await call("GET", path)).data;
    const rows = [];
    const numeric = [];
    for (const [name, member] of Object.entries(entity)) {
      if (["id", "type", "@context", "createdAt", "modifiedAt"].includes(name)) continue;
      for (const instance of [member].flat()) {
        if (!instance || typeof instance !== "object") continue;
        rows.push(cells(name, instance));
        if (instance.type === "Property" && typeof instance.value === "number" && !numeric.includes(name)) numeric.push(name);
      }
    }
    const type = [entity.type].flat().join(", ");
    attributes.replaceChildren(el("tbody", {}, el("tr", {}, el("th", { text: t("entity.type") }),
      el("td", { colspan: 3, title: type, text: local(type) })), rows));
    attributeBox.replaceChildren(...numeric.map((n) => el("option", { value: n, text: local(n) })));
    format.addEventListener("change", () => showRaw().catch(fail));
    attributeBox.addEventListener("change", () => showChart().catch(fail));
    rangeBox.addEventListener("change", () => showChart().catch(fail));
    if (!numeric.length) chart.textContent = t("chart.none");
    await Promise.all([showRaw(), showChart()]);
  })().catch(fail);
}
