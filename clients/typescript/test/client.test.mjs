// The TypeScript client against a real producer API, Redis, worker and PostgreSQL, which
// tests/e2e/clients.rs starts and names in the environment:
//   JOBPLANE_URL, JOBPLANE_KEY    the API and a key of it (OTP limit: 1 a number per 2 s)
//   JOBPLANE_REDIS_PID            its private redis-server, frozen here with SIGSTOP
//   JOBPLANE_TENANT               a tenant of the audit log no one else writes
// Run by `cargo test -p jobplane-tests --test e2e clients::typescript` (so by scripts/test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { JobplaneClient, ProblemError } from "../dist/index.js";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run this through tests/e2e/clients.rs`);
  return value;
};
const client = new JobplaneClient({ baseUrl: env("JOBPLANE_URL"), apiKey: env("JOBPLANE_KEY") });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("a retry after a 503 (Redis frozen) makes exactly one job: the key is reused", async () => {
  const pid = Number(env("JOBPLANE_REDIS_PID"));
  await client.enqueue({ kind: "webhook", payload: { url: "https://example.org/h", event: "warm.up" } });
  process.kill(pid, "SIGSTOP");
  const started = Date.now();
  let call;
  try {
    call = client.enqueue({ kind: "email", payload: { to: "ada@example.org", subject: "Hello", text: "Hi" } });
    await sleep(4000);
  } finally {
    process.kill(pid, "SIGCONT");
  }
  const accepted = await call;
  assert.ok(Date.now() - started >= 4000);
  const job = await client.get(accepted.id);
  assert.equal(job.kind, "email");
  // tests/e2e/clients.rs counts the email jobs in Redis afterwards: exactly one.
  console.log(`EMAIL_JOB ${accepted.id}`);
});

test("a 429 with Retry-After 2 waits at least 2 s, then succeeds", async () => {
  const otp = { kind: "otp_sms", payload: { to: "+14155550100", code: "123456" } };
  await client.enqueue(otp);
  await assert.rejects(client.enqueue(otp, { deadlineMs: 1000 }), (e) => {
    assert.ok(e instanceof ProblemError);
    assert.equal(e.status, 429);
    assert.equal(e.retryAfter, 2);
    return true;
  });
  await sleep(2000);
  await client.enqueue(otp);
  const started = Date.now();
  const accepted = await client.enqueue(otp);
  assert.ok(Date.now() - started >= 2000, `waited ${Date.now() - started} ms`);
  assert.equal(accepted.kind, "otp_sms");
});

test("a 422 surfaces the field pointer", async () => {
  await assert.rejects(client.enqueue({ kind: "email", payload: { to: ["nope"], subject: "Hi", text: "x" } }), (e) => {
    assert.ok(e instanceof ProblemError);
    assert.equal(e.status, 422);
    assert.equal(e.type, "/problems/validation");
    assert.deepEqual(e.fields, ["/payload/to/0"]);
    return true;
  });
});

test("pagination over 2,500 audit events yields each once", async () => {
  const tenant = env("JOBPLANE_TENANT");
  const start = Date.parse("2026-11-01T00:00:00Z");
  const jobs = Array.from({ length: 2500 }, (_, i) => ({
    kind: "audit_log",
    payload: {
      event_id: crypto.randomUUID(),
      tenant_id: tenant,
      actor: "user:7",
      action: "invoice.paid",
      resource_type: "invoice",
      occurred_at: new Date(start + Math.floor(i / 2) * 1000).toISOString(),
    },
  }));
  const items = await client.enqueueBatch(jobs);
  assert.equal(items.length, 2500);
  const want = new Set(jobs.map((j) => j.payload.event_id));
  let seen = [];
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(250)) {
    seen = [];
    for await (const event of client.auditLogs({ tenant_id: tenant, limit: 300 })) seen.push(event.event_id);
    if (seen.length >= 2500) break;
  }
  assert.equal(seen.length, 2500);
  assert.equal(new Set(seen).size, 2500);
  assert.ok(seen.every((id) => want.has(id)));
});
