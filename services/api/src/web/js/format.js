// Small helpers shared by the views: building DOM nodes (text is only ever set
// as a text node, never parsed as HTML), durations, clock times and the badges.

export const URGENCY_LABELS = {
  emergency: "Emergency",
  inpatient: "Inpatient",
  outpatient: "Outpatient",
};

export const AI_LABELS = {
  suspected: "Suspected fracture",
  possible: "Possible fracture",
  "no-finding": "No fracture detected",
  "not-analysed": "Not analysed",
  "awaiting-analysis": "Awaiting AI",
};

export const STATE_LABELS = { open: "Open", claimed: "Claimed", reported: "Reported" };

export const $ = (id) => document.getElementById(id);

export function el(tag, attributes, ...children) {
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

export function duration(totalSeconds) {
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

export function clockTime(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return iso;
  const sameDay = at.toDateString() === new Date().toDateString();
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  return sameDay
    ? time
    : `${at.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

export function probabilityText(probability) {
  return typeof probability === "number" ? probability.toFixed(2) : "";
}

export function urgencyBadge(urgency) {
  return el(
    "span",
    { className: `badge urgency-${urgency}` },
    URGENCY_LABELS[urgency] || urgency,
  );
}

export function aiBadge(result, probability) {
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

export function deadlineNode(secondsToDeadline, deadlineIso) {
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

// "Open", "Claimed by you" (when `claimant` is this tab's), "Claimed by …", "Reported".
export function holderText(item, claimant) {
  if (item.state !== "claimed") return STATE_LABELS[item.state] || item.state;
  if (item.claimed_by && item.claimed_by === claimant) return "Claimed by you";
  return `Claimed by ${item.claimed_by || "another reader"}`;
}

let toastTimer = 0;
export function toast(message) {
  const node = $("toast");
  node.textContent = message;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 5000);
}
