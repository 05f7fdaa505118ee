// The worklist: the site's studies, or a group's merged across its sites (with
// a Site column), in the API's reading order, filtered and paged as the API
// does; re-read when the event streams report a change, with the waiting times
// and deadlines ticking between reads.

import { api } from "./api.js";
import { $, aiBadge, deadlineNode, duration, el, holderText, toast, urgencyBadge } from "./format.js";
import {
  isGroup,
  rememberClaimant,
  session,
  siteName,
  studyHash,
  worklistPath,
} from "./session.js";

const PAGE_SIZE = 100;

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

function worklistQuery(cursor) {
  const query = new URLSearchParams({ state: "open,claimed", limit: String(PAGE_SIZE) });
  const urgency = $("filter-urgency").value;
  const ai = $("filter-ai").value;
  if (urgency) query.set("urgency", urgency);
  if (ai) query.set("ai_result", ai);
  if (cursor) query.set("cursor", cursor);
  return worklistPath(`/worklist?${query}`);
}

// Back to the first page (a new session, or other filters).
export function firstPage() {
  worklist.pages = 1;
}

export function showMoreStudies() {
  worklist.pages += 1;
  refreshWorklist();
}

export function resetWorklist() {
  clearTimeout(worklist.refreshTimer);
  worklist.items = [];
  worklist.rows = [];
  $("worklist-rows").replaceChildren();
}

export function scheduleRefresh(delayMs) {
  clearTimeout(worklist.refreshTimer);
  worklist.refreshTimer = setTimeout(refreshWorklist, delayMs);
}

// One read at a time; a change during a read asks for one more afterwards.
export async function refreshWorklist() {
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

function siteCell(item) {
  const name = siteName(item.site_id);
  return el(
    "td",
    { className: "site", title: name !== item.site_id ? item.site_id : null },
    name || "—",
  );
}

function renderWorklist() {
  const body = $("worklist-rows");
  const group = isGroup();
  $("col-site").hidden = !group;
  const focusedStudy = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.study
    : undefined;
  const rows = [];
  const fragment = document.createDocumentFragment();
  worklist.items.forEach((item, index) => {
    const hash = studyHash(item.site_id, item.study_instance_uid);
    const link = el(
      "a",
      { href: hash, className: "accession", dataset: { study: item.study_instance_uid } },
      item.accession_number || "(no accession)",
    );
    const waited = el("td", { className: "waited" });
    const deadline = el("td", { className: "to-deadline" });
    const dataset = { study: item.study_instance_uid, position: String(index + 1) };
    if (item.site_id) dataset.site = item.site_id;
    const row = el(
      "tr",
      {
        className: [
          `urgency-row-${item.urgency}`,
          item.overdue ? "is-overdue" : "",
          item.state === "claimed" ? "is-claimed" : "",
        ].join(" ").trim(),
        dataset,
      },
      el("td", { className: "col-position" }, String(index + 1)),
      el("td", {}, link),
      el("td", {}, urgencyBadge(item.urgency)),
      el("td", {}, aiBadge(item.ai_result, item.probability)),
      group ? siteCell(item) : null,
      el("td", { className: "body-parts" }, (item.body_parts || []).join(", ") || "—"),
      waited,
      deadline,
      el("td", { className: "holder" }, holderText(item, session.claimant)),
    );
    row.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      location.hash = hash;
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
  const where = group
    ? ` across ${session.sites.length} ${session.sites.length === 1 ? "site" : "sites"}`
    : "";
  $("worklist-empty").hidden = count > 0;
  $("worklist-empty").textContent = filtered
    ? "No studies match these filters."
    : "No studies waiting. New studies appear here as they arrive.";
  $("worklist-summary").textContent = count === 0
    ? "Nothing to read."
    : `${count}${worklist.hasMore ? "+" : ""} ${count === 1 ? "study" : "studies"} to read${where}, most urgent first` +
      (overdue ? ` · ${overdue} overdue` : "");
  $("show-more").hidden = !worklist.hasMore;
}

// Times move on between reads: the server's values plus the time since.
export function tickWorklist() {
  const elapsed = (performance.now() - worklist.receivedAt) / 1000;
  for (const { item, waited, deadline, row } of worklist.rows) {
    const toDeadline = item.seconds_to_deadline - elapsed;
    waited.textContent = duration(item.waited_seconds + elapsed);
    deadline.replaceChildren(deadlineNode(toDeadline, item.deadline));
    row.classList.toggle("is-overdue", toDeadline < 0);
  }
}

// Claims the most urgent open study matching the filters (of any of a group's
// sites) and opens it.
export async function claimNext(event) {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    const body = {};
    if (session.reader) body.reader = session.reader;
    if ($("filter-urgency").value) body.urgency = [$("filter-urgency").value];
    if ($("filter-ai").value) body.ai_result = [$("filter-ai").value];
    const claimed = await api("POST", worklistPath("/worklist/next"), body);
    if (!claimed) {
      toast("No open study to claim.");
      return;
    }
    rememberClaimant(claimed);
    location.hash = studyHash(claimed.site_id, claimed.study_instance_uid);
  } catch (error) {
    toast(`Could not claim the next study: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}
