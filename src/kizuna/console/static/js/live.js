// Changes as they are written, from the node's Server-Sent Events (GET /console/events). The
// stream is read with fetch, not EventSource, because it must carry the user's token in the
// Authorization header (the token stays in memory, never in a URL); like EventSource it
// reconnects after the stream's `retry` and resumes with Last-Event-ID, so nothing is missed.
import { tenant } from "./api.js";
import { token } from "./auth.js";

const listeners = new Set();
let controller = null;

function indicator(state) {
  document.getElementById("live")?.setAttribute("data-state", state);
}

// `listener(name, data)` for each event: "change" ({id, type, op, at, entity}) or "reload"
// (the changes since the last one seen are no longer kept: read everything again).
export function onEvent(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function connect() {
  controller?.abort();
  controller = new AbortController();
  follow(controller.signal);
}

function parse(block, stream) {
  let name = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") stream.lastId = value;
    else if (field === "event") name = value;
    else if (field === "data") data.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) stream.retry = Number(value);
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  for (const listener of listeners) listener(name, payload);
}

async function follow(signal) {
  const stream = { lastId: null, retry: 1000 };
  const query = new URLSearchParams();
  if (tenant()) query.set("tenant", tenant());
  while (!signal.aborted) {
    const headers = { Accept: "text/event-stream" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (stream.lastId !== null) headers["Last-Event-ID"] = stream.lastId;
    try {
      const response = await fetch(`/console/events${query.size ? `?${query}` : ""}`, { headers, signal });
      if (response.status === 401 || response.status === 403) return; // until the user signs in
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      indicator("on");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          parse(block, stream);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    indicator("off");
    await new Promise((resolve) => setTimeout(resolve, stream.retry));
  }
}
