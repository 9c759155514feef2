// The login: POST the pasted token; the server answers with the session cookies.
const form = document.getElementById("login");
const error = document.getElementById("token-error");

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
