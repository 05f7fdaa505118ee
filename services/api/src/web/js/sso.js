// Sign-in through the deployment's identity provider (OpenID Connect, the
// authorisation-code flow with PKCE, RFC 7636), offered when the server has
// one configured (`GET /api/v1/auth/config`):
//
// 1. "Sign in with your organisation's account" makes a random code verifier,
//    state and nonce, keeps them (and the site or group chosen) in this tab's
//    sessionStorage, and sends the browser to the provider with the verifier's
//    SHA-256 challenge.
// 2. The provider sends the person back here with `?code=...&state=...`. The
//    state must be the one kept; the code, the verifier and the nonce go to
//    `POST /api/v1/auth/token`, which exchanges the code at the provider
//    (server to server) and answers the verified ID token.
// 3. That token is then this tab's bearer token, like a pasted access token,
//    and is forgotten when the tab closes; when it expires the API answers 401
//    and the tab is signed out.

import { $ } from "./format.js";
import { beginSession, chosenTarget, showSignInError } from "./session.js";

const PENDING = "fxtriage.sign-in";

let provider = null;

function base64url(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

async function challengeOf(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

// Where the provider sends the person back: this page, without query or hash.
function redirectUri() {
  return `${location.origin}${location.pathname}`;
}

async function startSignIn() {
  const { scope, id } = chosenTarget();
  if (!id) {
    showSignInError(`Enter the ${scope === "group" ? "group" : "site"} id first.`);
    $("login-site").focus();
    return;
  }
  const verifier = randomText(32);
  const pending = { verifier, state: randomText(16), nonce: randomText(16), scope, id };
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  const query = new URLSearchParams({
    response_type: "code",
    client_id: provider.client_id,
    redirect_uri: redirectUri(),
    scope: provider.scope,
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await challengeOf(verifier),
    code_challenge_method: "S256",
  });
  const endpoint = provider.authorization_endpoint;
  location.assign(`${endpoint}${endpoint.includes("?") ? "&" : "?"}${query}`);
}

// The provider sent the person back: finish the sign-in. Returns whether this
// page load was such a return.
async function finishSignIn() {
  const returned = new URLSearchParams(location.search);
  if (!returned.has("code") && !returned.has("error")) return false;
  // The code is for one use; never leave it in the address bar or history.
  history.replaceState(null, "", `${location.pathname}${location.hash}`);
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  } catch (error) {
    pending = null;
  }
  sessionStorage.removeItem(PENDING);
  if (returned.has("error")) {
    showSignInError(`The identity provider did not sign you in (${returned.get("error")}).`);
    return true;
  }
  if (!pending || returned.get("state") !== pending.state) {
    showSignInError("This sign-in was not started from this tab. Sign in again.");
    return true;
  }
  let answer;
  try {
    const response = await fetch("/api/v1/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      cache: "no-store",
      body: JSON.stringify({
        code: returned.get("code"),
        code_verifier: pending.verifier,
        redirect_uri: redirectUri(),
        nonce: pending.nonce,
      }),
    });
    answer = await response.json().catch(() => null);
    if (!response.ok) {
      showSignInError(
        response.status === 401
          ? "The identity provider's sign-in could not be completed. Sign in again."
          : (answer && answer.message) || `The server answered ${response.status}.`,
      );
      return true;
    }
  } catch (error) {
    showSignInError("The server cannot be reached; check the connection.");
    return true;
  }
  const refused = await beginSession({
    scope: pending.scope,
    id: pending.id,
    token: answer.token,
    reader: "",
  });
  if (refused) {
    showSignInError(
      refused.status === 401
        ? `You are signed in as ${answer.name}, but no role in fxtriage is given to your account. Ask an administrator.`
        : refused.message,
    );
  }
  return true;
}

// Offers the provider's sign-in when one is configured, and finishes a
// sign-in the provider sent back. Resolves once done.
export async function setUpSingleSignOn() {
  try {
    const response = await fetch("/api/v1/auth/config", { cache: "no-store" });
    const config = response.ok ? await response.json() : null;
    provider = config && config.sign_in;
  } catch (error) {
    provider = null;
  }
  $("sso").hidden = !provider;
  // What the form offers, for people's assistive tools and the page's tests.
  $("login-form").dataset.offers = provider ? "provider-and-token" : "token";
  if (provider) {
    $("login-sso").addEventListener("click", startSignIn);
    await finishSignIn();
  } else if (new URLSearchParams(location.search).has("code")) {
    history.replaceState(null, "", `${location.pathname}${location.hash}`);
    showSignInError("Single sign-on cannot be reached now. Sign in again later, or with an access token.");
  }
}
