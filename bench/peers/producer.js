'use strict';
// The peer of Jobplane's producer-api in bench/run: Fastify + BullMQ doing the same work for
// POST /v1/jobs. It checks the bearer secret, validates the body minimally (a known kind, an
// object payload, for a webhook a http(s) url and an event), and enqueues with
// queue.add(kind, payload, { jobId: <Idempotency-Key> }): BullMQ does not add a job whose id
// exists, which is its deduplication. Answers 202 {id, kind, status} like producer-api.
//
// Settings (environment): PEER_PORT (8090), REDIS_PORT (6379), PEER_PREFIX (BullMQ key prefix),
// BENCH_API_KEY (the bearer secret), PEER_PROCESSES (1: one process; N: node:cluster with N).

const cluster = require('node:cluster');
const crypto = require('node:crypto');
const Fastify = require('fastify');
const { Queue } = require('bullmq');

const port = Number(process.env.PEER_PORT || 8090);
const processes = Number(process.env.PEER_PROCESSES || 1);
const prefix = process.env.PEER_PREFIX || 'bench-bull';
const secret = process.env.BENCH_API_KEY;
if (!secret) {
  console.error('producer.js: BENCH_API_KEY is required');
  process.exit(2);
}

const KINDS = ['otp_sms', 'email', 'webhook', 'audit_log'];
const expected = crypto.createHash('sha256').update(`Bearer ${secret}`).digest();

function authorized(header) {
  // Constant-time, as producer-api compares digests of the secrets.
  const got = crypto.createHash('sha256').update(header || '').digest();
  return crypto.timingSafeEqual(got, expected);
}

function problem(reply, status, detail) {
  return reply.code(status).type('application/problem+json').send({ status, detail });
}

async function serve() {
  const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT || 6379) };
  const defaultJobOptions = {
    attempts: 10,
    backoff: { type: 'exponential', delay: 5000 },
    removeOnComplete: { age: 60 },
  };
  const queues = Object.fromEntries(
    KINDS.map((kind) => [kind, new Queue(kind, { connection, prefix, defaultJobOptions })]),
  );
  const app = Fastify({ logger: false, bodyLimit: 256 * 1024 });

  app.post('/v1/jobs', async (request, reply) => {
    if (!authorized(request.headers.authorization)) return problem(reply, 401, 'unknown key');
    const body = request.body;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return problem(reply, 422, 'the body must be an object');
    }
    const { kind, payload } = body;
    if (!KINDS.includes(kind)) return problem(reply, 422, 'unknown kind');
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      return problem(reply, 422, 'payload must be an object');
    }
    if (kind === 'webhook') {
      if (typeof payload.url !== 'string' || !/^https?:\/\/[^/]+/.test(payload.url)) {
        return problem(reply, 422, 'payload.url must be an http(s) URL');
      }
      if (typeof payload.event !== 'string' || payload.event.length === 0 || payload.event.length > 128) {
        return problem(reply, 422, 'payload.event must be 1-128 characters');
      }
    }
    const key = request.headers['idempotency-key'];
    if (key !== undefined && (key.length === 0 || key.length > 255)) {
      return problem(reply, 422, 'Idempotency-Key must be 1-255 characters');
    }
    const job = await queues[kind].add(kind, payload, key === undefined ? {} : { jobId: key });
    reply.code(202).header('location', `/v1/jobs/${job.id}`);
    return { id: job.id, kind, status: 'queued' };
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  const stop = async () => {
    await app.close();
    await Promise.all(Object.values(queues).map((q) => q.close()));
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await Promise.all(Object.values(queues).map((q) => q.waitUntilReady()));
  await app.listen({ host: '127.0.0.1', port });
}

if (processes > 1 && cluster.isPrimary) {
  let stopping = false;
  for (let i = 0; i < processes; i++) cluster.fork();
  cluster.on('exit', (_worker, code) => {
    if (!stopping) {
      console.error(`producer.js: a cluster process exited (${code})`);
      process.exit(1);
    }
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  serve().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
