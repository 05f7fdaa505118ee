// The fxtriage reading worklist: plain JavaScript modules, no framework, no
// build step. This one starts the page and routes between its views:
//
//   #/                          the worklist (a site's, or a group's merged)
//   #/study/{uid}               a study of the signed-in site
//   #/sites/{site}/study/{uid}  a study of one of the signed-in group's sites
//
// Every call to the API sends the token as `Authorization: Bearer`; the token
// lives in this tab's sessionStorage only. The live event streams are read with
// fetch() and a stream reader (EventSource cannot send the header), and each
// change re-reads the worklist. Images are fetched with the header too and shown
// from blob: URLs. Text from the server is only ever set as textContent.

import { api } from "./api.js";
import { refreshAnalytics } from "./analytics.js";
import { refreshDeliveries } from "./deliveries.js";
import { refreshDiscrepancies, watchDiscrepancyFilter } from "./discrepancies.js";
import { refreshDriftBanner } from "./drift.js";
import { startEvents, stopEvents } from "./events.js";
import { $ } from "./format.js";
import {
  fillSignInForm,
  focusSignInForm,
  groupPath,
  isGroup,
  onSession,
  scopeLabel,
  session,
  setGroupInfo,
  signIn,
  signOut,
  switchScope,
  watchedSites,
} from "./session.js";
import { setUpSingleSignOn } from "./sso.js";
import { closeStudy, openStudy, refreshStudy, studyAction, tickStudy } from "./study.js";
import {
  claimNext,
  firstPage,
  refreshWorklist,
  resetWorklist,
  scheduleRefresh,
  showMoreStudies,
  tickWorklist,
} from "./worklist.js";

const REFRESH_DELAY_MS = 250;
const STUDY_HASH = /^#\/(?:study|sites\/[^/]+\/study)\//;

function showView(name) {
  for (const view of ["login", "worklist", "study"]) {
    $(`${view}-view`).hidden = view !== name;
  }
  $("session").hidden = name === "login";
}

// The study a hash names, with its site: a site's own studies have none in the
// hash; a group's always do.
function studyTarget(hash) {
  let match = /^#\/study\/([0-9.]+)$/.exec(hash);
  if (match) return isGroup() ? null : { site: session.site, uid: match[1] };
  match = /^#\/sites\/([a-z0-9-]+)\/study\/([0-9.]+)$/.exec(hash);
  if (match) return { site: match[1], uid: match[2] };
  return null;
}

function route() {
  if (!session.token) {
    showView("login");
    return;
  }
  const target = studyTarget(location.hash);
  if (target) {
    showView("study");
    openStudy(target.site, target.uid);
    $("main").focus({ preventScroll: true });
    return;
  }
  closeStudy();
  showView("worklist");
  document.title = `Worklist · ${scopeLabel()} · fxtriage`;
  refreshWorklist();
  refreshDeliveries();
  refreshDiscrepancies();
  refreshDriftBanner();
  refreshAnalytics();
}

function showSessionHeader() {
  $("session-scope").textContent = isGroup() ? "Group" : "Site";
  $("session-site").textContent = scopeLabel();
  if (isGroup() && session.groupName) $("session-site").title = session.group;
  else $("session-site").removeAttribute("title");
}

// One event stream per watched site; each change re-reads the worklist and,
// when it may concern it, the study shown.
function watch() {
  startEvents(watchedSites(), {
    ready(site) {
      // Whatever changed while the stream was down is in a fresh read.
      scheduleRefresh(0);
      refreshStudy(site, null);
    },
    change(site, change) {
      scheduleRefresh(REFRESH_DELAY_MS);
      refreshStudy(site, change);
    },
    resync(site) {
      scheduleRefresh(0);
      refreshStudy(site, null);
    },
  });
}

// A group's name and sites as they are now (the tab remembers those of the
// sign-in): a site added or removed changes which streams are read.
async function reloadGroup() {
  try {
    const info = await api("GET", groupPath(""));
    if (!session.token || !isGroup()) return;
    const before = watchedSites().join(" ");
    setGroupInfo(info);
    showSessionHeader();
    if (!$("worklist-view").hidden) document.title = `Worklist · ${scopeLabel()} · fxtriage`;
    if (watchedSites().join(" ") !== before) watch();
    scheduleRefresh(0);
  } catch (error) {
    // A refused token has signed the tab out; otherwise keep what is remembered.
  }
}

function startSession({ signedIn }) {
  showSessionHeader();
  firstPage();
  watch();
  if (!STUDY_HASH.test(location.hash)) location.hash = "#/";
  route();
  if (isGroup() && !signedIn) reloadGroup();
}

function start() {
  onSession({
    signedIn: () => startSession({ signedIn: true }),
    signedOut: () => {
      stopEvents();
      closeStudy();
      resetWorklist();
      showView("login");
    },
  });
  $("login-form").addEventListener("submit", signIn);
  for (const choice of document.querySelectorAll('input[name="scope"]')) {
    choice.addEventListener("change", () => switchScope(choice.value));
  }
  $("sign-out").addEventListener("click", () => signOut(""));
  $("claim-next").addEventListener("click", claimNext);
  $("study-next").addEventListener("click", claimNext);
  $("claim-button").addEventListener("click", () => studyAction("claim"));
  $("release-button").addEventListener("click", () => studyAction("release"));
  $("report-button").addEventListener("click", () => studyAction("report"));
  $("show-more").addEventListener("click", showMoreStudies);
  watchDiscrepancyFilter();
  for (const filter of ["filter-urgency", "filter-ai"]) {
    $(filter).addEventListener("change", () => {
      firstPage();
      refreshWorklist();
    });
  }
  window.addEventListener("hashchange", route);
  setInterval(() => {
    if (!$("worklist-view").hidden) tickWorklist();
    if (!$("study-view").hidden) tickStudy();
  }, 1000);

  if (session.token) {
    startSession({ signedIn: false });
  } else {
    fillSignInForm();
    showView("login");
    focusSignInForm();
  }
  setUpSingleSignOn();
}

start();
