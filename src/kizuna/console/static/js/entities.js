// Entities: the tenant's types with their counts, and a page of one type's entities, filtered
// with an NGSI-LD q expression.
import { call, count, NGSI, types } from "./api.js";
import { t } from "./i18n.js";
import { el, formatValue, local } from "./names.js";

const PAGE = 20;

export function render(root) {
  const state = { type: "", q: "", context: "", offset: 0 };
  const typeList = el("table", { class: "types" });
  const table = el("table", { class: "entities" });
  const status = el("p", { class: "muted", "aria-live": "polite" });
  const qBox = el("input", { id: "q", size: 40, placeholder: 'status=="ok"', "aria-label": "q" });
  const contextBox = el("input", { id: "context", size: 40, type: "url", placeholder: t("context.core") });
  const typeBox = el("select", { id: "type", "aria-label": t("entity.type") });
  const previous = el("button", { type: "button", text: t("page.previous") });
  const next = el("button", { type: "button", text: t("page.next") });
  const form = el("form", { class: "row", role: "search" },
    el("label", {}, `${t("entity.type")} `, typeBox), el("label", {}, "q ", qBox),
    el("label", { title: t("context.help") }, "@context ", contextBox),
    el("button", { type: "submit", text: t("filter") }));
  root.append(el("h2", { text: t("nav.entities") }),
    el("section", { class: "card" }, el("h3", { text: t("types") }), el("div", { class: "scroll" }, typeList)),
    form, el("div", { class: "scroll" }, table), el("div", { class: "row" }, previous, next, status));

  async function load() {
    const params = { type: state.type, q: state.q, limit: PAGE, offset: state.offset, count: "true", format: "keyValues" };
    if (!state.type && !state.q) params.type = [...typeBox.options].map((o) => o.value).filter(Boolean).join(",");
    if (!params.type && !state.q) {
      table.replaceChildren();
      status.textContent = t("none");
      return;
    }
    const answer = await call("GET", `${NGSI}/entities`, { params, context: state.context });
    const total = Number(answer.headers.get("NGSILD-Results-Count") || 0);
    table.replaceChildren(el("thead", {}, el("tr", {},
      el("th", { text: "id" }), el("th", { text: t("entity.type") }), el("th", { text: t("entity.attributes") }))),
      el("tbody", {}, answer.data.map((entity) => el("tr", {},
        el("td", {}, el("a", { href: `#/entity/${encodeURIComponent(entity.id)}`, text: entity.id })),
        el("td", { title: entity.type, text: local(entity.type) }),
        el("td", { text: summary(entity) })))));
    const last = Math.min(state.offset + PAGE, total);
    status.textContent = t("page.of", { from: total ? state.offset + 1 : 0, to: last, total });
    table.dataset.total = String(total);
    previous.disabled = state.offset === 0;
    next.disabled = last >= total;
  }

  const fail = (error) => root.dispatchEvent(new CustomEvent("failed", { detail: error }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(state, { type: typeBox.value, q: qBox.value.trim(), context: contextBox.value.trim(), offset: 0 });
    load().catch(fail);
  });
  previous.addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); load().catch(fail); });
  next.addEventListener("click", () => { state.offset += PAGE; load().catch(fail); });

  (async () => {
    const known = await types();
    const counts = await Promise.all(known.map((type) => count({ type: type.id })));
    typeBox.replaceChildren(el("option", { value: "", text: t("all") }),
      ...known.map((type) => el("option", { value: type.id, text: local(type.id) })));
    typeList.replaceChildren(el("tbody", {}, known.map((type, i) => el("tr", { "data-type": type.id }, el("td", {},
      el("a", { href: "#", title: type.id, text: local(type.id), onclick: (event) => {
        event.preventDefault();
        typeBox.value = type.id;
        form.requestSubmit();
      } })), el("td", { class: "num", "data-count": counts[i], text: counts[i].toLocaleString() })))));
    await load();
  })().catch(fail);
}

function summary(entity) {
  return Object.entries(entity).filter(([name]) => !["id", "type", "@context", "location"].includes(name)).slice(0, 4)
    .map(([name, value]) => `${local(name)}: ${formatValue(value)}`).join(" · ");
}
