// Sign-in with --auth oidc: the authorization code flow with PKCE against the node's issuer, as
// a public client. The access token lives in this module's memory only (a reload signs out);
// only the PKCE verifier and state survive the redirect, in sessionStorage.
const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";
export const issuer = meta("kizuna-issuer");
const clientId = meta("kizuna-client-id");
const PENDING = "kizuna-pkce";
let access = null;
let claims = null;

export function token() { return access; }
export function user() { return claims; }

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function redirectUri() { return `${location.origin}/console`; }

async function metadata() {
  const response = await fetch(`${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
  if (!response.ok) throw new Error(`issuer metadata: HTTP ${response.status}`);
  return response.json();
}

export async function signIn() {
  const config = await metadata();
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, hash: location.hash }));
  const query = new URLSearchParams({
    response_type: "code", client_id: clientId, redirect_uri: redirectUri(), scope: "openid",
    code_challenge: challenge, code_challenge_method: "S256", state,
  });
  location.assign(`${config.authorization_endpoint}?${query}`);
}

function decode(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return null;
  }
}

// Back from the issuer with ?code=…&state=…: trade the code for a token, forget the query.
export async function completeSignIn() {
  const query = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  if (!issuer || !query.has("code") || !pending) return false;
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `/console${pending.hash || ""}`);
  if (query.get("state") !== pending.state) throw new Error("sign-in: the state does not match");
  const config = await metadata();
  const response = await fetch(config.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: query.get("code"), redirect_uri: redirectUri(),
      client_id: clientId, code_verifier: pending.verifier,
    }),
  });
  if (!response.ok) throw new Error(`sign-in: the issuer answered ${response.status}`);
  const answer = await response.json();
  access = answer.access_token;
  claims = decode(answer.id_token || access);
  return true;
}
