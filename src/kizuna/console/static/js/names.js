// What the console shows of an IRI: its last segment ("…/Streetlighting/powerState" is
// "powerState"), with the IRI itself as the title wherever a name is shown.
export function local(iri) {
  if (typeof iri !== "string") return String(iri);
  const cut = Math.max(iri.lastIndexOf("/"), iri.lastIndexOf("#"));
  return cut >= 0 && cut < iri.length - 1 ? iri.slice(cut + 1) : iri;
}

// The attribute of `entity` whose local name is `name`, whatever IRI it was written under.
export function member(entity, name) {
  for (const key of Object.keys(entity)) if (local(key) === name) return entity[key];
  return undefined;
}

// A Property's value in any representation (normalized, concise or keyValues).
export function valueOf(attribute) {
  if (Array.isArray(attribute)) return valueOf(attribute[0]);
  if (attribute && typeof attribute === "object" && !Array.isArray(attribute)) {
    if ("value" in attribute) return attribute.value;
    if ("object" in attribute) return attribute.object;
  }
  return attribute;
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function formatValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(2);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
