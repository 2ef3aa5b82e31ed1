// The JSON API with the session cookie: state-changing calls carry the session's CSRF token.

export const session = { user: null, csrf: null };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when the server says the session is gone (401). */
export let onSignedOut = () => {};
export function setSignedOutHandler(f) { onSignedOut = f; }

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  let res;
  try {
    res = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "unreachable", "the server cannot be reached");
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    if (res.status === 401 && !path.startsWith("/console/session")) onSignedOut();
    throw new ApiError(res.status, data.error || "error", data.message || res.statusText);
  }
  return data;
}

/** Who is signed in (and the CSRF token), or null. */
export async function loadSession() {
  try {
    const s = await api("/console/session");
    Object.assign(session, { user: s.user, csrf: s.csrf });
    return s;
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

export async function signIn(token) {
  const s = await api("/console/session", { method: "POST", body: { token } });
  Object.assign(session, { user: s.user, csrf: s.csrf });
  return s;
}

export async function signOut() {
  await api("/console/session", { method: "DELETE" }).catch(() => {});
  Object.assign(session, { user: null, csrf: null });
}

export function decide(request, body) {
  return api(`/api/requests/${encodeURIComponent(request)}/decision`, { method: "POST", body });
}
