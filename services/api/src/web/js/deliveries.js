// The signed-in site's result deliveries that failed (to its PACS, RIS and
// FHIR server), shown to the site's admins under the worklist, with a button
// that sends one again. Other roles get 403 from the API: the panel stays
// hidden for them. A group's page has no such panel (deliveries are a site's).

import { api } from "./api.js";
import { $, el } from "./format.js";
import { isGroup, session, sitePath } from "./session.js";

const KINDS = {
  "dicom-sr": "Structured report",
  "dicom-sc": "Secondary capture",
  "hl7-oru": "HL7 result",
  "hl7-priority": "HL7 priority update",
  "fhir-diagnostic-report": "FHIR report",
};

function row(delivery) {
  const retry = el(
    "button",
    { type: "button", className: "button secondary small", dataset: { delivery: delivery.delivery_id } },
    "Send again",
  );
  retry.addEventListener("click", () => retryDelivery(delivery.delivery_id, retry));
  return el(
    "tr",
    { dataset: { delivery: delivery.delivery_id, state: delivery.state } },
    el("td", {}, delivery.state === "dead" ? "Given up" : "Retrying"),
    el("td", {}, delivery.destination),
    el("td", {}, KINDS[delivery.kind] || delivery.kind),
    el("td", { className: "uid" }, delivery.study_instance_uid),
    el("td", {}, String(delivery.attempts)),
    el("td", { className: "delivery-error" }, delivery.last_error),
    el("td", {}, retry),
  );
}

// Reads the failed deliveries again; hides the panel for non-admins and groups.
export async function refreshDeliveries() {
  const panel = $("deliveries");
  if (!session.token || isGroup()) {
    panel.hidden = true;
    return;
  }
  let answer;
  try {
    answer = await api("GET", sitePath(session.site, "/deliveries?failed=true&limit=50"));
  } catch (error) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  const rows = $("deliveries-rows");
  rows.replaceChildren(...answer.deliveries.map(row));
  $("deliveries-empty").hidden = answer.deliveries.length > 0;
}

async function retryDelivery(id, button) {
  button.disabled = true;
  const message = $("deliveries-message");
  try {
    await api("POST", sitePath(session.site, `/deliveries/${id}/retry`));
    message.textContent = `Delivery ${id} is being sent again.`;
    message.className = "alert success";
  } catch (error) {
    message.textContent = error.message;
    message.className = "alert error";
  }
  message.hidden = false;
  await refreshDeliveries();
}
