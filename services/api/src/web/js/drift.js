// The admins' banner when a model's scores at this site have drifted from its
// registered reference (the population stability index of the last 7 days
// above its threshold, with enough images to judge). Other roles get 403 from
// the API: the banner stays hidden for them, as it does for a group's page.

import { api } from "./api.js";
import { $ } from "./format.js";
import { isGroup, session, sitePath } from "./session.js";

export async function refreshDriftBanner() {
  const banner = $("drift-banner");
  // Hidden until this session's answer says otherwise (after a sign-out, the
  // next person must not see the last one's banner).
  banner.hidden = true;
  if (!session.token || isGroup()) return;
  let answer;
  try {
    answer = await api("GET", sitePath(session.site, "/drift-alerts"));
  } catch (error) {
    banner.hidden = true;
    return;
  }
  const drifted = answer.models.filter((model) => model.drifted);
  if (!drifted.length) {
    banner.hidden = true;
    return;
  }
  const each = drifted.map(
    (model) =>
      `${model.model}: index ${model.psi.toFixed(2)} over ${model.images} images against its reference (${model.reference_data})`,
  );
  banner.textContent =
    `The AI's scores here have drifted from what the model was measured on (last ${answer.window_days} days, ` +
    `threshold ${answer.threshold}): ${each.join("; ")}. ` +
    "Check its accuracy on this site's patients (Monitoring) before relying on its results.";
  banner.hidden = false;
}
