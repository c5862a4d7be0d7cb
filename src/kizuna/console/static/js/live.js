// Changes as they are written, through the node's Server-Sent Events (GET /console/events).
// EventSource reconnects by itself and resumes with Last-Event-ID, so no change is lost to a
// dropped connection.
import { tenant } from "./api.js";

const listeners = new Set();
let source = null;

function indicator(state) {
  document.getElementById("live")?.setAttribute("data-state", state);
}

export function onChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function connect() {
  source?.close();
  const query = new URLSearchParams();
  if (tenant()) query.set("tenant", tenant());
  source = new EventSource(`/console/events${query.size ? `?${query}` : ""}`);
  source.addEventListener("open", () => indicator("on"));
  source.addEventListener("error", () => indicator("off"));
  source.addEventListener("change", (event) => {
    const change = JSON.parse(event.data);
    for (const listener of listeners) listener(change);
  });
}
