// Calls to `/api/v1`: JSON in and out, the token as `Authorization: Bearer`
// (never in a URL), and the server's error message kept for the page to show.
// A 401 (the token is unknown or was revoked) signs the tab out.

import { session, signOut } from "./session.js";

export class ApiError extends Error {
  constructor(status, kind, message, body) {
    super(message);
    this.status = status;
    this.kind = kind;
    this.body = body;
  }
}

// The headers of every authenticated request.
export function authHeaders(accept) {
  const headers = { Authorization: `Bearer ${session.token}` };
  if (accept) headers.Accept = accept;
  return headers;
}

export const UNAUTHORIZED_MESSAGE =
  "The access token was refused (unknown or revoked). Sign in again.";

// `path` is absolute: `/api/v1/...` (see sitePath and groupPath in session.js).
// Resolves to the JSON answer, or null for 204 No Content.
export async function api(method, path, body) {
  const headers = authHeaders("application/json");
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
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
    if (response.status === 401 && session.token) signOut(UNAUTHORIZED_MESSAGE);
    throw error;
  }
  return payload;
}
