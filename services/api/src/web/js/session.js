// Who is signed in, in this tab: a site, or a group of sites (a reading
// network), with its access token. Everything is kept in sessionStorage only, so
// it is forgotten when the tab closes; the token is only ever sent as
// `Authorization: Bearer` (see api.js).
//
// api.js imports `session` and `signOut` from here and this module calls `api`
// for the sign-in check: the two only use each other inside functions, never
// while they load, so the cycle is harmless.

import { api } from "./api.js";
import { $ } from "./format.js";

const STORAGE = {
  scope: "fxtriage.scope",
  site: "fxtriage.site",
  group: "fxtriage.group",
  groupInfo: "fxtriage.group-info",
  token: "fxtriage.token",
  reader: "fxtriage.reader",
  claimant: "fxtriage.claimant",
};

function storedGroupInfo() {
  try {
    const info = JSON.parse(sessionStorage.getItem(STORAGE.groupInfo) || "null");
    if (info && typeof info === "object" && Array.isArray(info.sites)) return info;
  } catch (error) {
    // unreadable: read again from the API
  }
  return { name: "", sites: [] };
}

const groupInfo = storedGroupInfo();

export const session = {
  // "site" (a site's token) or "group" (a reading network's token).
  scope: sessionStorage.getItem(STORAGE.scope) === "group" ? "group" : "site",
  site: sessionStorage.getItem(STORAGE.site) || "",
  group: sessionStorage.getItem(STORAGE.group) || "",
  // The group's name and its sites ({site_id, name}), as the API answered.
  groupName: groupInfo.name || "",
  sites: groupInfo.sites,
  token: sessionStorage.getItem(STORAGE.token) || "",
  reader: sessionStorage.getItem(STORAGE.reader) || "",
  // Who the API records for this tab's claims: the name typed, or what the
  // first claim answered (the token's id) when none was typed.
  claimant: sessionStorage.getItem(STORAGE.claimant) || "",
};

const hooks = { signedIn: () => {}, signedOut: () => {} };

// What to do once a sign-in is accepted (start the session) and on sign-out
// (stop the event streams, forget what is shown).
export function onSession({ signedIn, signedOut }) {
  if (signedIn) hooks.signedIn = signedIn;
  if (signedOut) hooks.signedOut = signedOut;
}

export function isGroup() {
  return session.scope === "group";
}

// The site's id, or the group's name (its id when it has none).
export function scopeLabel() {
  return isGroup() ? session.groupName || session.group : session.site;
}

export function sitePath(site, path) {
  return `/api/v1/sites/${encodeURIComponent(site)}${path}`;
}

export function groupPath(path) {
  return `/api/v1/groups/${encodeURIComponent(session.group)}${path}`;
}

// A worklist route (`/worklist...`) of what is signed in: the site's, or the
// group's merged one.
export function worklistPath(path) {
  return isGroup() ? groupPath(path) : sitePath(session.site, path);
}

// The sites whose event streams keep the page current.
export function watchedSites() {
  return isGroup() ? session.sites.map((site) => site.site_id) : [session.site];
}

// A site's name as the group lists it, else its id.
export function siteName(siteId) {
  const site = session.sites.find((candidate) => candidate.site_id === siteId);
  return (site && site.name) || siteId;
}

// The page's address of a study: `#/study/{uid}` on a site, and with the
// study's own site in a group (`#/sites/{site}/study/{uid}`).
export function studyHash(siteId, uid) {
  return isGroup() && siteId
    ? `#/sites/${encodeURIComponent(siteId)}/study/${uid}`
    : `#/study/${uid}`;
}

export function setGroupInfo(info) {
  session.groupName = (info && info.name) || "";
  session.sites = (info && Array.isArray(info.sites) ? info.sites : [])
    .filter((site) => site && typeof site.site_id === "string")
    .map((site) => ({ site_id: site.site_id, name: site.name || "" }));
  sessionStorage.setItem(
    STORAGE.groupInfo,
    JSON.stringify({ name: session.groupName, sites: session.sites }),
  );
}

export function readerBody() {
  return session.reader ? { reader: session.reader } : undefined;
}

export function rememberClaimant(item) {
  if (item && item.state === "claimed" && item.claimed_by && !session.claimant) {
    session.claimant = item.claimed_by;
    sessionStorage.setItem(STORAGE.claimant, item.claimed_by);
  }
}

// ---- the sign-in form ------------------------------------------------------

function chosenScope() {
  const checked = document.querySelector('input[name="scope"]:checked');
  return checked && checked.value === "group" ? "group" : "site";
}

// The id field follows the choice of site or group.
function showScopeChoice(scope) {
  for (const input of document.querySelectorAll('input[name="scope"]')) {
    input.checked = input.value === scope;
  }
  const group = scope === "group";
  $("login-site-label").textContent = group ? "Group id" : "Site id";
  $("login-site").placeholder = group ? "e.g. north-network" : "e.g. demo";
}

// The user chose site or group: the id field shows that one's remembered id
// (unless something else was typed).
export function switchScope(scope) {
  const field = $("login-site");
  const typed = field.value.trim();
  const other = scope === "group" ? session.site : session.group;
  if (!typed || typed === other) field.value = scope === "group" ? session.group : session.site;
  showScopeChoice(scope);
}

// Fills the form with what this tab remembers.
export function fillSignInForm() {
  showScopeChoice(session.scope);
  $("login-site").value = isGroup() ? session.group : session.site;
  $("login-reader").value = session.reader;
}

export function focusSignInForm() {
  ($("login-site").value ? $("login-token") : $("login-site")).focus();
}

// Checks `token` against the site or group `id` and, when it is accepted,
// keeps it in this tab and starts the session. Returns null, or the refusal
// ({status, message}, the message for the sign-in form to show).
export async function beginSession({ scope, id, token, reader }) {
  const noun = scope === "group" ? "group" : "site";
  Object.assign(session, { scope, token, reader, claimant: reader });
  if (scope === "group") session.group = id;
  else session.site = id;
  let group = null;
  try {
    if (scope === "group") group = await api("GET", groupPath(""));
    else await api("GET", sitePath(id, "/worklist?limit=1"));
  } catch (failure) {
    session.token = "";
    const message = failure.status === 401
      ? "This access token is not valid (unknown or revoked)."
      : failure.status === 404
        ? `The token does not belong to ${noun} “${id}”. Check the ${noun} id.`
        : failure.message;
    return { status: failure.status, message };
  }
  if (scope === "group") {
    setGroupInfo(group);
    sessionStorage.setItem(STORAGE.group, id);
  } else {
    sessionStorage.setItem(STORAGE.site, id);
  }
  sessionStorage.setItem(STORAGE.scope, scope);
  sessionStorage.setItem(STORAGE.token, token);
  sessionStorage.setItem(STORAGE.reader, reader);
  sessionStorage.setItem(STORAGE.claimant, reader);
  hooks.signedIn();
  return null;
}

// The site or group chosen in the form, and its id.
export function chosenTarget() {
  return { scope: chosenScope(), id: $("login-site").value.trim() };
}

export function showSignInError(message) {
  const error = $("login-error");
  error.textContent = message || "";
  error.hidden = !message;
}

export async function signIn(event) {
  event.preventDefault();
  const { scope, id } = chosenTarget();
  const token = $("login-token").value.trim();
  const reader = $("login-reader").value.trim();
  const noun = scope === "group" ? "group" : "site";
  showSignInError("");
  if (!id || !token) {
    showSignInError(`Enter both the ${noun} id and the access token.`);
    (id ? $("login-token") : $("login-site")).focus();
    return;
  }
  const submit = $("login-submit");
  submit.disabled = true;
  submit.textContent = "Checking…";
  let refused;
  try {
    refused = await beginSession({ scope, id, token, reader });
  } finally {
    submit.disabled = false;
    submit.textContent = "Open worklist";
  }
  if (refused) {
    showSignInError(refused.message);
    $("login-token").focus();
    return;
  }
  $("login-token").value = "";
}

export function signOut(reason) {
  session.token = "";
  session.claimant = "";
  sessionStorage.removeItem(STORAGE.token);
  sessionStorage.removeItem(STORAGE.claimant);
  hooks.signedOut();
  fillSignInForm();
  $("login-error").textContent = reason || "";
  $("login-error").hidden = !reason;
  document.title = "fxtriage · Fracture triage worklist";
  focusSignInForm();
}
