// The retry rules with a scripted far side (an injected fetch): no services needed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { AnswerTooLongError, BatchError, JobplaneClient, MAX_BATCH, ProblemError, TransportError } from "../dist/index.js";

const problem = (status, headers = {}) =>
  new Response(JSON.stringify({ type: "/problems/unavailable", title: "Unavailable", status }), {
    status,
    headers: { "content-type": "application/problem+json", ...headers },
  });
const accepted = () =>
  new Response(JSON.stringify({ id: "j1", kind: "email", status: "queued", run_at: "2026-11-28T00:00:00Z", links: { self: "/v1/jobs/j1" } }), {
    status: 202,
    headers: { "content-type": "application/json" },
  });
const job = { kind: "email", payload: { to: "ada@example.org", subject: "Hi", text: "x" } };

test("every retry of one call carries the same Idempotency-Key; the next call a new one", async () => {
  const keys = [];
  const answers = [problem(503, { "retry-after": "0" }), () => { throw new TypeError("fetch failed"); }, accepted(), accepted()];
  const fetch = async (request) => {
    keys.push(request.headers.get("idempotency-key"));
    const answer = answers.shift();
    return typeof answer === "function" ? answer() : answer;
  };
  const client = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch });
  const first = await client.enqueue(job);
  assert.equal(first.id, "j1");
  await client.enqueue(job);
  assert.equal(keys.length, 4);
  assert.equal(new Set(keys.slice(0, 3)).size, 1, `${keys}`);
  assert.notEqual(keys[3], keys[0]);
});

test("a call gives up at its deadline, with the last answer; a 4xx is not retried", async () => {
  let calls = 0;
  const unavailable = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch: async () => (calls++, problem(503)) });
  const started = Date.now();
  await assert.rejects(unavailable.enqueue(job, { deadlineMs: 1000 }), (e) => e instanceof ProblemError && e.status === 503);
  assert.ok(calls >= 2 && Date.now() - started < 1500, `${calls} calls in ${Date.now() - started} ms`);
  const refused = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch: async () => (calls++, problem(401)) });
  calls = 0;
  await assert.rejects(refused.enqueue(job), (e) => e instanceof ProblemError && e.status === 401);
  assert.equal(calls, 1);
  const down = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch: async () => { throw new TypeError("fetch failed"); } });
  await assert.rejects(down.enqueue(job, { deadlineMs: 500 }), (e) => e instanceof TransportError && e.attempts >= 2);
});

test("an answer that never ends is cut at the limit and not retried", async () => {
  let calls = 0;
  const endless = () =>
    new Response(new ReadableStream({ pull: (controller) => controller.enqueue(new Uint8Array(1 << 16).fill(32)) }), {
      status: 200,
      headers: { "content-type": "application/json" },
    });
  const client = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch: async () => (calls++, endless()) });
  const started = Date.now();
  await assert.rejects(client.get("j1"), (e) => e instanceof AnswerTooLongError && e.status === 200);
  assert.equal(calls, 1);
  assert.ok(Date.now() - started < 10_000, `${Date.now() - started} ms`);
});

test("a batch failing part-way says which jobs were enqueued", async () => {
  const first = { jobs: Array.from({ length: MAX_BATCH }, (_, i) => ({ id: `j${i}`, idempotency_key: `k${i}`, status: "queued", replayed: false })) };
  const answers = [
    new Response(JSON.stringify(first), { status: 202, headers: { "content-type": "application/json" } }),
    new Response(JSON.stringify({ type: "/problems/validation", title: "Invalid", status: 422, detail: "no" }), {
      status: 422,
      headers: { "content-type": "application/problem+json" },
    }),
  ];
  const client = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch: async () => answers.shift() });
  await assert.rejects(client.enqueueBatch(Array(MAX_BATCH + 1).fill(job)), (e) => {
    assert.ok(e instanceof BatchError, `${e}`);
    assert.equal(e.enqueued.length, MAX_BATCH);
    assert.ok(e.cause instanceof ProblemError && e.cause.status === 422);
    return true;
  });
});

test("a deadline that is no number of milliseconds is refused, not retried forever", async () => {
  const fetch = async () => problem(503);
  assert.throws(() => new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", deadlineMs: Number(undefined), fetch }), RangeError);
  const client = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch });
  await assert.rejects(client.enqueue(job, { deadlineMs: Number("") / 0 }), RangeError);
});

test("an idempotency key the API refuses is refused at once, not retried", async () => {
  let calls = 0;
  const client = new JobplaneClient({ baseUrl: "http://api.invalid", apiKey: "k", fetch: async () => (calls++, accepted()) });
  for (const key of ["order-ü", "a b", ""]) await assert.rejects(client.enqueue(job, { idempotencyKey: key }), RangeError);
  assert.equal(calls, 0);
});
