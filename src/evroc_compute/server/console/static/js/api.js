// The API, as the console speaks to it: the same paths kubectl uses, with the session
// cookie; writes carry the session's CSRF header. Every refusal is the server's Status.

export const COMPUTE = "/apis/compute.evroclabs.net/v1alpha1";
export const NETWORKING = "/apis/networking.evroclabs.net/v1alpha1";
export const INFRA = "/apis/infra.evroc-compute.io/v1alpha1";

export class ApiError extends Error {
  constructor(status) {
    super(status.message || `${status.code} ${status.reason}`);
    this.status = status;
  }
  // The causes that name a field: [{field, message}].
  get causes() {
    return (this.status.details && this.status.details.causes) || [];
  }
}

function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("evroc-csrf="));
  return found ? found.slice("evroc-csrf=".length) : "";
}

async function statusOf(reply) {
  try {
    const body = await reply.json();
    if (body && body.kind === "Status") return body;
  } catch { /* not JSON */ }
  return { code: reply.status, reason: reply.statusText, message: `${reply.status} ${reply.statusText}` };
}

export async function request(method, path, body, contentType = "application/json") {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = contentType;
  const reply = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (reply.status === 401 && !path.startsWith("/console/")) location.assign("/console/login");
  if (!reply.ok) throw new ApiError(await statusOf(reply));
  return reply.status === 204 ? null : reply.json();
}

export const get = (path) => request("GET", path);
export const create = (path, body, query = "") => request("POST", path + query, body);
export const remove = (path) => request("DELETE", path);
export const mergePatch = (path, body) =>
  request("PATCH", path, body, "application/merge-patch+json");

// Lines of a streamed answer, as they arrive (watches, the serial console).
export async function* lines(path, signal) {
  const reply = await fetch(path, { credentials: "same-origin", signal, headers: { Accept: "*/*" } });
  if (!reply.ok) throw new ApiError(await statusOf(reply));
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const parts = buffer.split("\n");
    buffer = parts.pop();
    yield* parts;
  }
  if (buffer) yield buffer;
}

// List, then watch from the list's resourceVersion, keeping `items` (a Map by namespace/name)
// current; `onChange(items)` runs after the list and after every change. Re-watches when a
// watch ends, lists again when its version is too old. Returns a function that stops it.
export function listWatch(path, onChange, onError = () => {}, query = "") {
  const controller = new AbortController();
  const items = new Map();
  const key = (o) => `${o.metadata.namespace || ""}/${o.metadata.name}`;
  const sep = query ? "&" : "";
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const list = await get(`${path}?${query}`);
        items.clear();
        for (const item of list.items) items.set(key(item), item);
        onChange(items);
        let version = list.metadata.resourceVersion;
        for (;;) {
          const url = `${path}?${query}${sep}watch=true&allowWatchBookmarks=true&resourceVersion=${version}`;
          for await (const line of lines(url, controller.signal)) {
            if (!line) continue;
            const event = JSON.parse(line);
            if (event.type === "ERROR") throw new ApiError(event.object);
            version = event.object.metadata.resourceVersion;
            if (event.type === "BOOKMARK") continue;
            if (event.type === "DELETED") items.delete(key(event.object));
            else items.set(key(event.object), event.object);
            onChange(items);
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        if (!(error instanceof ApiError) || error.status.code !== 410) onError(error);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  })();
  return () => controller.abort();
}

// Whether the user may do `verb` on `resource` (SelfSubjectAccessReview). Where the server
// has no authorization.k8s.io API, everything is offered and a refusal shows its Status.
const reviews = new Map();
export function can(verb, group, resource, namespace = "", subresource = "") {
  const id = [verb, group, resource, namespace, subresource].join("|");
  if (!reviews.has(id)) {
    reviews.set(id, create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
      apiVersion: "authorization.k8s.io/v1", kind: "SelfSubjectAccessReview",
      spec: { resourceAttributes: { verb, group, resource, namespace, subresource } },
    }).then((review) => review.status.allowed === true, (error) =>
      !(error instanceof ApiError) || error.status.code === 404));
  }
  return reviews.get(id);
}
