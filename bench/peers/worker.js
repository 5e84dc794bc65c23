'use strict';
// The peer of Jobplane's worker in bench/run: a BullMQ Worker whose processor does what
// Jobplane's webhook handler does for a job: the body {type, timestamp, data}, signed per
// Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256
// of "id.timestamp.body">), POSTed over a keep-alive connection pool to the job's url; a 2xx is
// success, anything else fails the attempt. Completed jobs are kept 60 s (Jobplane's bench
// worker runs with JOB_RETENTION_SECONDS=60).
//
// Started by drive.js through child_process.fork. Settings (environment): REDIS_PORT,
// PEER_PREFIX, PEER_CONCURRENCY (jobs at once in this process), PEER_SECRET (whsec_...).
// IPC: sends {ready: true} once connected; answers {report: true} with its handler-start
// latencies (enqueue → processor start), {reset: true} by forgetting them, and exits on {stop: true}.

const crypto = require('node:crypto');
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const { Worker } = require('bullmq');

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT || 6379) };
const prefix = process.env.PEER_PREFIX || 'bench-bull';
const concurrency = Number(process.env.PEER_CONCURRENCY || 200);
const key = Buffer.from((process.env.PEER_SECRET || 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw').slice(6), 'base64');
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });

// Handler-start latencies: against job.timestamp (Date.now() at queue.add, ms) and against the
// t_us the driver put in the job's data just before queue.add (µs, the receiver's measure too).
const fromTimestampMs = [];
const fromEnqueueUs = [];

function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function post(url, id, body) {
  const timestamp = Math.floor(Date.now() / 1000);
  const signature = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        agent,
        timeout: 30000,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'webhook-id': id,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': `v1,${signature}`,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode >= 200 && res.statusCode < 300) resolve();
          else reject(new Error(`webhook answered ${res.statusCode}`));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('webhook timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

async function processor(job) {
  const startUs = nowUs();
  fromTimestampMs.push(Date.now() - job.timestamp);
  if (job.data.data && typeof job.data.data.t_us === 'number') fromEnqueueUs.push(startUs - job.data.data.t_us);
  const body = JSON.stringify({ type: job.data.event, timestamp: new Date().toISOString(), data: job.data.data });
  await post(job.data.url, job.id, body);
}

const worker = new Worker('webhook', processor, {
  connection,
  prefix,
  concurrency,
  removeOnComplete: { age: 60 },
});
worker.on('error', (err) => console.error('worker.js:', err.message));

process.on('message', async (msg) => {
  if (msg.report) {
    process.send({ fromTimestampMs, fromEnqueueUs });
  } else if (msg.reset) {
    fromTimestampMs.length = 0;
    fromEnqueueUs.length = 0;
    process.send({ reset: true });
  } else if (msg.stop) {
    await worker.close();
    process.exit(0);
  }
});
process.on('SIGTERM', async () => {
  await worker.close();
  process.exit(0);
});

worker.waitUntilReady().then(() => process.send({ ready: true }));
