/**
 * An in-process fake Kubernetes API server for the operator's tests and benchmark.
 *
 * No kube-apiserver can run on the machines this project is built on (no container engine, no
 * binaries), so this implements, over real HTTP on 127.0.0.1, the REST semantics the operator relies
 * on, and the operator talks to it through the real `@kubernetes/client-node`:
 *
 * - create / get / list / update (PUT) / merge- and JSON-patch / delete, namespaced resources;
 * - `metadata.resourceVersion` from one global counter, 409 Conflict on a stale update, 409
 *   AlreadyExists on a duplicate create, unchanged writes that do not bump the version;
 * - the `/status` subresource (the main endpoint ignores status, `/status` ignores everything else);
 * - `metadata.generation` bumped only when something outside metadata and status changes;
 * - list + watch with label selectors, bookmarks (`allowWatchBookmarks`), `timeoutSeconds`, and a
 *   bounded event history: watching from a version older than the history gets a 410 Expired
 *   ERROR event, as from the real watch cache;
 * - ownerReference garbage collection (background propagation; `Orphan` honoured);
 * - validation hooks per resource (the MetaTraining spec is validated with its zod schema, as the
 *   CRD's OpenAPI schema would be, and with the CEL rules the CRD declares, evaluated by
 *   `cel.ts`), returning 422 Invalid with the field named;
 * - immutable Job pod templates, DNS names, Leases and Events as plain resources.
 *
 * Tests drive "the rest of the cluster" (the Job controller, the kubelet, Kueue) through the
 * direct methods (`create`, `update`, `updateStatus`, `remove`) and inject faults with `intercept`,
 * `pauseWatches`, `closeWatches` and `compact`.
 *
 * @example
 * ```ts
 * const api = await FakeApiServer.start({ resources: [...builtinResources(), metaTrainingResource()] });
 * const kc = api.kubeConfig("replica-a");
 * // ... run the operator with kc ...
 * await api.close();
 * ```
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { canonicalJson } from "../../lib/json.ts";
import { buildMetaTrainingCrd, type CelRule } from "../../cluster/crd.ts";
import {
  GROUP,
  KIND,
  MetaTrainingSpecSchema,
  PLURAL,
  VERSION,
} from "../../cluster/metatraining.ts";
import { CelError, evaluateCel } from "./cel.ts";
import { concatBytes } from "../../lib/bytes.ts";

// deno-lint-ignore no-explicit-any
export type KubeObject = Record<string, any> & {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
};

// deno-lint-ignore no-explicit-any
type ObjectMeta = Record<string, any> & {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  ownerReferences?: OwnerReference[];
};

interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** One field-level validation failure, reported as a `StatusCause`. */
export interface FieldError {
  field: string;
  message: string;
}

/** A resource type the fake serves. */
export interface ResourceType {
  /** "" for the core group. */
  group: string;
  version: string;
  plural: string;
  kind: string;
  /** Whether `/status` is a subresource (then the main endpoint ignores status). */
  statusSubresource: boolean;
  /** Built-in types omit apiVersion/kind on list items; custom resources keep them. */
  custom?: boolean;
  /** Validates a create (old undefined) or update; returns the problems, [] when valid. */
  validate?: (obj: KubeObject, old: KubeObject | undefined) => FieldError[];
}

/** The built-in resources the operator uses. */
export function builtinResources(): ResourceType[] {
  return [
    { group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", statusSubresource: false },
    { group: "", version: "v1", plural: "secrets", kind: "Secret", statusSubresource: false },
    { group: "", version: "v1", plural: "events", kind: "Event", statusSubresource: false },
    { group: "", version: "v1", plural: "pods", kind: "Pod", statusSubresource: true },
    {
      group: "batch",
      version: "v1",
      plural: "jobs",
      kind: "Job",
      statusSubresource: true,
      validate: validateJob,
    },
    {
      group: "coordination.k8s.io",
      version: "v1",
      plural: "leases",
      kind: "Lease",
      statusSubresource: false,
    },
  ];
}

/**
 * The MetaTraining custom resource, validated as the apiserver validates it against the CRD: the
 * zod schema the CRD's OpenAPI schema is generated from stands in for that schema, and the CRD's
 * CEL rules (`x-kubernetes-validations`) are read from the generated CRD and evaluated. A zod
 * refinement that the CRD expresses as a CEL rule is enforced through the rule alone, so a rule
 * missing from the CRD shows up here as a spec the fake accepts.
 */
export function metaTrainingResource(): ResourceType {
  const specSchema = buildMetaTrainingCrd().spec.versions[0].schema.openAPIV3Schema.properties.spec;
  return {
    group: GROUP,
    version: VERSION,
    plural: PLURAL,
    kind: KIND,
    statusSubresource: true,
    custom: true,
    validate: (obj) => {
      if (obj.spec === undefined || obj.spec === null) {
        return [{ field: "spec", message: "Required value" }];
      }
      const cel = celValidation(specSchema, obj.spec, "spec");
      const result = MetaTrainingSpecSchema.safeParse(obj.spec);
      const schemaErrors = result.success ? [] : result.error.issues
        .map((i) => ({ ...i, field: ["spec", ...i.path.map(String)].join(".") }))
        .filter((i) => !(i.code === "custom" && cel.ruleFields.has(i.field)))
        .map((i) => ({
          field: i.field,
          message: `Invalid value: ${
            JSON.stringify(valueAt(obj, i.field)) ?? "null"
          }: ${i.message}`,
        }));
      return [...schemaErrors, ...cel.errors];
    },
  };
}

// deno-lint-ignore no-explicit-any
type SchemaNode = Record<string, any>;

/**
 * Evaluates every `x-kubernetes-validations` rule of `schema` on the parts of `value` present, as
 * the apiserver does: a rule that is false or fails to evaluate is an error at the node (plus the
 * rule's `fieldPath`). `ruleFields`: the fields the evaluated rules report on.
 */
export function celValidation(
  schema: SchemaNode,
  value: unknown,
  path: string,
): { errors: FieldError[]; ruleFields: Set<string> } {
  const errors: FieldError[] = [];
  const ruleFields = new Set<string>();
  const visit = (node: SchemaNode, v: unknown, at: string) => {
    if (v === undefined || v === null) return;
    for (const r of (node["x-kubernetes-validations"] ?? []) as CelRule[]) {
      const field = at + (r.fieldPath ?? "");
      ruleFields.add(field);
      let ok: boolean;
      let why = r.message;
      try {
        ok = evaluateCel(r.rule, v) === true;
      } catch (err) {
        if (!(err instanceof CelError)) throw err;
        ok = false;
        why = `${r.message} (${err.message})`;
      }
      const shown = Array.isArray(v) ? "array" : typeof v === "object" ? "object" : String(v);
      if (!ok) errors.push({ field, message: `Invalid value: "${shown}": ${why}` });
    }
    if (Array.isArray(v) && node.items) {
      v.forEach((item, i) => visit(node.items, item, `${at}[${i}]`));
    } else if (typeof v === "object" && !Array.isArray(v)) {
      const obj = v as Record<string, unknown>;
      for (const [k, child] of Object.entries(obj)) {
        const sub = node.properties?.[k] ??
          (typeof node.additionalProperties === "object" ? node.additionalProperties : undefined);
        if (sub) visit(sub, child, `${at}.${k}`);
      }
    }
  };
  visit(schema, value, path);
  return { errors, ruleFields };
}

function valueAt(obj: unknown, path: string): unknown {
  // deno-lint-ignore no-explicit-any
  return path.split(".").reduce((o: any, k) => (o == null ? undefined : o[k]), obj);
}

/** A Job's name must be a DNS label (it becomes the pods' `job-name` label); its pod template is immutable. */
function validateJob(obj: KubeObject, old: KubeObject | undefined): FieldError[] {
  const errors: FieldError[] = [];
  const name = obj.metadata.name ?? "";
  if (name.length > 63 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name)) {
    errors.push({
      field: "metadata.name",
      message: `Invalid value: "${name}": must be a DNS-1123 label of at most 63 characters`,
    });
  }
  if (!obj.spec?.template?.spec?.containers?.length) {
    errors.push({ field: "spec.template.spec.containers", message: "Required value" });
  }
  if (old && canonicalJson(old.spec?.template) !== canonicalJson(obj.spec?.template)) {
    errors.push({ field: "spec.template", message: "Invalid value: field is immutable" });
  }
  return errors;
}

/** One request as the fake saw it, for assertions and request counting. */
export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** The bearer token, i.e. which client made it (see {@link FakeApiServer.kubeConfig}). */
  user: string;
  status: number;
  watch: boolean;
  at: number;
}

/** What an interceptor sees; return a response to short-circuit the request. */
export interface InterceptedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  user: string;
  resource?: string;
  namespace?: string;
  name?: string;
  subresource?: string;
  watch: boolean;
  // deno-lint-ignore no-explicit-any
  body: any;
}

export type Interceptor = (
  req: InterceptedRequest,
) =>
  | { status: number; body: unknown }
  | undefined
  | void
  | Promise<{ status: number; body: unknown } | undefined | void>;

export interface FakeApiServerOptions {
  resources?: ResourceType[];
  /** Watch events kept for resuming watches; older versions get 410 Gone. Default 10,000. */
  historyLimit?: number;
  /** Interval of BOOKMARK events on watches that ask for them. Default 1,000 ms. */
  bookmarkIntervalMs?: number;
}

interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED";
  rv: number;
  resource: string;
  object: KubeObject;
}

interface Watcher {
  resource: string;
  namespace?: string;
  selector: LabelRequirement[];
  send(event: WatchEvent): void;
  close(): void;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** See the module documentation. */
export class FakeApiServer {
  /** Every request served, in arrival order. */
  readonly requests: RecordedRequest[] = [];
  private readonly resources = new Map<string, ResourceType>();
  private readonly store = new Map<string, Map<string, KubeObject>>();
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly interceptors: Interceptor[] = [];
  private rv = 1;
  /** Versions at or below this are gone from the history. */
  private compactedRv = 0;
  private watchGate: { promise: Promise<void>; release: () => void } | undefined;
  private readonly historyLimit: number;
  private readonly bookmarkIntervalMs: number;

  private constructor(
    private readonly server: http.Server,
    options: FakeApiServerOptions,
  ) {
    for (const r of options.resources ?? builtinResources()) this.resources.set(r.plural, r);
    for (const r of this.resources.keys()) this.store.set(r, new Map());
    this.historyLimit = options.historyLimit ?? 10_000;
    this.bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1_000;
  }

  /** Starts a server on 127.0.0.1 on a free port. */
  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const holder: { self?: FakeApiServer } = {};
    const server = http.createServer((req, res) => {
      holder.self!.handle(req, res).catch((err) => {
        if (!res.headersSent) {
          res.writeHead(500, { "content-type": "application/json" });
          res.end(JSON.stringify(statusBody(500, "InternalError", String(err))));
        }
      });
    });
    const self = new FakeApiServer(server, options);
    holder.self = self;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return self;
  }

  /** Base URL, e.g. `http://127.0.0.1:43123`. */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** A KubeConfig for this server; `user` becomes the bearer token recorded on each request. */
  kubeConfig(user = "test", namespace = "default"): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: "fake", server: this.url, skipTLSVerify: true }],
      users: [{ name: user, token: user }],
      contexts: [{ name: "fake", cluster: "fake", user, namespace }],
      currentContext: "fake",
    });
    return kc;
  }

  /** Stops serving and ends every watch. */
  async close(): Promise<void> {
    this.watchGate?.release();
    for (const w of this.watchers) w.close();
    this.server.closeAllConnections?.();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Runs `fn` on every request before it is served; returns a function that removes it. */
  intercept(fn: Interceptor): () => void {
    this.interceptors.push(fn);
    return () => {
      const i = this.interceptors.indexOf(fn);
      if (i >= 0) this.interceptors.splice(i, 1);
    };
  }

  /** Ends every open watch stream cleanly (clients resume from their last resourceVersion). */
  closeWatches(): void {
    for (const w of this.watchers) w.close();
  }

  /** New watch requests wait until {@link resumeWatches}. */
  pauseWatches(): void {
    if (this.watchGate) return;
    let release!: () => void;
    const promise = new Promise<void>((r) => (release = r));
    this.watchGate = { promise, release };
  }

  resumeWatches(): void {
    const gate = this.watchGate;
    this.watchGate = undefined;
    gate?.release();
  }

  /** Forgets the watch history: resuming from any version before now gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history.length = 0;
  }

  /** The current (latest) resourceVersion. */
  get resourceVersion(): number {
    return this.rv;
  }

  // ---- direct access for tests: the same semantics as over HTTP ----

  /** Reads an object (a deep copy), or undefined. */
  get(resource: string, namespace: string, name: string): KubeObject | undefined {
    const obj = this.bucket(resource).get(`${namespace}/${name}`);
    return obj ? structuredClone(obj) : undefined;
  }

  /** Lists objects of a resource, optionally in one namespace. */
  list(resource: string, namespace?: string): KubeObject[] {
    return [...this.bucket(resource).values()]
      .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
      .map((o) => structuredClone(o));
  }

  /** Creates an object as a client would (validation included). */
  create(resource: string, obj: KubeObject): KubeObject {
    return structuredClone(this.doCreate(this.type(resource), obj.metadata.namespace ?? "", obj));
  }

  /** Replaces an object (not its status), with optimistic concurrency when resourceVersion is set. */
  update(resource: string, obj: KubeObject): KubeObject {
    return structuredClone(this.doUpdate(this.type(resource), obj, false));
  }

  /** Replaces an object's status (`/status`). */
  updateStatus(resource: string, obj: KubeObject): KubeObject {
    return structuredClone(this.doUpdate(this.type(resource), obj, true));
  }

  /** Deletes an object and garbage-collects its dependents. */
  remove(resource: string, namespace: string, name: string): void {
    this.doDelete(this.type(resource), namespace, name, {});
  }

  // ---- HTTP ----

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const query = Object.fromEntries(url.searchParams);
    const user = (req.headers.authorization ?? "").replace(/^Bearer\s+/i, "");
    const route = this.route(url.pathname);
    const watch = query.watch === "true" || query.watch === "1";
    const method = req.method ?? "GET";
    const record: RecordedRequest = {
      method,
      path: url.pathname,
      query,
      user,
      status: 0,
      watch,
      at: performance.now(),
    };
    this.requests.push(record);
    const raw = await readBody(req);
    const reply = (status: number, body: unknown) => {
      record.status = status;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    try {
      // deno-lint-ignore no-explicit-any
      let body: any = undefined;
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw);
        } catch {
          throw new HttpError(400, "BadRequest", "request body is not valid JSON");
        }
      }
      for (const fn of [...this.interceptors]) {
        const r = await fn({ method, path: url.pathname, query, user, watch, body, ...route });
        if (r) return reply(r.status, r.body);
      }
      if (!route.resource) throw new HttpError(404, "NotFound", `no route for ${url.pathname}`);
      const type = this.type(route.resource);
      const ns = route.namespace;
      if (method === "GET" && !route.name) {
        if (watch) return await this.serveWatch(type, ns, query, res, record);
        return reply(200, this.doList(type, ns, query));
      }
      if (!ns) {
        throw new HttpError(405, "MethodNotAllowed", "namespaced resource needs a namespace");
      }
      if (method === "POST" && !route.name) {
        return reply(201, this.doCreate(type, ns, body));
      }
      if (!route.name) throw new HttpError(405, "MethodNotAllowed", `${method} on a collection`);
      const key = `${ns}/${route.name}`;
      const status = route.subresource === "status";
      if (route.subresource && !status) {
        throw new HttpError(404, "NotFound", `no subresource ${route.subresource}`);
      }
      if (status && !type.statusSubresource) {
        throw new HttpError(404, "NotFound", `${type.plural} has no status subresource`);
      }
      switch (method) {
        case "GET":
          return reply(200, this.mustGet(type, key));
        case "PUT": {
          if (body?.metadata?.name !== route.name) {
            throw new HttpError(400, "BadRequest", "the name of the object does not match the URL");
          }
          body.metadata.namespace ??= ns;
          return reply(200, this.doUpdate(type, body, status));
        }
        case "PATCH": {
          const current = this.mustGet(type, key);
          const contentType = String(req.headers["content-type"] ?? "");
          const patched = applyPatch(current, body, contentType);
          if (!patched.metadata.resourceVersion) {
            patched.metadata.resourceVersion = current.metadata.resourceVersion;
          }
          return reply(200, this.doUpdate(type, patched, status));
        }
        case "DELETE":
          return reply(200, this.doDelete(type, ns, route.name, { ...query, ...(body ?? {}) }));
      }
      throw new HttpError(405, "MethodNotAllowed", `${method} not supported`);
    } catch (err) {
      if (err instanceof HttpError) {
        return reply(err.status, statusBody(err.status, err.reason, err.message, err.details));
      }
      throw err;
    }
  }

  private route(pathname: string): {
    resource?: string;
    namespace?: string;
    name?: string;
    subresource?: string;
  } {
    const parts = pathname.split("/").filter(Boolean);
    let rest: string[];
    if (parts[0] === "api" && parts.length >= 2) rest = parts.slice(2);
    else if (parts[0] === "apis" && parts.length >= 3) rest = parts.slice(3);
    else return {};
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [resource, name, subresource] = rest;
    return { resource, namespace, name, subresource };
  }

  private type(resource: string): ResourceType {
    const type = this.resources.get(resource);
    if (!type) {
      throw new HttpError(404, "NotFound", `the server could not find resource ${resource}`);
    }
    return type;
  }

  private bucket(resource: string): Map<string, KubeObject> {
    const bucket = this.store.get(resource);
    if (!bucket) throw new Error(`unknown resource ${resource}`);
    return bucket;
  }

  private mustGet(type: ResourceType, key: string): KubeObject {
    const obj = this.bucket(type.plural).get(key);
    if (!obj) {
      throw new HttpError(
        404,
        "NotFound",
        `${groupResource(type)} "${key.split("/")[1]}" not found`,
        {
          name: key.split("/")[1],
          group: type.group,
          kind: type.plural,
        },
      );
    }
    return structuredClone(obj);
  }

  private doList(type: ResourceType, ns: string | undefined, query: Record<string, string>) {
    const selector = parseSelector(query.labelSelector);
    const items = [...this.bucket(type.plural).values()]
      .filter((o) => !ns || o.metadata.namespace === ns)
      .filter((o) => matches(selector, o.metadata.labels))
      .map((o) => {
        const copy = structuredClone(o);
        if (!type.custom) {
          delete copy.apiVersion;
          delete copy.kind;
        }
        return copy;
      });
    return {
      apiVersion: apiVersionOf(type),
      kind: `${type.kind}List`,
      metadata: { resourceVersion: String(this.rv) },
      items,
    };
  }

  private invalid(type: ResourceType, name: string, errors: FieldError[]): HttpError {
    const kind = type.group ? `${type.kind}.${type.group}` : type.kind;
    const joined = errors.map((e) => `${e.field}: ${e.message}`).join(", ");
    return new HttpError(422, "Invalid", `${kind} "${name}" is invalid: ${joined}`, {
      name,
      group: type.group,
      kind: type.kind,
      causes: errors.map((e) => ({
        reason: "FieldValueInvalid",
        message: e.message,
        field: e.field,
      })),
    });
  }

  private doCreate(type: ResourceType, ns: string, body: KubeObject): KubeObject {
    if (!body || typeof body !== "object" || !body.metadata) {
      throw new HttpError(400, "BadRequest", "object has no metadata");
    }
    const obj = structuredClone(body);
    const meta = obj.metadata;
    if (meta.namespace && meta.namespace !== ns) {
      throw new HttpError(
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
      );
    }
    meta.namespace = ns;
    if (!meta.name && meta.generateName) {
      meta.name = meta.generateName + Math.random().toString(36).slice(2, 7);
    }
    if (!meta.name) {
      throw this.invalid(type, "", [{ field: "metadata.name", message: "Required value" }]);
    }
    if (meta.name.length > 253 || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(meta.name)) {
      throw this.invalid(type, meta.name, [{
        field: "metadata.name",
        message:
          `Invalid value: "${meta.name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'`,
      }]);
    }
    const key = `${ns}/${meta.name}`;
    if (this.bucket(type.plural).has(key)) {
      throw new HttpError(
        409,
        "AlreadyExists",
        `${groupResource(type)} "${meta.name}" already exists`,
        {
          name: meta.name,
          group: type.group,
          kind: type.plural,
        },
      );
    }
    const errors = type.validate?.(obj, undefined) ?? [];
    if (errors.length) throw this.invalid(type, meta.name, errors);
    if (type.statusSubresource) delete obj.status;
    obj.apiVersion = apiVersionOf(type);
    obj.kind = type.kind;
    meta.uid = crypto.randomUUID();
    meta.creationTimestamp = nowSeconds();
    meta.generation = 1;
    delete meta.deletionTimestamp;
    meta.resourceVersion = String(++this.rv);
    this.bucket(type.plural).set(key, obj);
    this.emit({ type: "ADDED", rv: this.rv, resource: type.plural, object: obj });
    return structuredClone(obj);
  }

  private doUpdate(type: ResourceType, body: KubeObject, statusOnly: boolean): KubeObject {
    const ns = body.metadata?.namespace ?? "";
    const name = body.metadata?.name ?? "";
    const key = `${ns}/${name}`;
    const current = this.mustGet(type, key);
    const sent = body.metadata.resourceVersion;
    if (sent !== undefined && sent !== "" && sent !== current.metadata.resourceVersion) {
      throw new HttpError(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${
          groupResource(type)
        } "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, group: type.group, kind: type.plural },
      );
    }
    let next: KubeObject;
    if (statusOnly) {
      next = structuredClone(current);
      next.status = structuredClone(body.status);
    } else {
      next = structuredClone(body);
      if (type.statusSubresource) next.status = structuredClone(current.status);
      // Fields the server owns.
      for (const k of ["uid", "creationTimestamp", "generation", "deletionTimestamp"]) {
        if (current.metadata[k] === undefined) delete next.metadata[k];
        else next.metadata[k] = current.metadata[k];
      }
      next.apiVersion = current.apiVersion;
      next.kind = current.kind;
      const errors = type.validate?.(next, current) ?? [];
      if (errors.length) throw this.invalid(type, name, errors);
      if (
        canonicalJson(withoutMetaAndStatus(next)) !== canonicalJson(withoutMetaAndStatus(current))
      ) {
        next.metadata.generation = (current.metadata.generation ?? 0) + 1;
      }
    }
    next.metadata.resourceVersion = current.metadata.resourceVersion;
    if (canonicalJson(next) === canonicalJson(current)) return current; // no-op: no new version
    next.metadata.resourceVersion = String(++this.rv);
    this.bucket(type.plural).set(key, next);
    this.emit({ type: "MODIFIED", rv: this.rv, resource: type.plural, object: next });
    return structuredClone(next);
  }

  private doDelete(
    type: ResourceType,
    ns: string,
    name: string,
    // deno-lint-ignore no-explicit-any
    options: Record<string, any>,
  ): unknown {
    const key = `${ns}/${name}`;
    const current = this.mustGet(type, key);
    const pre = options.preconditions ?? {};
    if (
      (pre.uid && pre.uid !== current.metadata.uid) ||
      (pre.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion)
    ) {
      throw new HttpError(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${groupResource(type)} "${name}": Precondition failed`,
      );
    }
    this.bucket(type.plural).delete(key);
    const gone = structuredClone(current);
    gone.metadata.resourceVersion = String(++this.rv);
    this.emit({ type: "DELETED", rv: this.rv, resource: type.plural, object: gone });
    const orphan = options.propagationPolicy === "Orphan" || options.orphanDependents === true ||
      options.orphanDependents === "true";
    // Background propagation: the garbage collector runs after the owner is gone.
    setTimeout(() => this.collectDependents(current.metadata.uid!, ns, orphan), 0);
    return {
      kind: "Status",
      apiVersion: "v1",
      status: "Success",
      details: { name, kind: type.plural },
    };
  }

  private collectDependents(ownerUid: string, ns: string, orphan: boolean): void {
    for (const [plural, bucket] of this.store) {
      const type = this.resources.get(plural)!;
      for (const obj of [...bucket.values()]) {
        if (obj.metadata.namespace !== ns) continue;
        const refs = obj.metadata.ownerReferences ?? [];
        if (!refs.some((r) => r.uid === ownerUid)) continue;
        const remaining = refs.filter((r) => r.uid !== ownerUid);
        const liveOwner = remaining.some((r) => this.ownerExists(ns, r.uid));
        if (orphan || liveOwner) {
          const next = structuredClone(obj);
          next.metadata.ownerReferences = remaining.length ? remaining : undefined;
          if (!remaining.length) delete next.metadata.ownerReferences;
          next.metadata.resourceVersion = undefined;
          this.doUpdate(type, next, false);
        } else if (bucket.has(`${ns}/${obj.metadata.name}`)) {
          this.doDelete(type, ns, obj.metadata.name!, {});
        }
      }
    }
  }

  private ownerExists(ns: string, uid: string): boolean {
    for (const bucket of this.store.values()) {
      for (const obj of bucket.values()) {
        if (obj.metadata.uid === uid && obj.metadata.namespace === ns) return true;
      }
    }
    return false;
  }

  private emit(event: WatchEvent): void {
    this.history.push({ ...event, object: structuredClone(event.object) });
    if (this.history.length > this.historyLimit) {
      const dropped = this.history.splice(0, this.history.length - this.historyLimit);
      this.compactedRv = dropped[dropped.length - 1].rv;
    }
    for (const w of this.watchers) {
      if (w.resource !== event.resource) continue;
      if (w.namespace && event.object.metadata.namespace !== w.namespace) continue;
      if (!matches(w.selector, event.object.metadata.labels)) continue;
      w.send(event);
    }
  }

  private async serveWatch(
    type: ResourceType,
    ns: string | undefined,
    query: Record<string, string>,
    res: http.ServerResponse,
    record: RecordedRequest,
  ): Promise<void> {
    if (this.watchGate) await this.watchGate.promise;
    record.status = 200;
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    const selector = parseSelector(query.labelSelector);
    const write = (type: string, object: unknown) => {
      if (!res.writableEnded) res.write(JSON.stringify({ type, object }) + "\n");
    };
    const from = query.resourceVersion ? Number(query.resourceVersion) : NaN;
    if (query.resourceVersion && !Number.isFinite(from)) {
      write(
        "ERROR",
        statusBody(400, "BadRequest", `invalid resourceVersion ${query.resourceVersion}`),
      );
      res.end();
      return;
    }
    if (Number.isFinite(from) && from > 0 && from < this.compactedRv) {
      write(
        "ERROR",
        statusBody(410, "Expired", `too old resource version: ${from} (${this.compactedRv})`),
      );
      res.end();
      return;
    }
    const inScope = (o: KubeObject) =>
      (!ns || o.metadata.namespace === ns) && matches(selector, o.metadata.labels);
    if (!Number.isFinite(from) || from === 0) {
      // "Any version": start with the current state, as synthetic ADDED events.
      for (const o of this.bucket(type.plural).values()) if (inScope(o)) write("ADDED", o);
    } else {
      for (const e of this.history) {
        if (e.rv > from && e.resource === type.plural && inScope(e.object)) write(e.type, e.object);
      }
    }
    const timers: ReturnType<typeof setTimeout>[] = [];
    const watcher: Watcher = {
      resource: type.plural,
      namespace: ns,
      selector,
      send: (e) => write(e.type, e.object),
      close: () => {
        for (const t of timers) clearTimeout(t);
        this.watchers.delete(watcher);
        if (!res.writableEnded) res.end();
      },
    };
    this.watchers.add(watcher);
    if (query.allowWatchBookmarks === "true") {
      const bookmark = () => {
        write("BOOKMARK", {
          apiVersion: apiVersionOf(type),
          kind: type.kind,
          metadata: { resourceVersion: String(this.rv) },
        });
        timers.push(setTimeout(bookmark, this.bookmarkIntervalMs));
      };
      timers.push(setTimeout(bookmark, this.bookmarkIntervalMs));
    }
    if (query.timeoutSeconds) {
      timers.push(setTimeout(() => watcher.close(), Number(query.timeoutSeconds) * 1000));
    }
    res.on("close", () => watcher.close());
  }
}

function apiVersionOf(type: ResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

function groupResource(type: ResourceType): string {
  return type.group ? `${type.plural}.${type.group}` : type.plural;
}

function statusBody(code: number, reason: string, message: string, details?: unknown) {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

function nowSeconds(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (c: Uint8Array) => chunks.push(c));
    req.on("end", () => resolve(new TextDecoder().decode(concatBytes(chunks))));
    req.on("error", reject);
  });
}

function withoutMetaAndStatus(obj: KubeObject): unknown {
  const { metadata: _m, status: _s, ...rest } = obj;
  return rest;
}

// deno-lint-ignore no-explicit-any
function applyPatch(current: KubeObject, patch: any, contentType: string): KubeObject {
  if (contentType.startsWith("application/json-patch+json")) {
    const doc = structuredClone(current);
    for (const op of patch as { op: string; path: string; value?: unknown }[]) {
      applyJsonPatchOp(doc, op);
    }
    return doc;
  }
  // Merge patch (RFC 7386). Strategic merge patch is treated as merge patch: the operator only
  // patches scalar fields, where the two agree.
  return mergePatch(structuredClone(current), patch) as KubeObject;
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (!patch || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target && typeof target === "object" && !Array.isArray(target)
      ? { ...(target as Record<string, unknown>) }
      : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// deno-lint-ignore no-explicit-any
function applyJsonPatchOp(doc: any, op: { op: string; path: string; value?: unknown }): void {
  const parts = op.path.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  const last = parts.pop()!;
  let parent = doc;
  for (const p of parts) {
    if (parent[p] === undefined) {
      throw new HttpError(422, "Invalid", `json patch: path ${op.path} does not exist`);
    }
    parent = parent[p];
  }
  switch (op.op) {
    case "add":
    case "replace":
      if (Array.isArray(parent) && last === "-") parent.push(op.value);
      else parent[last] = op.value;
      return;
    case "remove":
      if (Array.isArray(parent)) parent.splice(Number(last), 1);
      else delete parent[last];
      return;
    case "test":
      if (canonicalJson(parent[last]) !== canonicalJson(op.value)) {
        throw new HttpError(422, "Invalid", `json patch test failed at ${op.path}`);
      }
      return;
  }
  throw new HttpError(422, "Invalid", `json patch op ${op.op} not supported`);
}

type LabelRequirement =
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "exists" | "!exists" }
  | { key: string; op: "in" | "notin"; values: string[] };

function parseSelector(selector: string | undefined): LabelRequirement[] {
  if (!selector) return [];
  const out: LabelRequirement[] = [];
  // Split on commas outside parentheses.
  for (const part of selector.split(/,(?![^(]*\))/).map((s) => s.trim()).filter(Boolean)) {
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/))) {
      out.push({
        key: m[1],
        op: m[2] as "in" | "notin",
        values: m[3].split(",").map((s) => s.trim()),
      });
    } else if ((m = part.match(/^([^\s!=]+)\s*(!=|==|=)\s*(\S*)$/))) {
      out.push({ key: m[1], op: m[2] === "!=" ? "!=" : "=", value: m[3] });
    } else if ((m = part.match(/^!([^\s!=]+)$/))) {
      out.push({ key: m[1], op: "!exists" });
    } else if ((m = part.match(/^([^\s!=]+)$/))) {
      out.push({ key: m[1], op: "exists" });
    } else {
      throw new HttpError(400, "BadRequest", `unable to parse requirement: ${part}`);
    }
  }
  return out;
}

function matches(
  selector: LabelRequirement[],
  labels: Record<string, string> | undefined,
): boolean {
  const l = labels ?? {};
  return selector.every((r) => {
    switch (r.op) {
      case "=":
        return l[r.key] === r.value;
      case "!=":
        return l[r.key] !== r.value;
      case "exists":
        return r.key in l;
      case "!exists":
        return !(r.key in l);
      case "in":
        return r.key in l && r.values.includes(l[r.key]);
      case "notin":
        return !(r.key in l) || !r.values.includes(l[r.key]);
    }
  });
}
