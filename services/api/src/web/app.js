// The fxtriage reading worklist: a page of plain JavaScript, no framework.
//
// Every call to the API sends the token as `Authorization: Bearer`; the token
// lives in this tab's sessionStorage only. The live event stream is read with
// fetch() and a stream reader (EventSource cannot send the header), and each
// change re-reads the worklist. Images are fetched with the header too and shown
// from blob: URLs. Text from the server is only ever set as textContent.
"use strict";

(() => {
  const STORAGE = {
    site: "fxtriage.site",
    token: "fxtriage.token",
    reader: "fxtriage.reader",
    claimant: "fxtriage.claimant",
  };
  const PAGE_SIZE = 100;
  const REFRESH_DELAY_MS = 250;

  const URGENCY_LABELS = {
    emergency: "Emergency",
    inpatient: "Inpatient",
    outpatient: "Outpatient",
  };
  const AI_LABELS = {
    suspected: "Suspected fracture",
    possible: "Possible fracture",
    "no-finding": "No fracture detected",
    "not-analysed": "Not analysed",
    "awaiting-analysis": "Awaiting AI",
  };
  const STATE_LABELS = { open: "Open", claimed: "Claimed", reported: "Reported" };

  const session = {
    site: sessionStorage.getItem(STORAGE.site) || "",
    token: sessionStorage.getItem(STORAGE.token) || "",
    reader: sessionStorage.getItem(STORAGE.reader) || "",
    // Who the API records for this tab's claims: the name typed, or what the
    // first claim answered (the token's id) when none was typed.
    claimant: sessionStorage.getItem(STORAGE.claimant) || "",
  };

  const worklist = {
    items: [],
    receivedAt: 0,
    pages: 1,
    hasMore: false,
    refreshing: null,
    refreshAgain: false,
    refreshTimer: 0,
    rows: [],
  };

  const study = {
    uid: "",
    detail: null,
    receivedAt: 0,
    imageSignature: "",
    blobUrls: [],
    busy: false,
  };

  let events = null; // AbortController of the event stream

  const $ = (id) => document.getElementById(id);

  // ---- small helpers ------------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function duration(totalSeconds) {
    const seconds = Math.max(0, Math.round(totalSeconds));
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    const restMinutes = minutes % 60;
    if (hours < 48) return restMinutes ? `${hours} h ${restMinutes} min` : `${hours} h`;
    const days = Math.floor(hours / 24);
    const restHours = hours % 24;
    return restHours ? `${days} d ${restHours} h` : `${days} d`;
  }

  function clockTime(iso) {
    if (!iso) return "";
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return iso;
    const sameDay = at.toDateString() === new Date().toDateString();
    const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    return sameDay
      ? time
      : `${at.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
  }

  function probabilityText(probability) {
    return typeof probability === "number" ? probability.toFixed(2) : "";
  }

  function urgencyBadge(urgency) {
    return el(
      "span",
      { className: `badge urgency-${urgency}` },
      URGENCY_LABELS[urgency] || urgency,
    );
  }

  function aiBadge(result, probability) {
    const label = AI_LABELS[result] || result;
    const score = probabilityText(probability);
    return el(
      "span",
      {
        className: `ai ai-${result}`,
        "aria-label": score ? `${label}, probability ${score}` : label,
      },
      el("span", { className: "ai-dot", "aria-hidden": "true" }),
      el("span", { className: "ai-label" }, label),
      score ? el("span", { className: "ai-score" }, score) : null,
    );
  }

  function deadlineNode(secondsToDeadline, deadlineIso) {
    const overdue = secondsToDeadline < 0;
    const node = el(
      "span",
      { className: overdue ? "deadline overdue" : "deadline" },
      overdue ? `Overdue ${duration(-secondsToDeadline)}` : duration(secondsToDeadline),
    );
    const at = clockTime(deadlineIso);
    return el(
      "span",
      { className: "deadline-cell" },
      node,
      at ? el("time", { className: "muted small", datetime: deadlineIso }, `due ${at}`) : null,
    );
  }

  function holderText(item) {
    if (item.state !== "claimed") return STATE_LABELS[item.state] || item.state;
    if (item.claimed_by && item.claimed_by === session.claimant) return "Claimed by you";
    return `Claimed by ${item.claimed_by || "another reader"}`;
  }

  let toastTimer = 0;
  function toast(message) {
    const node = $("toast");
    node.textContent = message;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      node.hidden = true;
    }, 5000);
  }

  // ---- the API ------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, kind, message, body) {
      super(message);
      this.status = status;
      this.kind = kind;
      this.body = body;
    }
  }

  function sitePath(path) {
    return `/api/v1/sites/${encodeURIComponent(session.site)}${path}`;
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(sitePath(path), init);
    } catch (cause) {
      throw new ApiError(0, "network", "The server cannot be reached; check the connection.");
    }
    if (response.status === 204) return null;
    let payload = null;
    try {
      payload = await response.json();
    } catch (cause) {
      payload = null;
    }
    if (!response.ok) {
      const message = (payload && payload.message) || `The server answered ${response.status}.`;
      const error = new ApiError(response.status, payload && payload.error, message, payload);
      if (response.status === 401 && session.token) {
        signOut("The access token was refused (unknown or revoked). Sign in again.");
      }
      throw error;
    }
    return payload;
  }

  function readerBody() {
    return session.reader ? { reader: session.reader } : undefined;
  }

  function rememberClaimant(item) {
    if (item && item.state === "claimed" && item.claimed_by && !session.claimant) {
      session.claimant = item.claimed_by;
      sessionStorage.setItem(STORAGE.claimant, item.claimed_by);
    }
  }

  // ---- the live event stream ------------------------------------------------

  function setLive(state, text) {
    const node = $("live-status");
    node.dataset.state = state;
    node.textContent = text;
  }

  function startEvents() {
    stopEvents();
    events = new AbortController();
    readEvents(events.signal);
  }

  function stopEvents() {
    if (events) events.abort();
    events = null;
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
  async function readEvents(signal) {
    let retryMs = 1000;
    while (!signal.aborted) {
      setLive("connecting", "Connecting…");
      try {
        const response = await fetch(sitePath("/events"), {
          headers: { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" },
          cache: "no-store",
          signal,
        });
        if (response.status === 401) {
          signOut("The access token was refused (unknown or revoked). Sign in again.");
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
            if (handleStreamEvent(block)) retryMs = 1000;
            end = buffer.indexOf("\n\n");
          }
        }
      } catch (error) {
        if (signal.aborted) return;
      }
      if (signal.aborted) return;
      setLive("offline", "Reconnecting…");
      await pause(retryMs, signal);
      retryMs = Math.min(retryMs * 2, 15000);
    }
  }

  function handleStreamEvent(block) {
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
      setLive("live", "Live");
      // Whatever changed while the stream was down is in a fresh read.
      scheduleRefresh(0);
      if (study.uid) loadStudy(study.uid, { quiet: true });
      return true;
    }
    if (name === "worklist-change") {
      let change = null;
      try {
        change = JSON.parse(data.join("\n"));
      } catch (error) {
        change = null;
      }
      scheduleRefresh(REFRESH_DELAY_MS);
      if (study.uid && (!change || change.study_instance_uid === study.uid)) {
        loadStudy(study.uid, { quiet: true });
      }
      return true;
    }
    if (name === "resync") {
      scheduleRefresh(0);
      if (study.uid) loadStudy(study.uid, { quiet: true });
      return true;
    }
    return false;
  }

  // ---- the worklist -----------------------------------------------------------

  function worklistQuery(cursor) {
    const query = new URLSearchParams({ state: "open,claimed", limit: String(PAGE_SIZE) });
    const urgency = $("filter-urgency").value;
    const ai = $("filter-ai").value;
    if (urgency) query.set("urgency", urgency);
    if (ai) query.set("ai_result", ai);
    if (cursor) query.set("cursor", cursor);
    return `/worklist?${query}`;
  }

  function scheduleRefresh(delayMs) {
    clearTimeout(worklist.refreshTimer);
    worklist.refreshTimer = setTimeout(refreshWorklist, delayMs);
  }

  // One read at a time; a change during a read asks for one more afterwards.
  async function refreshWorklist() {
    if (!session.token) return;
    if (worklist.refreshing) {
      worklist.refreshAgain = true;
      return worklist.refreshing;
    }
    worklist.refreshing = (async () => {
      try {
        const items = [];
        let cursor = null;
        let hasMore = false;
        for (let page = 0; page < worklist.pages; page += 1) {
          const answer = await api("GET", worklistQuery(cursor));
          items.push(...answer.items);
          cursor = answer.next_cursor;
          hasMore = Boolean(cursor);
          if (!cursor) break;
        }
        worklist.items = items;
        worklist.hasMore = hasMore;
        worklist.receivedAt = performance.now();
        $("worklist-error").hidden = true;
        renderWorklist();
      } catch (error) {
        if (!session.token) return;
        $("worklist-error").textContent = `The worklist could not be read: ${error.message}`;
        $("worklist-error").hidden = false;
      }
    })();
    try {
      await worklist.refreshing;
    } finally {
      worklist.refreshing = null;
    }
    if (worklist.refreshAgain) {
      worklist.refreshAgain = false;
      await refreshWorklist();
    }
  }

  function renderWorklist() {
    const body = $("worklist-rows");
    const focusedStudy = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.study
      : undefined;
    const rows = [];
    const fragment = document.createDocumentFragment();
    worklist.items.forEach((item, index) => {
      const link = el(
        "a",
        { href: `#/study/${item.study_instance_uid}`, className: "accession", dataset: { study: item.study_instance_uid } },
        item.accession_number || "(no accession)",
      );
      const waited = el("td", { className: "waited" });
      const deadline = el("td", { className: "to-deadline" });
      const row = el(
        "tr",
        {
          className: [
            `urgency-row-${item.urgency}`,
            item.overdue ? "is-overdue" : "",
            item.state === "claimed" ? "is-claimed" : "",
          ].join(" ").trim(),
          dataset: { study: item.study_instance_uid, position: String(index + 1) },
        },
        el("td", { className: "col-position" }, String(index + 1)),
        el("td", {}, link),
        el("td", {}, urgencyBadge(item.urgency)),
        el("td", {}, aiBadge(item.ai_result, item.probability)),
        el("td", { className: "body-parts" }, (item.body_parts || []).join(", ") || "—"),
        waited,
        deadline,
        el("td", { className: "holder" }, holderText(item)),
      );
      row.addEventListener("click", (event) => {
        if (event.target.closest("a")) return;
        location.hash = `#/study/${item.study_instance_uid}`;
      });
      rows.push({ item, waited, deadline, row });
      fragment.append(row);
    });
    body.replaceChildren(fragment);
    worklist.rows = rows;
    tickWorklist();
    if (focusedStudy) {
      const again = body.querySelector(`a[data-study="${CSS.escape(focusedStudy)}"]`);
      if (again) again.focus();
    }

    const count = worklist.items.length;
    const overdue = worklist.items.filter((item) => item.overdue).length;
    const filtered = $("filter-urgency").value || $("filter-ai").value;
    $("worklist-empty").hidden = count > 0;
    $("worklist-empty").textContent = filtered
      ? "No studies match these filters."
      : "No studies waiting. New studies appear here as they arrive.";
    $("worklist-summary").textContent = count === 0
      ? "Nothing to read."
      : `${count}${worklist.hasMore ? "+" : ""} ${count === 1 ? "study" : "studies"} to read, most urgent first` +
        (overdue ? ` · ${overdue} overdue` : "");
    $("show-more").hidden = !worklist.hasMore;
  }

  // Times move on between reads: the server's values plus the time since.
  function tickWorklist() {
    const elapsed = (performance.now() - worklist.receivedAt) / 1000;
    for (const { item, waited, deadline, row } of worklist.rows) {
      const toDeadline = item.seconds_to_deadline - elapsed;
      waited.textContent = duration(item.waited_seconds + elapsed);
      deadline.replaceChildren(deadlineNode(toDeadline, item.deadline));
      row.classList.toggle("is-overdue", toDeadline < 0);
    }
  }

  async function claimNext(event) {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const body = {};
      if (session.reader) body.reader = session.reader;
      if ($("filter-urgency").value) body.urgency = [$("filter-urgency").value];
      if ($("filter-ai").value) body.ai_result = [$("filter-ai").value];
      const claimed = await api("POST", "/worklist/next", body);
      if (!claimed) {
        toast("No open study to claim.");
        return;
      }
      rememberClaimant(claimed);
      location.hash = `#/study/${claimed.study_instance_uid}`;
    } catch (error) {
      toast(`Could not claim the next study: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // ---- the study view -----------------------------------------------------------

  function releaseImages() {
    for (const url of study.blobUrls) URL.revokeObjectURL(url);
    study.blobUrls = [];
    study.imageSignature = "";
    $("images").replaceChildren();
  }

  function showStudyMessage(text, kind) {
    const node = $("study-message");
    node.textContent = text;
    node.className = `alert ${kind || "info"}`;
    node.hidden = !text;
  }

  async function openStudy(uid) {
    if (study.uid !== uid) {
      releaseImages();
      study.detail = null;
      showStudyMessage("");
      $("study-title").textContent = "Loading study…";
      $("study-subtitle").textContent = "";
      $("study-badges").replaceChildren();
      $("study-facts").replaceChildren();
    }
    study.uid = uid;
    await loadStudy(uid, { quiet: false });
  }

  async function loadStudy(uid, { quiet }) {
    try {
      const detail = await api("GET", `/studies/${encodeURIComponent(uid)}`);
      if (study.uid !== uid) return;
      study.detail = detail;
      study.receivedAt = performance.now();
      renderStudy();
    } catch (error) {
      if (study.uid !== uid || quiet) return;
      $("study-title").textContent = "Study not available";
      showStudyMessage(
        error.status === 404 ? "This study does not exist on this site." : error.message,
        "error",
      );
      setActionsEnabled({ claim: false, release: false, report: false });
    }
  }

  function setActionsEnabled({ claim, release, report }) {
    $("claim-button").disabled = !claim || study.busy;
    $("release-button").disabled = !release || study.busy;
    $("report-button").disabled = !report || study.busy;
  }

  function renderStudy() {
    const { study: item, instances } = study.detail;
    const elapsed = (performance.now() - study.receivedAt) / 1000;
    $("study-title").textContent = `Accession ${item.accession_number || "(none)"}`;
    $("study-subtitle").textContent = `Study ${item.study_instance_uid}`;
    $("study-badges").replaceChildren(
      urgencyBadge(item.urgency),
      aiBadge(item.ai_result, item.probability),
      el("span", { className: `badge state-${item.state}`, id: "study-state" }, holderText(item)),
    );
    const fact = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
    const facts = [
      fact("Body part", (item.body_parts || []).join(", ") || "—"),
      fact("Arrived", clockTime(item.arrived_at)),
    ];
    if (item.state === "reported") {
      const turnaround = (Date.parse(item.reported_at) - Date.parse(item.arrived_at)) / 1000;
      facts.push(fact("Reported", clockTime(item.reported_at)));
      if (Number.isFinite(turnaround)) facts.push(fact("Turnaround", duration(turnaround)));
    } else {
      facts.push(fact("Waited", duration(item.waited_seconds + elapsed)));
      facts.push(fact("Time to deadline", deadlineNode(item.seconds_to_deadline - elapsed, item.deadline)));
    }
    if (item.state === "claimed" && item.claim_expires_at) {
      facts.push(fact("Claim ends", clockTime(item.claim_expires_at)));
    }
    $("study-facts").replaceChildren(...facts.flat());

    const reported = item.state === "reported";
    setActionsEnabled({
      claim: !reported && !(item.state === "claimed" && item.claimed_by === session.claimant),
      release: item.state === "claimed",
      report: !reported,
    });
    const mine = item.state === "claimed" && item.claimed_by === session.claimant;
    $("claim-button").textContent = mine ? "Claimed" : "Claim";
    $("study-next").hidden = !reported;

    const models = new Set();
    for (const instance of instances) {
      for (const finding of instance.findings) models.add(`${finding.model_name} ${finding.model_version}`.trim());
    }
    const demoModels = [...models].filter((name) => /^fxtriage-(demo|test)/.test(name));
    $("demo-model-note").hidden = demoModels.length === 0;
    $("demo-model-note").textContent = demoModels.length
      ? `Demonstration AI model (${demoModels.join(", ")}): built on synthetic images only and never validated on patients; no clinical validity.`
      : "";

    const signature = instances
      .map((instance) => `${instance.sop_instance_uid}:${instance.analysis}:${instance.findings.length}`)
      .join("|");
    if (signature !== study.imageSignature) {
      renderImages(instances);
      study.imageSignature = signature;
    }
  }

  function renderImages(instances) {
    for (const url of study.blobUrls) URL.revokeObjectURL(url);
    study.blobUrls = [];
    if (instances.length === 0) {
      $("images").replaceChildren(el("p", { className: "empty" }, "No images stored for this study yet."));
      return;
    }
    $("images").replaceChildren(...instances.map(renderInstance));
  }

  function renderInstance(instance) {
    const detections = [];
    for (const finding of instance.findings) {
      if (Array.isArray(finding.detections)) detections.push(...finding.detections);
    }
    const view = [instance.body_part, instance.view_position, instance.laterality]
      .filter(Boolean)
      .join(" ");
    const description = `${instance.modality} ${view || "image"}`.trim();
    const frame = el(
      "div",
      { className: "image-frame loading", role: "img", "aria-label": `${description}: loading` },
      el("span", { className: "image-status" }, "Loading image…"),
    );
    const figure = el(
      "figure",
      { className: "image-card card", dataset: { sop: instance.sop_instance_uid } },
      frame,
      el(
        "figcaption",
        {},
        el("div", { className: "image-title" }, description),
        el("div", { className: "muted small" }, analysisText(instance)),
        findingsList(instance),
      ),
    );
    loadOverlay(instance, frame, description, detections.length);
    return figure;
  }

  function analysisText(instance) {
    if (!instance.eligible) {
      return `Not analysed by AI${instance.not_eligible_reason ? `: ${instance.not_eligible_reason}` : ""}`;
    }
    if (instance.analysis === "awaiting") return "Awaiting AI analysis";
    if (instance.analysis === "failed") return "AI analysis failed";
    return "Analysed by AI; detected regions are outlined in red";
  }

  function findingsList(instance) {
    if (instance.findings.length === 0) return null;
    const list = el("ul", { className: "findings" });
    for (const finding of instance.findings) {
      const model = `${finding.model_name} ${finding.model_version}`.trim();
      if (finding.status !== "analysed") {
        list.append(
          el("li", { className: "finding failed" }, `${model}: not analysed — ${finding.failure_reason || finding.failure_kind || "failed"}`),
        );
        continue;
      }
      const boxes = Array.isArray(finding.detections) ? finding.detections : [];
      list.append(
        el(
          "li",
          { className: "finding" },
          el("span", {}, `${model}: fracture probability `),
          el("strong", {}, probabilityText(finding.probability) || "—"),
          boxes.length
            ? el(
              "ul",
              { className: "detections" },
              boxes.map((found) => el(
                "li",
                {},
                `${found.class || "region"} ${probabilityText(found.score)} at x ${Math.round(found.box.x_min)}–${Math.round(found.box.x_max)}, y ${Math.round(found.box.y_min)}–${Math.round(found.box.y_max)}`,
              )),
            )
            : el("div", { className: "muted small" }, "No region above the detection threshold"),
        ),
      );
    }
    return list;
  }

  async function loadOverlay(instance, frame, description, boxCount) {
    const uid = study.uid;
    try {
      const response = await fetch(instance.overlay_url, {
        headers: { Authorization: `Bearer ${session.token}` },
        cache: "no-store",
      });
      if (!response.ok) {
        let message = `the server answered ${response.status}`;
        try {
          message = (await response.json()).message || message;
        } catch (error) {
          // not JSON: keep the status
        }
        throw new Error(message);
      }
      const blob = await response.blob();
      if (study.uid !== uid) return;
      const url = URL.createObjectURL(blob);
      study.blobUrls.push(url);
      const alt = boxCount
        ? `${description} with ${boxCount} detected ${boxCount === 1 ? "region" : "regions"} outlined in red`
        : `${description}`;
      const image = el("img", { src: url, alt, className: "overlay", tabindex: "0", title: "Click to toggle full size" });
      const toggle = () => frame.classList.toggle("zoomed");
      image.addEventListener("click", toggle);
      image.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          toggle();
        }
      });
      frame.classList.remove("loading");
      frame.removeAttribute("role");
      frame.removeAttribute("aria-label");
      frame.replaceChildren(image);
    } catch (error) {
      if (study.uid !== uid) return;
      frame.classList.remove("loading");
      frame.classList.add("failed");
      frame.setAttribute("aria-label", `${description}: the image cannot be shown`);
      frame.replaceChildren(el("span", { className: "image-status" }, `The image cannot be shown: ${error.message}`));
    }
  }

  async function studyAction(action) {
    if (!study.uid || study.busy) return;
    const uid = study.uid;
    study.busy = true;
    setActionsEnabled({ claim: false, release: false, report: false });
    try {
      const answer = await api("POST", `/studies/${encodeURIComponent(uid)}/${action}`, readerBody());
      if (action === "claim") {
        rememberClaimant(answer);
        showStudyMessage(`Claimed by you until ${clockTime(answer.claim_expires_at)}.`, "success");
      } else if (action === "release") {
        showStudyMessage("Released: the study is back on the worklist for anyone to read.", "info");
      } else {
        const report = answer.report;
        showStudyMessage(
          `Reported. Turnaround ${duration(report.turnaround_seconds)}; ` +
            `${report.met_deadline ? "the deadline was met" : "the deadline was missed"}. ` +
            "The study has left the worklist.",
          "success",
        );
      }
    } catch (error) {
      let message = error.message;
      if (error.status === 409 && error.body && error.body.claimed_by) {
        message = `${message} (${error.body.claimed_by}, until ${clockTime(error.body.claim_expires_at)})`;
      } else if (error.status === 403) {
        message = `Not allowed with this token: ${error.message}`;
      }
      showStudyMessage(message, "error");
    } finally {
      study.busy = false;
    }
    if (study.uid === uid) await loadStudy(uid, { quiet: true });
    scheduleRefresh(0);
  }

  // ---- views, sign-in and sign-out ------------------------------------------------

  function showView(name) {
    for (const view of ["login", "worklist", "study"]) {
      $(`${view}-view`).hidden = view !== name;
    }
    $("session").hidden = name === "login";
  }

  function route() {
    if (!session.token) {
      showView("login");
      return;
    }
    const match = /^#\/study\/([0-9.]+)$/.exec(location.hash);
    if (match) {
      showView("study");
      openStudy(match[1]);
      $("main").focus({ preventScroll: true });
      return;
    }
    if (study.uid) {
      study.uid = "";
      study.detail = null;
      releaseImages();
    }
    showView("worklist");
    document.title = `Worklist · ${session.site} · fxtriage`;
    refreshWorklist();
  }

  async function signIn(event) {
    event.preventDefault();
    const site = $("login-site").value.trim();
    const token = $("login-token").value.trim();
    const reader = $("login-reader").value.trim();
    const error = $("login-error");
    error.hidden = true;
    if (!site || !token) {
      error.textContent = "Enter both the site id and the access token.";
      error.hidden = false;
      (site ? $("login-token") : $("login-site")).focus();
      return;
    }
    const submit = $("login-submit");
    submit.disabled = true;
    submit.textContent = "Checking…";
    Object.assign(session, { site, token, reader, claimant: reader });
    try {
      await api("GET", "/worklist?limit=1");
    } catch (failure) {
      session.token = "";
      error.textContent = failure.status === 401
        ? "This access token is not valid (unknown or revoked)."
        : failure.status === 404
          ? `The token does not belong to site “${site}”. Check the site id.`
          : failure.message;
      error.hidden = false;
      $("login-token").focus();
      return;
    } finally {
      submit.disabled = false;
      submit.textContent = "Open worklist";
    }
    sessionStorage.setItem(STORAGE.site, site);
    sessionStorage.setItem(STORAGE.token, token);
    sessionStorage.setItem(STORAGE.reader, reader);
    sessionStorage.setItem(STORAGE.claimant, reader);
    $("login-token").value = "";
    startSession();
  }

  function startSession() {
    $("session-site").textContent = session.site;
    worklist.pages = 1;
    startEvents();
    if (!/^#\/study\//.test(location.hash)) location.hash = "#/";
    route();
  }

  function signOut(reason) {
    stopEvents();
    session.token = "";
    session.claimant = "";
    sessionStorage.removeItem(STORAGE.token);
    sessionStorage.removeItem(STORAGE.claimant);
    study.uid = "";
    study.detail = null;
    releaseImages();
    worklist.items = [];
    worklist.rows = [];
    $("worklist-rows").replaceChildren();
    $("login-site").value = session.site;
    $("login-reader").value = session.reader;
    $("login-error").textContent = reason || "";
    $("login-error").hidden = !reason;
    document.title = "fxtriage · Fracture triage worklist";
    showView("login");
    ($("login-site").value ? $("login-token") : $("login-site")).focus();
  }

  function start() {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("claim-next").addEventListener("click", claimNext);
    $("study-next").addEventListener("click", claimNext);
    $("claim-button").addEventListener("click", () => studyAction("claim"));
    $("release-button").addEventListener("click", () => studyAction("release"));
    $("report-button").addEventListener("click", () => studyAction("report"));
    $("show-more").addEventListener("click", () => {
      worklist.pages += 1;
      refreshWorklist();
    });
    for (const filter of ["filter-urgency", "filter-ai"]) {
      $(filter).addEventListener("change", () => {
        worklist.pages = 1;
        refreshWorklist();
      });
    }
    window.addEventListener("hashchange", route);
    setInterval(() => {
      if (!$("worklist-view").hidden) tickWorklist();
      if (!$("study-view").hidden && study.detail && !study.busy) renderStudy();
    }, 1000);

    if (session.token) {
      startSession();
    } else {
      $("login-site").value = session.site;
      $("login-reader").value = session.reader;
      showView("login");
      ($("login-site").value ? $("login-token") : $("login-site")).focus();
    }
  }

  start();
})();
