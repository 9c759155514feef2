// Virtual machines: the live table, one VM's page (conditions, events, disks, networking,
// serial console) and the create form.
import { ApiError, COMPUTE, NETWORKING, can, create, get, lines, listWatch, mergePatch, remove } from "./api.js";
import { age, badge, confirmDialog, get as at, h, section, showError, table, toast } from "./dom.js";

const vmsPath = (ns) => `${COMPUTE}/namespaces/${encodeURIComponent(ns)}/virtualmachines`;
const status = (vm) => at(vm, "status", "virtualMachineStatus") || "Pending";
const profile = (vm) => at(vm, "spec", "vmVirtualResourcesRef", "vmVirtualResourcesRefName");
const readyReason = (vm) => ((at(vm, "status", "conditions") || []).find((c) => c.type === "Ready") || {}).reason;

async function permissions(ns) {
  const [patch, del, make] = await Promise.all([
    can("patch", "compute.evroclabs.net", "virtualmachines", ns),
    can("delete", "compute.evroclabs.net", "virtualmachines", ns),
    can("create", "compute.evroclabs.net", "virtualmachines", ns)]);
  return { patch, del, make };
}

function powerButtons(vm, ns, may, onError) {
  const running = at(vm, "spec", "running") !== false;
  const name = vm.metadata.name;
  const path = `${vmsPath(ns)}/${encodeURIComponent(name)}`;
  const act = (body) => async () => {
    try { await mergePatch(path, body); } catch (error) { onError(error); }
  };
  const buttons = [];
  if (may.patch) {
    buttons.push(running
      ? h("button", { onclick: act({ spec: { running: false } }), "data-action": "stop" }, "Stop")
      : h("button", { onclick: act({ spec: { running: true } }), "data-action": "start" }, "Start"));
  }
  if (may.del) {
    buttons.push(h("button", {
      class: "danger", "data-action": "delete",
      onclick: async () => {
        if (!(await confirmDialog(`Delete virtual machine "${name}"? Its disks are kept.`))) return;
        try { await remove(path); } catch (error) { onError(error); }
      },
    }, "Delete"));
  }
  return h("span", { class: "actions" }, buttons);
}

// A hot-swap attachment's state: its Ready reason (Attached, VMNotRunning...) and message.
function attachedCell(ready) {
  return [badge(ready.reason || ready.status || "Pending"), " ", h("span", { class: "muted" }, ready.message || "")];
}

export async function vmList(view, ctx) {
  const may = await permissions(ctx.project);
  const error = h("p", { class: "error", role: "alert" });
  const body = h("div");
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Virtual machines"),
      may.make && h("a", { class: "button primary", href: `#/${encodeURIComponent(ctx.project)}/vms/+new` },
        "Create virtual machine")),
    error, body);
  const onError = (e) => showError(e, error);
  return listWatch(vmsPath(ctx.project), (items) => {
    const vms = [...items.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    body.replaceChildren(table(
      ["Name", "Status", "Reason", "Private IP", "Public IP", "Profile", "Zone", "Age", ""],
      vms.map((vm) => h("tr", { "data-vm": vm.metadata.name },
        h("td", {}, h("a", { href: `#/${encodeURIComponent(ctx.project)}/vms/${encodeURIComponent(vm.metadata.name)}` },
          vm.metadata.name)),
        h("td", { class: "status" }, badge(vm.metadata.deletionTimestamp ? "Deleting" : status(vm))),
        h("td", { class: "muted" }, readyReason(vm) || ""),
        h("td", { class: "mono" }, at(vm, "status", "networking", "privateIPv4Address") || ""),
        h("td", { class: "mono" }, at(vm, "status", "networking", "publicIPv4Address") || ""),
        h("td", {}, profile(vm) || ""),
        h("td", {}, at(vm, "status", "placement", "zone") || at(vm, "spec", "placement", "zone") || ""),
        h("td", {}, age(vm.metadata.creationTimestamp)),
        h("td", {}, powerButtons(vm, ctx.project, may, onError)))),
      `No virtual machines in project "${ctx.project}".`));
  }, (e) => showError(e, error));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function conditionsTable(conditions) {
  return table(["Type", "Status", "Reason", "Message", "Since"], (conditions || []).map((c) =>
    h("tr", {}, h("td", {}, c.type), h("td", {}, badge(c.status)), h("td", {}, c.reason || ""),
      h("td", {}, c.message || ""), h("td", {}, age(c.lastTransitionTime)))), "No conditions yet.");
}

function serialConsole(ns, name) {
  const output = h("pre", { class: "console", "data-testid": "serial-console" });
  const note = h("p", { class: "muted" });
  const controller = new AbortController();
  (async () => {
    const path = `${vmsPath(ns)}/${encodeURIComponent(name)}/console?follow=true&tailLines=500`;
    while (!controller.signal.aborted) {
      try {
        output.textContent = "";
        note.textContent = "";
        for await (const line of lines(path, controller.signal)) {
          output.append(`${line}\n`);
          output.scrollTop = output.scrollHeight;
        }
        note.textContent = "The console ended (the guest stopped).";
      } catch (error) {
        if (controller.signal.aborted) return;
        note.textContent = error.message;
      }
      await new Promise((resolve) => setTimeout(resolve, 3000));  // the next boot
    }
  })();
  return { element: h("div", {}, note, output), stop: () => controller.abort() };
}

export async function vmDetail(view, ctx) {
  const ns = ctx.project;
  const name = ctx.name;
  const may = await permissions(ns);
  const error = h("p", { class: "error", role: "alert" });
  const head = h("div", { class: "page-head" });
  const overview = h("div");
  const conditions = h("div");
  const networking = h("div");
  const disks = h("div");
  const events = h("div");
  const serial = serialConsole(ns, name);
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: `#/${encodeURIComponent(ns)}/vms` }, "Virtual machines"), " / ", name),
    head, error,
    h("div", { class: "columns" },
      section("Overview", overview), section("Networking", networking)),
    section("Conditions", conditions),
    section("Disks", disks),
    section("Events", events),
    section("Serial console", serial.element));
  const onError = (e) => showError(e, error);
  let attachments = new Map();
  let vm = null;
  const drawDisks = () => {
    if (!vm) return;
    const permanent = (at(vm, "spec", "diskRefs") || []).map((d) =>
      h("tr", {}, h("td", {}, d.name), h("td", {}, d.bootFrom ? "boot" : "permanent"), h("td", {}, "")));
    const hotswap = [...attachments.values()].filter((a) => at(a, "spec", "vmRef") === name).map((a) =>
      h("tr", {}, h("td", {}, at(a, "spec", "diskRef")), h("td", {}, "hot-swap"),
        h("td", {}, attachedCell((at(a, "status", "conditions") || []).find((c) => c.type === "Ready") || {}))));
    disks.replaceChildren(table(["Disk", "Use", "Attached"], [...permanent, ...hotswap]));
  };
  const stops = [
    serial.stop,
    listWatch(vmsPath(ns), (items) => {
      vm = items.get(`${ns}/${name}`);
      if (!vm) {
        head.replaceChildren(h("h1", {}, name), badge("Deleted"));
        return;
      }
      head.replaceChildren(h("h1", {}, name),
        h("span", { class: "status" }, badge(vm.metadata.deletionTimestamp ? "Deleting" : status(vm))),
        h("span", { class: "spacer" }), powerButtons(vm, ns, may, onError));
      overview.replaceChildren(kv([
        ["Profile", profile(vm)], ["Zone", at(vm, "status", "placement", "zone") || at(vm, "spec", "placement", "zone")],
        ["Should run", at(vm, "spec", "running") === false ? "no" : "yes"],
        ["Placement group", at(vm, "spec", "placementGroup")],
        ["Ready", readyReason(vm)], ["Created", vm.metadata.creationTimestamp]]));
      const net = at(vm, "status", "networking") || {};
      networking.replaceChildren(kv([
        ["Private IPv4", net.privateIPv4Address], ["Public IPv4", net.publicIPv4Address],
        ["SSH endpoint", net.sshEndpoint],
        ["Static public IP", at(vm, "spec", "networking", "publicIPv4Address", "static", "publicIPRef")],
        ["Security groups", (at(vm, "spec", "networking", "securityGroups", "securityGroupMemberships") || [])
          .map((g) => g.name).join(", ")]]));
      conditions.replaceChildren(conditionsTable(at(vm, "status", "conditions")));
      drawDisks();
    }, onError, `fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}`),
    listWatch(`${COMPUTE}/namespaces/${encodeURIComponent(ns)}/hotswapdiskattachments`, (items) => {
      attachments = items;
      drawDisks();
    }, () => {}),
    listWatch(`/api/v1/namespaces/${encodeURIComponent(ns)}/events`, (items) => {
      const sorted = [...items.values()].sort((a, b) =>
        (a.lastTimestamp || a.eventTime || "").localeCompare(b.lastTimestamp || b.eventTime || ""));
      events.replaceChildren(table(["Type", "Reason", "Age", "From", "Message"], sorted.map((e) =>
        h("tr", { class: e.type === "Warning" ? "warning" : "" }, h("td", {}, e.type), h("td", {}, e.reason),
          h("td", {}, age(e.lastTimestamp || e.eventTime)), h("td", {}, at(e, "source", "component") || ""),
          h("td", {}, `${e.message}${e.count > 1 ? ` (×${e.count})` : ""}`))), "No events."));
    }, onError, `fieldSelector=${encodeURIComponent(`involvedObject.kind=VirtualMachine,involvedObject.name=${name}`)}`),
  ];
  return () => stops.forEach((s) => s());
}

// ---- create ---------------------------------------------------------------------------

function field(label, input, name, hint = "") {
  return h("div", { class: "field", "data-field": name },
    h("label", {}, label, input), hint && h("p", { class: "hint" }, hint),
    h("p", { class: "field-error", role: "alert" }));
}

function gpuText(spec) {
  const gpus = spec.gpus;  // one model per profile: {model, quantity, localDisk}
  return gpus ? `${gpus.quantity}× GPU ${gpus.model.replace("nvidia.com/", "")}` : "";
}

// Show each cause beside the field it names (the longest field prefix that matches);
// what matches no field goes to the form's own message.
function showCauses(form, error, prefix, general) {
  const fields = [...form.querySelectorAll("[data-field]")];
  const unplaced = [];
  for (const cause of error.causes.length ? error.causes : [{ message: error.message }]) {
    const named = `${prefix}${cause.field || ""}`;
    const target = fields.filter((f) => cause.field && named.startsWith(f.dataset.field))
      .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
    if (target) target.querySelector(".field-error").textContent = cause.message;
    else unplaced.push(cause.message);
  }
  general.textContent = unplaced.length ? unplaced.join("; ") : error.message;
}

export async function vmCreate(view, ctx) {
  const ns = ctx.project;
  const [profiles, images, publicips, groups, placement] = await Promise.all([
    get(`${COMPUTE}/vmvirtualresources`), get(`${COMPUTE}/diskimages`),
    get(`${NETWORKING}/namespaces/${encodeURIComponent(ns)}/publicips`).catch(() => ({ items: [] })),
    get(`${NETWORKING}/namespaces/${encodeURIComponent(ns)}/securitygroups`).catch(() => ({ items: [] })),
    get(`${COMPUTE}/namespaces/${encodeURIComponent(ns)}/placementgroups`).catch(() => ({ items: [] }))]);
  const general = h("p", { class: "error", role: "alert" });
  const sizeOf = (image) => at(images.items.find((i) => i.metadata.name === image), "spec", "defaultDiskSize", "amount");
  const diskSize = h("input", { name: "diskSize", type: "number", min: "1" });
  const imageSelect = h("select", { name: "image", onchange: () => { diskSize.value = sizeOf(imageSelect.value) || ""; } },
    images.items.map((i) => h("option", { value: i.metadata.name }, at(i, "spec", "displayName") || i.metadata.name)));
  diskSize.value = sizeOf(imageSelect.value) || "";
  const profileSelect = h("select", { name: "profile" }, profiles.items.map((p) => {
    const s = p.spec;
    const gpus = gpuText(s);
    return h("option", { value: p.metadata.name },
      `${p.metadata.name} — ${s.vcpu} vCPU, ${s.memory.amount} ${s.memory.unit}${gpus ? `, ${gpus}` : ""}`);
  }));
  const form = h("form", { class: "form", novalidate: true },
    field("Name", h("input", { name: "name", required: true, autocomplete: "off" }), "metadata.name",
      "Lower-case letters, digits and '-'. The boot disk is NAME-boot."),
    field("Profile", profileSelect, "spec.vmVirtualResourcesRef"),
    field("Image", imageSelect, "disk:spec.diskImage"),
    field("Boot disk size (GB)", diskSize, "disk:spec.diskSize"),
    field("SSH public keys", h("textarea", { name: "sshKeys", rows: "3", spellcheck: "false" }),
      "spec.osSettings.ssh", "One key per line, as in authorized_keys."),
    field("Cloud-init user data (optional)", h("textarea", { name: "cloudInit", rows: "4", spellcheck: "false" }),
      "spec.osSettings.cloudInitUserData"),
    field("Static public IP", h("select", { name: "publicIP" }, h("option", { value: "" }, "none"),
      publicips.items.map((p) => h("option", { value: p.metadata.name },
        `${p.metadata.name} ${at(p, "status", "publicIPv4Address") || ""}`))), "spec.networking.publicIPv4Address"),
    field("Security groups", h("div", { class: "checks" }, groups.items.length ? groups.items.map((g) =>
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "sg", value: g.metadata.name }), g.metadata.name))
      : h("span", { class: "muted" }, "none in this project")), "spec.networking.securityGroups"),
    field("Placement group", h("select", { name: "placementGroup" }, h("option", { value: "" }, "none"),
      placement.items.map((p) => h("option", { value: p.metadata.name }, p.metadata.name))), "spec.placementGroup"),
    general,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create"),
      h("a", { class: "button", href: `#/${encodeURIComponent(ns)}/vms` }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    general.textContent = "";
    const value = (n) => form.elements[n].value.trim();
    const name = value("name");
    const keys = value("sshKeys").split("\n").map((k) => k.trim()).filter(Boolean);
    const spec = {
      running: true,
      vmVirtualResourcesRef: { vmVirtualResourcesRefName: value("profile") },
      diskRefs: [{ name: `${name}-boot`, bootFrom: true }],
      osSettings: { ssh: { authorizedKeys: keys.map((k) => ({ value: k })) } },
    };
    if (value("cloudInit")) spec.osSettings.cloudInitUserData = form.elements.cloudInit.value;
    const groupNames = [...form.querySelectorAll("input[name=sg]:checked")].map((c) => c.value);
    if (value("publicIP") || groupNames.length) {
      spec.networking = {};
      if (value("publicIP")) spec.networking.publicIPv4Address = { static: { publicIPRef: value("publicIP") } };
      if (groupNames.length) spec.networking.securityGroups = { securityGroupMemberships: groupNames.map((n) => ({ name: n })) };
    }
    if (value("placementGroup")) spec.placementGroup = value("placementGroup");
    const vm = { apiVersion: "compute.evroclabs.net/v1alpha1", kind: "VirtualMachine", metadata: { name }, spec };
    const disk = {
      apiVersion: "compute.evroclabs.net/v1alpha1", kind: "Disk", metadata: { name: `${name}-boot` },
      spec: { diskImage: { diskImageRef: { name: value("image") } } },
    };
    if (value("diskSize")) disk.spec.diskSize = { amount: Number(value("diskSize")), unit: "GB" };
    const disksPath = `${COMPUTE}/namespaces/${encodeURIComponent(ns)}/disks`;
    let step = "";
    try {
      // Validate both first (dryRun), so a refused VM leaves no disk behind.
      step = "";
      await create(vmsPath(ns), vm, "?dryRun=All&fieldValidation=Strict");
      step = "disk:";
      await create(disksPath, disk, "?dryRun=All&fieldValidation=Strict");
      await create(disksPath, disk);
      step = "";
      await create(vmsPath(ns), vm);
      toast(`Virtual machine "${name}" created.`);
      ctx.go("vms", name);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showCauses(form, error, step, general);
    }
  });
  view.append(h("p", { class: "crumbs" }, h("a", { href: `#/${encodeURIComponent(ns)}/vms` }, "Virtual machines"), " / new"),
    h("h1", {}, "Create a virtual machine"), form);
}
