// The study view: the study's facts, each image with its AI overlay (fetched
// with the token and shown from a blob: URL), and the claim, release and report
// buttons. A study is always read through its own site's routes, also when the
// tab is signed in to a group.

import { api, authHeaders } from "./api.js";
import {
  $,
  aiBadge,
  clockTime,
  deadlineNode,
  duration,
  el,
  holderText,
  probabilityText,
  urgencyBadge,
} from "./format.js";
import { isGroup, readerBody, rememberClaimant, session, siteName, sitePath } from "./session.js";
import { scheduleRefresh } from "./worklist.js";

const study = {
  site: "",
  uid: "",
  detail: null,
  receivedAt: 0,
  imageSignature: "",
  blobUrls: [],
  busy: false,
};

function studyPath(site, uid, path) {
  return sitePath(site, `/studies/${encodeURIComponent(uid)}${path}`);
}

function isShown(site, uid) {
  return study.uid === uid && study.site === site;
}

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

export async function openStudy(site, uid) {
  if (!isShown(site, uid)) {
    releaseImages();
    study.detail = null;
    showStudyMessage("");
    $("study-title").textContent = "Loading study…";
    $("study-subtitle").textContent = "";
    $("study-badges").replaceChildren();
    $("study-facts").replaceChildren();
    // Another study: its outcome starts unrecorded.
    const unrecorded = document.querySelector('input[name="outcome"][value=""]');
    if (unrecorded) unrecorded.checked = true;
  }
  study.site = site;
  study.uid = uid;
  await loadStudy(site, uid, { quiet: false });
}

// Forgets the study shown (back to the worklist, or signed out).
export function closeStudy() {
  study.uid = "";
  study.site = "";
  study.detail = null;
  releaseImages();
}

// Re-reads the study shown when an event of `site` may concern it: a change of
// that study, or any (`change` null) after the stream (re)connected.
export function refreshStudy(site, change) {
  if (!study.uid || study.site !== site) return;
  if (change && change.study_instance_uid !== study.uid) return;
  loadStudy(study.site, study.uid, { quiet: true });
}

// The clocks of the study shown move on between reads.
export function tickStudy() {
  if (study.detail && !study.busy) renderStudy();
}

async function loadStudy(site, uid, { quiet }) {
  try {
    const detail = await api("GET", studyPath(site, uid, ""));
    if (!isShown(site, uid)) return;
    study.detail = detail;
    study.receivedAt = performance.now();
    renderStudy();
  } catch (error) {
    if (!isShown(site, uid) || quiet) return;
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
    el("span", { className: `badge state-${item.state}`, id: "study-state" }, holderText(item, session.claimant)),
  );
  const fact = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
  const facts = [];
  if (isGroup()) facts.push(fact("Site", siteName(study.site)));
  facts.push(
    fact("Body part", (item.body_parts || []).join(", ") || "—"),
    fact("Arrived", clockTime(item.arrived_at)),
  );
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

// The overlay PNG (the image with the detected regions drawn), fetched with the
// token: an <img src> could not send it.
async function loadOverlay(instance, frame, description, boxCount) {
  const { site, uid } = study;
  try {
    const response = await fetch(instance.overlay_url, {
      headers: authHeaders(),
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
    if (!isShown(site, uid)) return;
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
    if (!isShown(site, uid)) return;
    frame.classList.remove("loading");
    frame.classList.add("failed");
    frame.setAttribute("aria-label", `${description}: the image cannot be shown`);
    frame.replaceChildren(el("span", { className: "image-status" }, `The image cannot be shown: ${error.message}`));
  }
}

// Claim, release or report the study shown, through its own site.
export async function studyAction(action) {
  if (!study.uid || study.busy) return;
  const { site, uid } = study;
  study.busy = true;
  setActionsEnabled({ claim: false, release: false, report: false });
  try {
    let body = readerBody();
    if (action === "report") {
      const chosen = document.querySelector('input[name="outcome"]:checked');
      if (chosen && chosen.value) body = { ...(body || {}), fracture: chosen.value };
    }
    const answer = await api("POST", studyPath(site, uid, `/${action}`), body);
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
  if (isShown(site, uid)) await loadStudy(site, uid, { quiet: true });
  scheduleRefresh(0);
}
