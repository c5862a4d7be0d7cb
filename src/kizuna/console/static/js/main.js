// The console's shell: the header's controls, and one view at a time chosen by the URL's hash
// (#/map, #/entities, #/entity/<id>, #/services, #/dataspace), so each view can be linked to.
import { setTenant } from "./api.js";
import { completeSignIn, issuer, signIn, user } from "./auth.js";
import { apply, language, setLanguage } from "./i18n.js";
import { connect } from "./live.js";

const VIEWS = {
  map: () => import("./map.js"),
  entities: () => import("./entities.js"),
  entity: () => import("./entity.js"),
  services: () => import("./services.js"),
  dataspace: () => import("./dataspace.js"),
};
let closeView = null;

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

async function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS[name] ? name : "map";
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.getAttribute("href") === `#/${view === "entity" ? "entities" : view}`;
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  closeView?.();
  closeView = null;
  showError(null);
  const main = document.getElementById("view");
  main.replaceChildren();
  main.className = "";
  main.dataset.view = view;
  const module = await VIEWS[view]();
  closeView = module.render(main, decodeURIComponent(rest.join("/")));
}

async function start() {
  const tenantBox = document.getElementById("tenant");
  const params = new URLSearchParams(location.search);
  tenantBox.value = params.get("tenant") || "";
  setTenant(tenantBox.value);
  const picker = document.getElementById("language");
  picker.value = language();
  picker.addEventListener("change", () => { setLanguage(picker.value); apply(document); route(); });
  apply(document);
  if (issuer) {
    await completeSignIn().catch(showError);
    const button = document.getElementById("signin");
    const who = user();
    button.hidden = Boolean(who);
    button.addEventListener("click", () => signIn().catch(showError));
    const badge = document.getElementById("user");
    badge.hidden = !who;
    badge.textContent = who?.preferred_username || who?.sub || "";
  }
  tenantBox.addEventListener("change", () => {
    setTenant(tenantBox.value);
    connect();
    route();
  });
  document.getElementById("view").addEventListener("failed", (event) => showError(event.detail));
  window.addEventListener("hashchange", () => route().catch(showError));
  window.addEventListener("unhandledrejection", (event) => { event.preventDefault(); showError(event.reason); });
  connect();
  await route();
}

start().catch(showError);
