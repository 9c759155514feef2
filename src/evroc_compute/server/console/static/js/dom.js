// Building the page: elements from data (text is always text, never parsed as HTML).

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function age(timestamp) {
  if (!timestamp) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (seconds < 120) return `${Math.floor(seconds)}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

export function badge(text) {
  const tone = {
    Running: "ok", Ready: "ok", True: "ok", Active: "ok", Bound: "ok", Attached: "ok",
    Stopped: "idle", False: "idle", Stopping: "busy", Starting: "busy", Provisioning: "busy", Creating: "busy",
    Migrating: "busy", Scheduling: "busy", Deleting: "busy",
  }[text] || (/(Error|Fail|BackOff|Crash|Unknown|Paused|Unschedulable|Lost)/.test(text || "") ? "bad" : "idle");
  return h("span", { class: `badge ${tone}` }, text || "—");
}

export function table(headers, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

export function section(title, ...body) {
  return h("section", { class: "card" }, h("h2", {}, title), ...body);
}

export function statusMessage(error) {
  return error && error.status ? `${error.status.reason}: ${error.message}` : String(error);
}

export function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.classList.remove("hidden");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.add("hidden"), 8000);
}

// Show a refusal's Status where the user acted, and in the toast.
export function showError(error, where) {
  const text = statusMessage(error);
  if (where) where.textContent = text;
  toast(text);
}

export function confirmDialog(question) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm" },
      h("p", {}, question),
      h("div", { class: "actions" },
        h("button", { class: "danger", onclick: () => { dialog.close(); resolve(true); } }, "Delete"),
        h("button", { onclick: () => { dialog.close(); resolve(false); } }, "Cancel")));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export const get = (obj, ...path) => path.reduce((o, k) => (o == null ? undefined : o[k]), obj);
