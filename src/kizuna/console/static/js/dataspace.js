// The data space: what this node offers and on which terms (in plain words), its negotiations
// and transfers, its agreements with the accesses used against their limits, and the audit
// trail. The management API is for node administrators; a section the user may not read says
// so instead of failing the page.
import { ApiError, call, get, MANAGEMENT } from "./api.js";
import { issuer } from "./auth.js";
import { t } from "./i18n.js";
import { el } from "./names.js";

const list = (value) => [value].flat().filter((v) => v !== undefined);

// One ODRL constraint as a sentence ("for research only", "at most 1,000 accesses").
export function constraintText(c) {
  const right = list(c.rightOperand).map((v) => (typeof v === "object" ? v["@value"] ?? JSON.stringify(v) : v));
  const key = `odrl.${c.leftOperand}.${c.operator}`;
  const text = t(key, { value: right.join(", ") });
  return text === key ? `${c.leftOperand} ${c.operator} ${right.join(", ")}` : text;
}

function ruleText(rule, kind) {
  const constraints = list(rule.constraint).map(constraintText);
  const action = t(`odrl.action.${rule.action}`) === `odrl.action.${rule.action}` ? rule.action : t(`odrl.action.${rule.action}`);
  const head = t(`odrl.${kind}`, { action });
  return constraints.length ? `${head}: ${constraints.join("; ")}` : head;
}

export function policyText(policy = {}) {
  return [
    ...list(policy.permission).map((r) => ruleText(r, "permission")),
    ...list(policy.prohibition).map((r) => ruleText(r, "prohibition")),
    ...list(policy.obligation || policy.duty).map((r) => ruleText(r, "obligation")),
  ];
}

function limitOf(agreement) {
  for (const rule of list(agreement.permission)) {
    for (const c of list(rule.constraint)) if (c.leftOperand === "count") return Number(list(c.rightOperand)[0]);
  }
  return null;
}

function table(headings, rows, name) {
  if (!rows.length) return el("p", { class: "muted", text: t("none") });
  return el("div", { class: "scroll" }, el("table", { "data-table": name },
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map(([id, ...cells]) => el("tr", { "data-id": id }, [id, ...cells].map((c) => el("td", {}, c)))))));
}

function state(value) { return el("span", { "data-state": value, text: value }); }

const FINAL = ["FINALIZED", "TERMINATED", "COMPLETED"];

// A button that ends a negotiation or transfer still under way (administrators only, as the
// management API decides); the section is read again after.
function terminate(path, current, reload) {
  if (FINAL.includes(current)) return "";
  return el("button", { type: "button", text: t("ds.terminate"), onclick: async (event) => {
    event.target.disabled = true;
    await call("POST", path, { body: { reason: "Terminated in the console" } });
    await reload();
  } });
}

const SECTIONS = {
  datasets: async () => table([t("ds.dataset"), t("ds.title"), t("ds.policy")],
    (await get(`${MANAGEMENT}/datasets`)).map((d) => [d.id, d.title || "",
      el("ul", {}, list(d.offers || d.policy).flatMap((p) => policyText(p)).map((line) => el("li", { text: line })))]),
    "datasets"),
  negotiations: async (reload) => table(["id", t("ds.role"), t("ds.counterparty"), t("ds.state"), ""],
    (await get(`${MANAGEMENT}/negotiations`)).map((n) => [n.id, n.role, n.counterPartyId || n.counterPartyAddress || "",
      state(n.state), terminate(`${MANAGEMENT}/negotiations/${encodeURIComponent(n.id)}/terminate`, n.state, reload)]),
    "negotiations"),
  transfers: async (reload) => table(["id", t("ds.role"), t("ds.format"), t("ds.state"), ""],
    (await get(`${MANAGEMENT}/transfers`)).map((x) => [x.id, x.role, x.format || "", state(x.state),
      terminate(`${MANAGEMENT}/transfers/${encodeURIComponent(x.id)}/terminate`, x.state, reload)]), "transfers"),
  agreements: async () => table(["id", t("ds.dataset"), t("ds.assignee"), t("ds.accesses")],
    (await get(`${MANAGEMENT}/agreements`)).map((record) => {
      const agreement = record.agreement || {};
      const limit = limitOf(agreement);
      const used = Number(record.accessCount || 0);
      return [record.id, agreement.target || "", agreement.assignee || "",
        limit === null ? String(used) : el("span", {}, el("meter", { min: 0, max: limit, value: used }), ` ${used} / ${limit}`)];
    }), "agreements"),
  audit: async () => {
    // The trail is oldest first: the latest 50 are the last page.
    const probe = await call("GET", `${MANAGEMENT}/audit`, { params: { limit: 1 } });
    const total = Number(probe.headers.get("Kizuna-Results-Count") || 0);
    const answer = await call("GET", `${MANAGEMENT}/audit`, { params: { limit: 50, offset: Math.max(0, total - 50) } });
    return table([t("ds.at"), t("ds.subject"), t("ds.operation"), t("ds.target"), t("ds.outcome")],
      answer.data.reverse().map((e) => [e.at, e.subject || t("ds.anonymous"), e.operation, e.target, e.outcome]), "audit");
  },
};

export function render(root) {
  root.append(el("h2", { text: t("nav.dataspace") }));
  const fail = (error) => root.dispatchEvent(new CustomEvent("failed", { detail: error }));
  const names = Object.keys(SECTIONS).filter((name) => name !== "audit" || issuer);
  for (const name of names) {
    let body = el("div", { text: "…" });
    root.append(el("section", { class: "card", "data-section": name }, el("h3", { text: t(`ds.${name}`) }), body));
    const show = (made) => { body.replaceWith(made); body = made; };
    const load = () => SECTIONS[name](load).then(show).catch((error) => {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        show(el("p", { class: "muted", text: t("ds.forbidden") }));
      } else fail(error);
    });
    load();
  }
}
