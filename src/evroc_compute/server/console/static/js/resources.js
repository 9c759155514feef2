// What VMs use: disks (with hot-swap attach/detach), public IPs, security groups (rule
// editor), placement groups; quotas; and the fleet of hosts for admins.
import { ApiError, COMPUTE, INFRA, NETWORKING, can, create, get, listWatch, mergePatch, remove } from "./api.js";
import { age, badge, confirmDialog, get as at, h, section, showError, table, toast } from "./dom.js";

const nsPath = (api, ns, plural) => `${api}/namespaces/${encodeURIComponent(ns)}/${plural}`;
const ready = (o) => ((at(o, "status", "conditions") || []).find((c) => c.type === "Ready") || {});

function deleteButton(path, what, onError) {
  return h("button", {
    class: "danger", "data-action": "delete",
    onclick: async () => {
      if (!(await confirmDialog(`Delete ${what}?`))) return;
      try { await remove(path); } catch (error) { onError(error); }
    },
  }, "Delete");
}

// A page listing one namespaced kind live, with a small create form above it.
async function listPage(view, ctx, { title, api, group, plural, kind, columns, form, actions }) {
  const ns = ctx.project;
  const [mayCreate, mayDelete] = await Promise.all([
    can("create", group, plural, ns), can("delete", group, plural, ns)]);
  const error = h("p", { class: "error", role: "alert" });
  const body = h("div");
  view.append(h("div", { class: "page-head" }, h("h1", {}, title)), error);
  const onError = (e) => showError(e, error);
  if (mayCreate && form) view.append(form(onError));
  view.append(body);
  return listWatch(nsPath(api, ns, plural), (items) => {
    const rows = [...items.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    body.replaceChildren(table([...columns.map(([t]) => t), "Age", ""], rows.map((o) =>
      h("tr", { "data-name": o.metadata.name }, columns.map(([, cell]) => h("td", {}, cell(o))),
        h("td", {}, age(o.metadata.creationTimestamp)),
        h("td", { class: "actions" }, actions ? actions(o, onError) : null,
          mayDelete && deleteButton(`${nsPath(api, ns, plural)}/${encodeURIComponent(o.metadata.name)}`,
            `${kind} "${o.metadata.name}"`, onError)))), `No ${title.toLowerCase()} in project "${ns}".`));
  }, onError);
}

function inlineForm(fields, submit, label = "Create") {
  const form = h("form", { class: "inline-form" }, fields, h("button", { type: "submit", class: "primary" }, label));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await submit(form);
  });
  return form;
}

export function disks(view, ctx) {
  const ns = ctx.project;
  const path = nsPath(COMPUTE, ns, "disks");
  const hdaPath = nsPath(COMPUTE, ns, "hotswapdiskattachments");
  return listPage(view, ctx, {
    title: "Disks", api: COMPUTE, group: "compute.evroclabs.net", plural: "disks", kind: "disk",
    columns: [
      ["Name", (d) => d.metadata.name], ["Ready", (d) => badge(ready(d).reason || ready(d).status)],
      ["Image", (d) => at(d, "spec", "diskImage", "diskImageRef", "name") || "blank"],
      ["Size", (d) => { const s = at(d, "status", "diskSize") || at(d, "spec", "diskSize"); return s ? `${s.amount} ${s.unit}` : ""; }],
      ["Zone", (d) => at(d, "status", "placement", "zone") || at(d, "spec", "placement", "zone") || ""],
      ["Used by", (d) => (at(d, "status", "diskUsage") || []).map((u) => `${u.vm} (${u.useKind})`).join(", ")],
    ],
    form: (onError) => inlineForm([
      h("input", { name: "name", placeholder: "name", required: true }),
      h("input", { name: "size", type: "number", min: "1", placeholder: "size GB", required: true }),
    ], async (form) => {
      try {
        await create(path, { apiVersion: "compute.evroclabs.net/v1alpha1", kind: "Disk",
          metadata: { name: form.elements.name.value.trim() },
          spec: { diskSize: { amount: Number(form.elements.size.value), unit: "GB" } } });
        form.reset();
      } catch (error) { onError(error); }
    }, "Create blank disk"),
    actions: (d, onError) => {
      const usage = at(d, "status", "diskUsage") || [];
      const hot = usage.find((u) => u.useKind === "hotswap");
      if (hot) {
        return h("button", { "data-action": "detach", onclick: async () => {
          try { await remove(`${hdaPath}/${encodeURIComponent(hot.attachment)}`); } catch (e) { onError(e); }
        } }, `Detach from ${hot.vm}`);
      }
      if (usage.length) return null;
      const vm = h("input", { placeholder: "VM name", "aria-label": `VM to attach ${d.metadata.name} to`, size: "10" });
      return h("span", {}, vm, h("button", { "data-action": "attach", onclick: async () => {
        try {
          await create(hdaPath, { apiVersion: "compute.evroclabs.net/v1alpha1", kind: "HotswapDiskAttachment",
            metadata: { name: `${d.metadata.name}-${vm.value.trim()}` },
            spec: { vmRef: vm.value.trim(), diskRef: d.metadata.name } });
          toast(`Attaching disk "${d.metadata.name}" to "${vm.value.trim()}".`);
        } catch (e) { onError(e); }
      } }, "Attach"));
    },
  });
}

export function publicIPs(view, ctx) {
  const path = nsPath(NETWORKING, ctx.project, "publicips");
  return listPage(view, ctx, {
    title: "Public IPs", api: NETWORKING, group: "networking.evroclabs.net", plural: "publicips", kind: "public IP",
    columns: [["Name", (p) => p.metadata.name], ["Address", (p) => at(p, "status", "publicIPv4Address") || ""],
      ["Ready", (p) => badge(ready(p).reason || ready(p).status)], ["Used by", (p) => at(p, "status", "usedBy") || ""]],
    form: (onError) => inlineForm([h("input", { name: "name", placeholder: "name", required: true })], async (form) => {
      try {
        await create(path, { apiVersion: "networking.evroclabs.net/v1alpha1", kind: "PublicIP",
          metadata: { name: form.elements.name.value.trim() }, spec: {} });
        form.reset();
      } catch (error) { onError(error); }
    }, "Allocate"),
  });
}

function rulesEditor(group, path, onError) {
  const rows = h("tbody");
  const addRow = (rule = {}) => {
    const remote = rule.remote || { address: "0.0.0.0/0" };
    const tr = h("tr", {},
      h("td", {}, h("input", { name: "rule-name", value: rule.name || "", size: "10" })),
      h("td", {}, h("select", { name: "direction" }, ["Ingress", "Egress"].map((d) =>
        h("option", { value: d, selected: d === (rule.direction || "Ingress") }, d)))),
      h("td", {}, h("select", { name: "protocol" }, ["TCP", "UDP", "ICMP", "All"].map((p) =>
        h("option", { value: p, selected: p === (rule.protocol || "TCP") }, p)))),
      h("td", {}, h("input", { name: "port", type: "number", value: rule.port ?? "", size: "5" })),
      h("td", {}, h("input", { name: "endPort", type: "number", value: rule.endPort ?? "", size: "5" })),
      h("td", {}, h("input", { name: "remote", value: JSON.stringify(remote), size: "28", class: "mono" })),
      h("td", {}, h("button", { type: "button", onclick: () => tr.remove() }, "Remove")));
    rows.append(tr);
  };
  (at(group, "spec", "rules") || []).forEach(addRow);
  const message = h("p", { class: "error", role: "alert" });
  const save = async () => {
    message.textContent = "";
    try {
      const rules = [...rows.children].map((tr) => {
        const v = (n) => tr.querySelector(`[name=${n}]`).value.trim();
        const rule = { name: v("rule-name"), direction: v("direction"), protocol: v("protocol"), remote: JSON.parse(v("remote") || "{}") };
        if (v("port")) rule.port = Number(v("port"));
        if (v("endPort")) rule.endPort = Number(v("endPort"));
        return rule;
      });
      await mergePatch(path, { spec: { rules } });
      toast(`Security group "${group.metadata.name}" saved.`);
    } catch (error) {
      showError(error, message);
      if (!(error instanceof ApiError)) onError(error);
    }
  };
  return h("div", { class: "rules", "data-group": group.metadata.name },
    h("table", { class: "grid" }, h("thead", {}, h("tr", {}, ["Name", "Direction", "Protocol", "Port", "End port", "Remote (JSON)", ""].map((t) => h("th", {}, t)))), rows),
    message,
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => addRow() }, "Add rule"),
      h("button", { type: "button", class: "primary", onclick: save }, "Save rules")));
}

export async function securityGroups(view, ctx) {
  const path = nsPath(NETWORKING, ctx.project, "securitygroups");
  const editor = h("div");
  const stop = await listPage(view, ctx, {
    title: "Security groups", api: NETWORKING, group: "networking.evroclabs.net", plural: "securitygroups", kind: "security group",
    columns: [["Name", (g) => g.metadata.name], ["Rules", (g) => String((at(g, "spec", "rules") || []).length)]],
    form: (onError) => inlineForm([h("input", { name: "name", placeholder: "name", required: true })], async (form) => {
      try {
        await create(path, { apiVersion: "networking.evroclabs.net/v1alpha1", kind: "SecurityGroup",
          metadata: { name: form.elements.name.value.trim() }, spec: { rules: [] } });
        form.reset();
      } catch (error) { onError(error); }
    }),
    actions: (g, onError) => h("button", { "data-action": "edit", onclick: async () => {
      const fresh = await get(`${path}/${encodeURIComponent(g.metadata.name)}`);
      editor.replaceChildren(section(`Rules of ${g.metadata.name}`,
        rulesEditor(fresh, `${path}/${encodeURIComponent(g.metadata.name)}`, onError)));
    } }, "Edit rules"),
  });
  view.append(editor);
  return stop;
}

export function placementGroups(view, ctx) {
  const path = nsPath(COMPUTE, ctx.project, "placementgroups");
  return listPage(view, ctx, {
    title: "Placement groups", api: COMPUTE, group: "compute.evroclabs.net", plural: "placementgroups", kind: "placement group",
    columns: [["Name", (p) => p.metadata.name], ["Strategy", (p) => at(p, "spec", "strategy", "type") || ""],
      ["Zone", (p) => at(p, "status", "placement", "zone") || at(p, "spec", "placement", "zone") || ""],
      ["Members", (p) => (at(p, "status", "virtualMachines") || []).map((v) => v.name).join(", ")]],
    form: (onError) => inlineForm([h("input", { name: "name", placeholder: "name", required: true })], async (form) => {
      try {
        await create(path, { apiVersion: "compute.evroclabs.net/v1alpha1", kind: "PlacementGroup",
          metadata: { name: form.elements.name.value.trim() }, spec: { strategy: { type: "spread" } } });
        form.reset();
      } catch (error) { onError(error); }
    }),
  });
}

// What a quota's resource is, in words: "vCPUs", "Virtual machines"... (the name stays beside it).
const QUOTA_WORDS = {
  vcpu: "vCPUs", memory: "Memory", gpu: "GPUs", "disk-storage": "Disk storage",
  virtualmachines: "Virtual machines", disks: "Disks", hotswapdiskattachments: "Hot-swap attachments",
  placementgroups: "Placement groups", publicips: "Public IPs",
};
function quotaLabel(resource) {
  const [, counted] = /^count\/([a-z]+)\./.exec(resource) || [];
  const name = counted || resource.replace(/^compute\.evroclabs\.net\//, "");
  if (name.startsWith("gpu.")) return `GPUs: ${name.slice(4)}`;
  return QUOTA_WORDS[name] || name;
}

export async function quotas(view, ctx) {
  view.append(h("div", { class: "page-head" }, h("h1", {}, "Quotas")));
  const body = h("div");
  view.append(body);
  return listWatch(`/api/v1/namespaces/${encodeURIComponent(ctx.project)}/resourcequotas`, (items) => {
    body.replaceChildren(...[...items.values()].map((q) => section(q.metadata.name,
      table(["Resource", "Used", "Hard", ""], Object.entries(at(q, "status", "hard") || at(q, "spec", "hard") || {}).map(([k, hard]) => {
        const used = (at(q, "status", "used") || {})[k] ?? "0";
        const share = Number.parseFloat(hard) ? Math.min(100, (100 * Number.parseFloat(used)) / Number.parseFloat(hard)) : 0;
        const bar = h("div", { class: "meter" }, h("div", { class: share >= 90 ? "full" : "" }));
        bar.firstChild.style.width = `${share}%`;
        return h("tr", { "data-resource": k }, h("td", {}, quotaLabel(k), h("div", { class: "hint mono" }, k)),
          h("td", { class: "used" }, used), h("td", { class: "hard" }, hard),
          h("td", { class: "share" }, h("div", { class: "meter-line" }, bar, h("span", { class: "muted" }, `${Math.round(share)}%`))));
      })))));
    if (!items.size) body.replaceChildren(h("p", { class: "empty" }, `No quota is set on project "${ctx.project}".`));
  }, (error) => body.replaceChildren(h("p", { class: "error" },
    error instanceof ApiError && error.status.code === 404
      ? "This server does not serve ResourceQuota." : error.message)));
}

const gib = (bytes) => `${Math.round((bytes || 0) / 2 ** 30)} GiB`;
const memBytes = (m) => (m ? m.amount * ({ GB: 1e9, TB: 1e12, MB: 1e6 }[m.unit] || 1) : 0);

export async function fleet(view) {
  const [mayPatch, mayList] = await Promise.all([can("patch", "infra.evroc-compute.io", "hosts"),
    can("list", "infra.evroc-compute.io", "hosts")]);
  view.append(h("div", { class: "page-head" }, h("h1", {}, "Fleet")));
  const body = h("div");
  const error = h("p", { class: "error", role: "alert" });
  view.append(error, body);
  if (!mayList) {
    body.append(h("p", { class: "empty" }, "The fleet is shown to administrators."));
    return () => {};
  }
  const onError = (e) => showError(e, error);
  let leases = new Map();
  let hosts = new Map();
  const draw = () => {
    const zones = new Map();
    for (const host of hosts.values()) {
      const zone = host.spec.zone;
      if (!zones.has(zone)) zones.set(zone, []);
      zones.get(zone).push(host);
    }
    body.replaceChildren(...[...zones.keys()].sort().map((zone) => section(zone, table(
      ["Host", "Driver", "Ready", "Heartbeat", "vCPU", "Memory", "GPUs", "Instances", ""],
      zones.get(zone).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name)).map((host) => {
        const alloc = at(host, "status", "allocated") || {};
        const cap = host.spec.capacity;
        const lease = leases.get(`/host-${host.metadata.name}`);
        const renew = at(lease, "spec", "renewTime");
        const patch = (spec) => async () => {
          try { await mergePatch(`${INFRA}/hosts/${encodeURIComponent(host.metadata.name)}`, { spec }); } catch (e) { onError(e); }
        };
        const gpus = (cap.gpus || []).map((g) => {
          const used = ((alloc.gpus || []).find((a) => a.model === g.model) || {}).count || 0;
          return `${used}/${g.count} ${g.model.replace("nvidia.com/", "")}`;
        }).join(", ");
        return h("tr", { "data-host": host.metadata.name },
          h("td", {}, host.metadata.name), h("td", {}, host.spec.driver || "sim"),
          h("td", {}, badge(ready(host).status === "True" ? "Ready" : ready(host).reason || "Unknown")),
          h("td", {}, renew ? `${age(renew)} ago` : ""),
          h("td", {}, `${alloc.vcpu || 0}/${cap.vcpu}`),
          h("td", {}, `${gib(alloc.memoryBytes)}/${gib(memBytes(cap.memory))}`),
          h("td", {}, gpus),
          h("td", {}, (at(host, "status", "allocations") || []).map((a) => a.instance).join(", ")),
          h("td", { class: "actions" }, mayPatch && [
            host.spec.schedulable === false
              ? h("button", { onclick: patch({ schedulable: true }), "data-action": "uncordon" }, "Uncordon")
              : h("button", { onclick: patch({ schedulable: false }), "data-action": "cordon" }, "Cordon"),
            host.spec.drain
              ? h("button", { onclick: patch({ drain: false }), "data-action": "undrain" }, "Stop draining")
              : h("button", { class: "danger", onclick: patch({ drain: true }), "data-action": "drain" }, "Drain")]));
      })))));
  };
  const stops = [
    listWatch(`${INFRA}/hosts`, (items) => { hosts = items; draw(); }, onError),
    listWatch(`${INFRA}/leases`, (items) => { leases = items; draw(); }, () => {}),
  ];
  return () => stops.forEach((s) => s());
}
