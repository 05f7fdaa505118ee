// The second look: studies of the signed-in site reported "no fracture" while
// the AI suspected one (and, when ticked, called one possible), unreviewed
// first, each with a form to record what a second reader concluded. Shown to
// the site's readers and admins (viewers get 403 from the API: the panel stays
// hidden for them); a group's page has none (the list is a site's).

import { api } from "./api.js";
import { $, AI_LABELS, clockTime, el } from "./format.js";
import { isGroup, session, sitePath, studyHash } from "./session.js";

const CONCLUSIONS = {
  "fracture-confirmed": "Fracture confirmed",
  "no-fracture": "No fracture",
  equivocal: "Equivocal",
};

function reviewCell(item) {
  if (item.review) {
    const review = item.review;
    return el(
      "td",
      { className: "reviewed" },
      `${CONCLUSIONS[review.conclusion] || review.conclusion}, by ${review.reviewer} at ${clockTime(review.reviewed_at)}`,
    );
  }
  const select = el(
    "select",
    { "aria-label": `Conclusion of the second look at ${item.accession_number || item.study_instance_uid}` },
    el("option", { value: "" }, "Conclusion…"),
    ...Object.entries(CONCLUSIONS).map(([value, label]) => el("option", { value }, label)),
  );
  const note = el("input", {
    type: "text",
    maxlength: "2000",
    placeholder: "Note (optional)",
    "aria-label": "Note",
  });
  const record = el("button", { type: "button", className: "button secondary small" }, "Record");
  record.addEventListener("click", () => recordReview(item.study_instance_uid, select, note, record));
  return el("td", { className: "review-form" }, select, note, record);
}

function row(item) {
  return el(
    "tr",
    { dataset: { study: item.study_instance_uid, reviewed: item.review ? "yes" : "no" } },
    el(
      "td",
      {},
      el("a", { href: studyHash(session.site, item.study_instance_uid), className: "accession" },
        item.accession_number || "(no accession)"),
    ),
    el("td", {}, item.body_parts.join(", ")),
    el("td", {}, `${AI_LABELS[item.ai_result] || item.ai_result}` +
      (item.probability === null ? "" : ` (${item.probability.toFixed(2)})`)),
    el("td", {}, item.reader),
    el("td", {}, clockTime(item.reported_at)),
    reviewCell(item),
  );
}

// Until the reader ticks or unticks the box, the site's setting decides
// (`[site.second_look] include_possible`), and the box shows it. The choice
// holds for the site it was made on, not for the next one signed in.
let chosenFor = null;

function query() {
  if (chosenFor !== session.site) return "";
  return $("discrepancies-possible").checked ? "?include=possible" : "?include=suspected";
}

// Reads the list again; hides the panel for viewers and groups.
export async function refreshDiscrepancies() {
  const panel = $("discrepancies");
  if (!session.token || isGroup()) {
    panel.hidden = true;
    return;
  }
  let answer;
  try {
    answer = await api("GET", sitePath(session.site, `/discrepancies${query()}`));
  } catch (error) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  $("discrepancies-possible").checked = answer.ai_results.includes("possible");
  $("discrepancies-rows").replaceChildren(...answer.discrepancies.map(row));
  $("discrepancies-empty").hidden = answer.discrepancies.length > 0;
  const weeks = answer.weeks.map(
    (week) => `${week.week}: ${week.discrepancies} (${week.reviewed} reviewed, ${week.confirmed} confirmed)`,
  );
  $("discrepancies-weeks").textContent = weeks.length ? `Per week: ${weeks.join("; ")}.` : "";
}

async function recordReview(study, select, note, button) {
  const message = $("discrepancies-message");
  if (!select.value) {
    message.textContent = "Choose a conclusion first.";
    message.className = "alert error";
    message.hidden = false;
    return;
  }
  button.disabled = true;
  const body = { conclusion: select.value, note: note.value };
  if (session.reader) body.reviewer = session.reader;
  try {
    await api("POST", sitePath(session.site, `/studies/${study}/discrepancy-review`), body);
    message.textContent = "The second look is recorded.";
    message.className = "alert success";
  } catch (error) {
    message.textContent = error.message;
    message.className = "alert error";
    button.disabled = false;
  }
  message.hidden = false;
  await refreshDiscrepancies();
}

export function watchDiscrepancyFilter() {
  $("discrepancies-possible").addEventListener("change", () => {
    chosenFor = session.site;
    refreshDiscrepancies();
  });
}
