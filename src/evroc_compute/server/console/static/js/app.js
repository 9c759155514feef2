// The console's frame: who is signed in, the project switcher, the menu and the router.
// Routes are #/PROJECT/PAGE[/NAME]; each page returns a function that stops its watches.
import { ApiError, get, request } from "./api.js";
import { h, showError, toast } from "./dom.js";
import { vmCreate, vmDetail, vmList } from "./vms.js";
import { disks, fleet, placementGroups, publicIPs, quotas, securityGroups } from "./resources.js";

const PAGES = [
  ["vms", "Virtual machines", vmList],
  ["disks", "Disks", disks],
  ["publicips", "Public IPs", publicIPs],
  ["securitygroups", "Security groups", securityGroups],
  ["placementgroups", "Placement groups", placementGroups],
  ["quotas", "Quotas", quotas],
  ["fleet", "Fleet", fleet],
];

let stop = () => {};
let rendering = 0;
let me = null;

function route() {
  const [project = "", page = "vms", name = ""] = location.hash.replace(/^#\/?/, "").split("/");
  return { project: decodeURIComponent(project), page, name: decodeURIComponent(name) };
}

export function go(project, page = "vms", name = "") {
  location.hash = `#/${encodeURIComponent(project)}/${page}${name ? `/${encodeURIComponent(name)}` : ""}`;
}

async function projects() {
  try {
    const list = await get("/api/v1/namespaces");
    return list.items.map((ns) => ns.metadata.name);
  } catch (error) {
    if (error instanceof ApiError && error.status.code === 403) return null;  // type it instead
    throw error;
  }
}

async function renderNav(project, page) {
  const nav = document.getElementById("nav");
  nav.replaceChildren(...PAGES.map(([id, title]) =>
    h("a", { href: `#/${encodeURIComponent(project)}/${id}`, class: id === page ? "active" : "" }, title)));
}

async function render() {
  stop();
  stop = () => {};
  const { project, page, name } = route();
  if (!project) {
    go(localStorage.getItem("evroc-project") || "default");
    return;
  }
  localStorage.setItem("evroc-project", project);
  const select = document.getElementById("project");
  if ([...select.options].some((o) => o.value === project)) select.value = project;
  else document.getElementById("project-typed").value = project;
  renderNav(project, page);
  // Each page draws into a container of its own: a page still loading when the user moves
  // on draws into a detached one, and its watches are stopped as soon as it returns.
  const view = h("div");
  document.getElementById("view").replaceChildren(view);
  const generation = ++rendering;
  const ctx = { project, name, me, go: (p, n) => go(project, p, n) };
  let render = PAGES.find(([id]) => id === page)?.[2] || vmList;
  if (page === "vms" && name === "+new") render = vmCreate;
  else if (page === "vms" && name) render = vmDetail;
  try {
    const stopPage = (await render(view, ctx)) || (() => {});
    if (generation === rendering) stop = stopPage;
    else stopPage();
  } catch (error) {
    view.append(h("p", { class: "error" }, error.message));
    showError(error);
  }
}

async function start() {
  try {
    const session = await request("GET", "/console/session");
    me = session.user;
  } catch {
    location.assign("/console/login");
    return;
  }
  document.getElementById("user").textContent = me.username;
  document.getElementById("logout").addEventListener("click", async () => {
    await request("DELETE", "/console/session").catch(() => {});
    location.assign("/console/login");
  });
  const select = document.getElementById("project");
  const typed = document.getElementById("project-typed");
  const names = await projects().catch((error) => { toast(error.message); return null; });
  if (names) {
    const current = route().project;
    if (current && !names.includes(current)) names.push(current);
    select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    select.addEventListener("change", () => go(select.value, route().page));
  } else {  // the user may not list projects: they type the one they work in
    select.classList.add("hidden");
    typed.classList.remove("hidden");
    typed.addEventListener("change", () => go(typed.value.trim(), route().page));
  }
  window.addEventListener("hashchange", render);
  render();
}

start();
