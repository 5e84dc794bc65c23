'use strict';
// BullMQ's side of bench/run, the twin of `workers/examples/suite.rs process|latency`.
//
//   node drive.js process --jobs N --processes P --concurrency C --receiver URL
//       fills the queue with N webhook jobs (addBulk, 1000 a call), forks P worker.js processes
//       (C jobs at once in all, split evenly) and times first delivery → queue empty
//   node drive.js latency --rate R --seconds S --processes P --concurrency C --receiver URL
//       forks the workers, then queue.add()s R jobs/s for S s and reports enqueue → start
//
// Prints one JSON line on stdout. Uses a key prefix of its own (--prefix, default
// bench-bull-<random>) and deletes every key under it at the end. Environment: REDIS_PORT (6379), BENCH_CPU_PIDS (name=pid,...:
// processes whose CPU time is reported per job).

const { fork } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { Queue } = require('bullmq');
const IORedis = require('ioredis');

const args = process.argv.slice(2);
const mode = args[0];
function arg(name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
}
const redisPort = Number(process.env.REDIS_PORT || 6379);
const connection = { host: '127.0.0.1', port: redisPort };
const receiver = String(arg('receiver', '')).replace(/\/$/, '');
const processes = Number(arg('processes', 1));
const concurrency = Number(arg('concurrency', 200));
const prefix = arg('prefix', `bench-bull-${crypto.randomBytes(6).toString('hex')}`);
const hook = `${receiver}/hook`;
const defaultJobOptions = { attempts: 10, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: { age: 60 } };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

function cpuUs(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10000; // utime + stime, USER_HZ = 100
  } catch {
    return 0;
  }
}

function otherPids() {
  return (process.env.BENCH_CPU_PIDS || '')
    .split(',')
    .filter((p) => p.includes('='))
    .map((p) => {
      const [name, pid] = p.split('=');
      return { name, pid: Number(pid) };
    });
}

async function far(what, method = 'GET') {
  const res = await fetch(`${receiver}/${what}`, { method });
  if (!res.ok) throw new Error(`receiver /${what}: ${res.status}`);
  return method === 'GET' ? res.json() : null;
}

async function waitForDeliveries(n, limitMs) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const { count } = await far('stats');
    if (count >= n) return;
    if (Date.now() > deadline) throw new Error(`the receiver saw ${count} of ${n} deliveries`);
    await sleep(10);
  }
}

async function pending(queue) {
  const c = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'paused');
  return Object.values(c).reduce((a, b) => a + b, 0);
}

function startWorkers() {
  const per = Math.ceil(concurrency / processes);
  return Promise.all(
    Array.from({ length: processes }, () => {
      const child = fork(path.join(__dirname, 'worker.js'), [], {
        env: { ...process.env, REDIS_PORT: String(redisPort), PEER_PREFIX: prefix, PEER_CONCURRENCY: String(per) },
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      });
      return new Promise((resolve, reject) => {
        child.once('message', (m) => (m.ready ? resolve(child) : reject(new Error('worker.js: no ready'))));
        child.once('exit', (code) => reject(new Error(`worker.js exited (${code})`)));
      });
    }),
  );
}

function ask(child, msg) {
  return new Promise((resolve) => {
    child.once('message', resolve);
    child.send(msg);
  });
}

async function stopWorkers(children) {
  await Promise.all(
    children.map(
      (c) =>
        new Promise((resolve) => {
          c.removeAllListeners('exit');
          c.once('exit', resolve);
          c.send({ stop: true });
        }),
    ),
  );
}

async function fill(queue, total, data) {
  for (let written = 0; written < total; ) {
    const n = Math.min(1000, total - written);
    await queue.addBulk(Array.from({ length: n }, () => ({ name: 'webhook', data: { url: hook, event: 'bench.ping', data } })));
    written += n;
  }
}

async function runProcess(queue) {
  const total = Number(arg('jobs', 100000));
  await fill(queue, total, { n: 1 });
  await far('reset', 'POST');
  const others = otherPids();
  const othersBefore = others.map((o) => cpuUs(o.pid));
  const spawned = nowUs();
  const children = await startWorkers();
  const deadline = Date.now() + 600000;
  while ((await pending(queue)) > 0) {
    if (Date.now() > deadline) throw new Error('the queue did not drain within 600 s');
    await sleep(10);
  }
  const emptied = nowUs();
  const cpu = { worker: children.reduce((a, c) => a + cpuUs(c.pid), 0) / total };
  others.forEach((o, i) => (cpu[o.name] = (cpuUs(o.pid) - othersBefore[i]) / total));
  await stopWorkers(children);
  const seen = await far('stats');
  const secs = (emptied - seen.first_us) / 1e6;
  return {
    system: 'bullmq', jobs: total, concurrency, processes, secs, jobs_per_s: total / secs,
    start_to_first_ms: (seen.first_us - spawned) / 1e3, delivered: seen.count, cpu_us_per_job: cpu,
  };
}

async function runLatency(queue) {
  const rate = Number(arg('rate', 1000));
  const seconds = Number(arg('seconds', 10));
  const children = await startWorkers();
  try {
    // Warm-up, not counted.
    await far('reset', 'POST');
    await fill(queue, 200, { n: 0 });
    await waitForDeliveries(200, 30000);
    while ((await pending(queue)) > 0) await sleep(10);
    await Promise.all(children.map((c) => ask(c, { reset: true })));
    await far('reset', 'POST');

    const total = rate * seconds;
    const adds = [];
    let sent = 0;
    const started = performance.now();
    await new Promise((resolve) => {
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - started) * rate) / 1000) + 1);
        while (sent < due) {
          adds.push(queue.add('webhook', { url: hook, event: 'bench.ping', data: { n: sent, t_us: nowUs() } }));
          sent++;
        }
        if (sent >= total) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
    const sentSecs = (performance.now() - started) / 1000;
    await Promise.all(adds);
    await waitForDeliveries(total, 60000);
    const reports = await Promise.all(children.map((c) => ask(c, { report: true })));
    const ms = reports.flatMap((r) => r.fromTimestampMs).sort((a, b) => a - b);
    const us = reports.flatMap((r) => r.fromEnqueueUs).sort((a, b) => a - b);
    return {
      system: 'bullmq', rate, jobs: total, sent_per_s: total / sentSecs, concurrency, processes,
      start_ms: { n: ms.length, p50: percentile(ms, 50), p99: percentile(ms, 99), max: ms[ms.length - 1] || 0,
        clock: 'Date.now() at processor start - job.timestamp, ms' },
      start_us: { n: us.length, p50_us: percentile(us, 50), p99_us: percentile(us, 99), max_us: us[us.length - 1] || 0 },
      receiver_us: await far('latency'),
    };
  } finally {
    await stopWorkers(children);
  }
}

async function deletePrefix() {
  const redis = new IORedis(connection);
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
  await redis.quit();
}

async function main() {
  if (!receiver) throw new Error('--receiver URL is required');
  const queue = new Queue('webhook', { connection, prefix, defaultJobOptions });
  await queue.waitUntilReady();
  try {
    let out;
    if (mode === 'process') out = await runProcess(queue);
    else if (mode === 'latency') out = await runLatency(queue);
    else throw new Error(`mode must be process or latency, not ${mode}`);
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await queue.close();
    await deletePrefix();
  }
}

main().catch((err) => {
  console.error(`drive.js: ${err.stack || err}`);
  deletePrefix().finally(() => process.exit(1));
});
