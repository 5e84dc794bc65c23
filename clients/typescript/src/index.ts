// @jobplane/client: Jobplane's producer client, the safe way by default.
//
// - Every logical call that creates something carries a fresh Idempotency-Key, the same on each
//   of its retries, so a retry never makes a second job.
// - 503, 429 and connection failures are retried with jittered exponential backoff, never sooner
//   than the answer's Retry-After, until the call's deadline (DEFAULT_DEADLINE_MS).
// - A problem document (application/problem+json) becomes a ProblemError carrying its type,
//   status, detail and field errors (JSON pointers such as /payload/to).
// - A W3C traceparent given in CallOptions is passed on, so the worker continues the trace.
//
// The request and answer types are generated from the producer API's /openapi.json by
// openapi-typescript (src/schema.d.ts); calls go through openapi-fetch.

import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type Schemas = components["schemas"];
/** A job for POST /v1/jobs: its `kind` selects the payload's type. */
export type JobRequest = Schemas["JobRequest"];
/** A job of a batch: may carry its own `idempotency_key`. */
export type BatchJob = Schemas["BatchRequest"]["jobs"][number];
export type ScheduleRequest = Schemas["ScheduleRequest"];
export type Accepted = Schemas["Accepted"] & { replayed: boolean };
export type BatchItem = Schemas["BatchItem"];
export type JobInfo = Schemas["JobInfo"];
export type CancelAnswer = Schemas["CancelAnswer"];
export type ScheduleView = Schemas["ScheduleView"];
export type AuditEvent = Schemas["AuditEvent"];
export type AuditPage = Schemas["AuditPage"];
export type FieldError = Schemas["FieldError"];
export type AuditQuery = Omit<NonNullable<paths["/v1/audit-logs"]["get"]["parameters"]["query"]>, "cursor">;

/**
 * How long a call keeps trying by default: 30 s. Long enough to ride out a Redis restart or a
 * Sentinel failover (down-after 5–10 s plus the election) and a Retry-After of a few seconds;
 * short enough that a producer calling from inside a web request answers before the usual
 * 30–60 s proxy and load-balancer timeouts, instead of hanging there.
 */
export const DEFAULT_DEADLINE_MS = 30_000;
/** The most one attempt may take, within the deadline's remainder. */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 10_000;
/** The most jobs one POST /v1/jobs/batch takes; enqueueBatch splits longer lists. */
export const MAX_BATCH = 1000;

/**
 * The most of one answer's body read: 16 MiB, far above the largest the API sends (an audit page
 * of 1000 events). A hostile or broken server cannot make the client hold more.
 */
export const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/** An answer longer than MAX_ANSWER_BYTES: not what the API sends, so not retried. */
export class AnswerTooLongError extends Error {
  constructor(readonly status: number) {
    super(`the API's answer (${status}) is longer than ${MAX_ANSWER_BYTES} bytes`);
    this.name = "AnswerTooLongError";
  }
}

/**
 * A batch stopped part-way: the requests before the failed one were enqueued; `enqueued` holds
 * their answers in order (the first `enqueued.length` jobs), `cause` why the rest were not.
 */
export class BatchError extends Error {
  constructor(readonly enqueued: BatchItem[], cause: unknown) {
    super(`${enqueued.length} job(s) of the batch were enqueued, then: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = "BatchError";
  }
}

/** `fetch`, its answers' bodies cut off (an AnswerTooLongError) past MAX_ANSWER_BYTES. */
function limitedFetch(fetch: typeof globalThis.fetch): typeof globalThis.fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (response.body === null || [101, 204, 205, 304].includes(response.status)) return response;
    let seen = 0;
    const body = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          seen += chunk.byteLength;
          if (seen > MAX_ANSWER_BYTES) controller.error(new AnswerTooLongError(response.status));
          else controller.enqueue(chunk);
        },
      }),
    );
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

/** The API refused the call (or still answered 503/429 when the deadline came). */
export class ProblemError extends Error {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string | undefined;
  readonly errors: FieldError[];
  /** The answer's Retry-After in seconds, when it had one. */
  readonly retryAfter: number | undefined;
  /** Batch only: the jobs of other kinds the request did enqueue before a conflict or an OTP limit (422, 429). */
  readonly enqueued: unknown;

  constructor(status: number, body: unknown, retryAfter: number | undefined) {
    const problem = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
    const detail = typeof problem.detail === "string" ? problem.detail : typeof body === "string" ? body.slice(0, 512) : undefined;
    super(`the API answered ${status}${detail ? `: ${detail}` : ""}`);
    this.name = "ProblemError";
    this.type = typeof problem.type === "string" ? problem.type : "about:blank";
    this.title = typeof problem.title === "string" ? problem.title : "";
    this.status = status;
    this.detail = detail;
    this.errors = Array.isArray(problem.errors) ? (problem.errors as FieldError[]) : [];
    this.retryAfter = retryAfter;
    this.enqueued = problem.enqueued;
  }

  /** The JSON pointers of the fields this problem names. */
  get fields(): string[] {
    return this.errors.map((e) => e.field);
  }
}

/** No answer came (connection refused or reset, a timeout), the last attempt's cause attached. */
export class TransportError extends Error {
  constructor(readonly attempts: number, cause: unknown) {
    super(`the API could not be reached after ${attempts} attempt(s)`, { cause });
    this.name = "TransportError";
  }
}

export interface ClientOptions {
  /** The producer API's root, such as http://127.0.0.1:8080. */
  baseUrl: string;
  /** One of its PRODUCER_API_KEYS secrets. */
  apiKey: string;
  deadlineMs?: number;
  attemptTimeoutMs?: number;
  /** For tests and instrumentation. */
  fetch?: typeof globalThis.fetch;
}

export interface CallOptions {
  /** The caller's W3C traceparent, passed on so the job's processing continues the trace. */
  traceparent?: string;
  /** How long this call may keep retrying; default the client's. */
  deadlineMs?: number;
  /** Your own key for this job (an order id): the same key within 24 h returns the same job. */
  idempotencyKey?: string;
}

type Attempt<T> = { data?: T; error?: unknown; response: Response };

/** The backoff before retry `n` (1, 2, ...): 200 ms doubling to 5 s, plus up to as much again of jitter. */
export function backoffMs(n: number): number {
  const base = Math.min(200 * 2 ** (n - 1), 5_000);
  return base + Math.random() * base;
}

function retryAfterSeconds(response: Response): number | undefined {
  const value = response.headers.get("retry-after");
  if (value === null || !/^\s*\d+\s*$/.test(value)) return undefined;
  return Math.min(Number(value), 3600);
}

/** `value` when it is a finite number of milliseconds > 0 (a NaN deadline would retry forever). */
function milliseconds(name: string, value: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a finite number of milliseconds > 0, not ${value}`);
  return value;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class JobplaneClient {
  readonly #api: ReturnType<typeof createClient<paths>>;
  readonly #deadlineMs: number;
  readonly #attemptTimeoutMs: number;

  constructor(options: ClientOptions) {
    const url = new URL(options.baseUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`baseUrl ${options.baseUrl}: must be http or https`);
    this.#api = createClient<paths>({
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
      headers: { Authorization: `Bearer ${options.apiKey}` },
      fetch: limitedFetch(options.fetch ?? globalThis.fetch),
    });
    this.#deadlineMs = milliseconds("deadlineMs", options.deadlineMs ?? DEFAULT_DEADLINE_MS);
    this.#attemptTimeoutMs = milliseconds("attemptTimeoutMs", options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS);
  }

  /** Enqueues one job under its idempotency key (a fresh one unless given). */
  async enqueue(job: JobRequest, options: CallOptions = {}): Promise<Accepted> {
    const key = options.idempotencyKey ?? crypto.randomUUID();
    // The API's rule; a key fetch cannot send would otherwise fail every attempt until the deadline.
    if (!/^[\x21-\x7e]{1,255}$/.test(key)) throw new RangeError(`idempotencyKey ${JSON.stringify(key)}: must be 1 to 255 visible ASCII characters`);
    const headers = this.#headers(options, key);
    const { data, response } = await this.#send(options, true, (signal) =>
      this.#api.POST("/v1/jobs", { body: job, headers, signal }),
    );
    return { ...(data as Schemas["Accepted"]), replayed: response.status === 200 };
  }

  /**
   * Enqueues `jobs` in order, MAX_BATCH to a request; each job without a key gets a fresh one,
   * so a retried request makes no job twice. When a request after the first fails, the error is
   * a BatchError whose `enqueued` holds the answers of the requests before it (those jobs were enqueued).
   */
  async enqueueBatch(jobs: BatchJob[], options: CallOptions = {}): Promise<BatchItem[]> {
    const items: BatchItem[] = [];
    for (let start = 0; start < jobs.length; start += MAX_BATCH) {
      const chunk = jobs.slice(start, start + MAX_BATCH).map((job) => ({ ...job, idempotency_key: job.idempotency_key ?? crypto.randomUUID() }));
      try {
        const { data } = await this.#send(options, true, (signal) =>
          this.#api.POST("/v1/jobs/batch", { body: { jobs: chunk }, headers: this.#headers(options), signal }),
        );
        items.push(...(data as Schemas["BatchAccepted"]).jobs);
      } catch (e) {
        if (items.length > 0) throw new BatchError(items, e);
        throw e;
      }
    }
    return items;
  }

  /** A job's status (404 once it is gone, or another producer's). */
  async get(id: string): Promise<JobInfo> {
    const { data } = await this.#send({}, true, (signal) => this.#api.GET("/v1/jobs/{id}", { params: { path: { id } }, signal }));
    return data as JobInfo;
  }

  /** Cancels a job that has not started (409 naming the status for a finished one). */
  async cancel(id: string): Promise<CancelAnswer> {
    const { data } = await this.#send({}, true, (signal) => this.#api.DELETE("/v1/jobs/{id}", { params: { path: { id } }, signal }));
    return data as CancelAnswer;
  }

  /** Creates or replaces the schedule of `request.name`. */
  async putSchedule(request: ScheduleRequest): Promise<ScheduleView> {
    const { data } = await this.#send({}, true, (signal) => this.#api.POST("/v1/schedules", { body: request, signal }));
    return data as ScheduleView;
  }

  async listSchedules(): Promise<ScheduleView[]> {
    const { data } = await this.#send({}, true, (signal) => this.#api.GET("/v1/schedules", { signal }));
    return (data as Schemas["ScheduleList"]).schedules;
  }

  async deleteSchedule(name: string): Promise<void> {
    await this.#send({}, true, (signal) => this.#api.DELETE("/v1/schedules/{name}", { params: { path: { name } }, signal }));
  }

  async pauseSchedule(name: string): Promise<ScheduleView> {
    const { data } = await this.#send({}, true, (signal) => this.#api.POST("/v1/schedules/{name}/pause", { params: { path: { name } }, signal }));
    return data as ScheduleView;
  }

  async resumeSchedule(name: string): Promise<ScheduleView> {
    const { data } = await this.#send({}, true, (signal) => this.#api.POST("/v1/schedules/{name}/resume", { params: { path: { name } }, signal }));
    return data as ScheduleView;
  }

  /** One extra tick now: not resent when an answer was lost (that could fire twice). */
  async runSchedule(name: string): Promise<Schemas["RunView"]> {
    const { data } = await this.#send({}, false, (signal) => this.#api.POST("/v1/schedules/{name}/run", { params: { path: { name } }, signal }));
    return data as Schemas["RunView"];
  }

  /** One page of audit events, newest first. */
  async auditPage(query: AuditQuery, cursor?: string): Promise<AuditPage> {
    const q = cursor === undefined ? query : { ...query, cursor };
    const { data } = await this.#send({}, true, (signal) => this.#api.GET("/v1/audit-logs", { params: { query: q }, signal }));
    return data as AuditPage;
  }

  /** Every audit event `query` selects, newest first, a page fetched as the loop reaches it. */
  async *auditLogs(query: AuditQuery): AsyncGenerator<AuditEvent> {
    let cursor: string | undefined;
    do {
      const page = await this.auditPage(query, cursor);
      yield* page.items;
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
  }

  #headers(options: CallOptions, key?: string): Record<string, string> {
    const headers: Record<string, string> = {};
    if (key !== undefined) headers["Idempotency-Key"] = key;
    if (options.traceparent !== undefined) headers.traceparent = options.traceparent;
    return headers;
  }

  /** Sends an attempt until it succeeds, fails for good, or the deadline comes. */
  async #send<T>(options: CallOptions, resendUnanswered: boolean, attempt: (signal: AbortSignal) => Promise<Attempt<T>>): Promise<Attempt<T>> {
    const started = Date.now();
    const deadline = options.deadlineMs === undefined ? this.#deadlineMs : milliseconds("deadlineMs", options.deadlineMs);
    for (let n = 1; ; n++) {
      const left = Math.max(1, deadline - (Date.now() - started));
      let failure: Error;
      let hintMs = 0;
      try {
        const result = await attempt(AbortSignal.timeout(Math.min(left, this.#attemptTimeoutMs)));
        const { response } = result;
        if (response.ok) return result;
        const retryAfter = retryAfterSeconds(response);
        failure = new ProblemError(response.status, result.error, retryAfter);
        if (response.status !== 503 && response.status !== 429) throw failure;
        hintMs = (retryAfter ?? 0) * 1000;
      } catch (e) {
        if (e instanceof ProblemError || e instanceof AnswerTooLongError) throw e;
        failure = new TransportError(n, e);
        if (!resendUnanswered) throw failure;
      }
      const wait = Math.max(backoffMs(n), hintMs);
      if (Date.now() - started + wait >= deadline) throw failure;
      await sleep(wait);
    }
  }
}
