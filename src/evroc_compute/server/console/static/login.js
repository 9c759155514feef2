// The login: sign in with the server's OIDC issuer (when it has one), or POST a pasted token;
// either way the server answers with the session cookies.
const form = document.getElementById("login");
const error = document.getElementById("token-error");

// A sign-in the issuer or the server refused comes back here with its Status message.
const refused = new URLSearchParams(location.search).get("error");
if (refused) document.getElementById("login-error").textContent = `Sign-in refused. ${refused}`;

fetch("/console/oidc", { credentials: "same-origin", headers: { Accept: "application/json" } })
  .then((reply) => (reply.ok ? reply.json() : null))
  .then((issuer) => {
    if (!issuer) return;
    const link = document.getElementById("oidc-login");
    link.textContent = `Sign in with ${issuer.name}`;
    link.title = issuer.issuer;
    document.getElementById("oidc").classList.remove("hidden");
  })
  .catch(() => { /* no issuer to offer: tokens only */ });

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const token = form.token.value.trim();
  const reply = await fetch("/console/session", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ token }),
  });
  if (reply.ok) {
    location.assign("/console/");
    return;
  }
  let message = `${reply.status} ${reply.statusText}`;
  try {
    message = (await reply.json()).message || message;
  } catch { /* not a Status */ }
  error.textContent = message;
});
