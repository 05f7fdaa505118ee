// The live event stream of each watched site (one for a site, one per site of a
// group), read with fetch() and a stream reader: EventSource cannot send the
// `Authorization` header, and the token must never be put in a URL. A dropped
// stream reconnects with a growing pause; the live indicator in the header
// shows "Live" only while every stream is.

import { authHeaders, UNAUTHORIZED_MESSAGE } from "./api.js";
import { $ } from "./format.js";
import { signOut, sitePath } from "./session.js";

const LIVE_TEXT = { connecting: "Connecting…", live: "Live", offline: "Reconnecting…" };

// The streams now running: their AbortController and each site's state.
let current = null;

function setLive(state, text, title) {
  const node = $("live-status");
  node.dataset.state = state;
  node.textContent = text;
  if (title) node.title = title;
  else node.removeAttribute("title");
}

function showLive(streams) {
  if (!current || current.streams !== streams) return;
  const states = [...streams.values()];
  if (states.length === 0) {
    setLive("offline", "No sites");
    return;
  }
  const state = states.every((one) => one === "live")
    ? "live"
    : states.includes("offline")
      ? "offline"
      : "connecting";
  // With several streams, which site is in which state, on hover.
  const title = streams.size > 1
    ? [...streams].map(([site, one]) => `${site}: ${LIVE_TEXT[one]}`).join("\n")
    : "";
  setLive(state, LIVE_TEXT[state], title);
}

// Reads the streams of `sites`; `handler` has ready(site), change(site, change)
// and resync(site), called as those events arrive.
export function startEvents(sites, handler) {
  stopEvents();
  const controller = new AbortController();
  const streams = new Map(sites.map((site) => [site, "connecting"]));
  current = { controller, streams };
  showLive(streams);
  for (const site of streams.keys()) {
    readEvents(site, streams, handler, controller.signal);
  }
}

export function stopEvents() {
  if (current) current.controller.abort();
  current = null;
}

function pause(milliseconds, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, milliseconds);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

// Server-Sent Events over fetch: blocks separated by a blank line, each with
// `event:`, `data:` and `id:` lines; lines starting with ':' are keep-alives.
async function readEvents(site, streams, handler, signal) {
  const setState = (state) => {
    if (signal.aborted) return;
    streams.set(site, state);
    showLive(streams);
  };
  let retryMs = 1000;
  while (!signal.aborted) {
    setState("connecting");
    try {
      const response = await fetch(sitePath(site, "/events"), {
        headers: authHeaders("text/event-stream"),
        cache: "no-store",
        signal,
      });
      if (response.status === 401) {
        signOut(UNAUTHORIZED_MESSAGE);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`events answered ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = (buffer + value).replace(/\r\n/g, "\n");
        let end = buffer.indexOf("\n\n");
        while (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!signal.aborted && handleStreamEvent(block, site, setState, handler)) retryMs = 1000;
          end = buffer.indexOf("\n\n");
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    if (signal.aborted) return;
    setState("offline");
    await pause(retryMs, signal);
    retryMs = Math.min(retryMs * 2, 15000);
  }
}

function handleStreamEvent(block, site, setState, handler) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (name === "ready") {
    setState("live");
    handler.ready(site);
    return true;
  }
  if (name === "worklist-change") {
    let change = null;
    try {
      change = JSON.parse(data.join("\n"));
    } catch (error) {
      change = null;
    }
    handler.change(site, change);
    return true;
  }
  if (name === "resync") {
    handler.resync(site);
    return true;
  }
  return false;
}
