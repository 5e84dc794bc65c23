'use strict';
// BullMQ's side of bench/run's `bullmq` section, the twin of `workers/examples/scenarios.rs`:
// the four scenarios of BullMQ's own benchmark suite (taskforcesh/bullmq-bench,
// src/bullmq-suite.ts), with its sizes, payloads and options, written again here.
//
//   node scenarios.js queue-add          1,000 queue.add() after 1,000 warm-up; data a nested
//                                        object 10 wide and 10 deep
//   node scenarios.js queue-add-bulk     10,000 jobs by addBulk() of 50 after 1,000 warm-up; data
//                                        1 wide, 1 deep
//   node scenarios.js worker-generic     2,000 jobs queued (addBulk of 100), then a Worker with
//                                        concurrency 1 whose processor returns a small object at
//                                        once; the last 1,000 measured
//   node scenarios.js worker-concurrent  the same with 11,000 jobs and concurrency 100
//
// As in bullmq-bench, a worker scenario's clock runs from the processor's start of the last
// warm-up job to that of the last job; the jobs are kept when completed (no removeOnComplete),
// one attempt each (BullMQ's defaults). Unlike bullmq-bench, the rate is measured jobs over
// measured seconds (bullmq-bench divides warm-up + measured jobs by the measured time).
//
// Prints one JSON line: jobs/s, and CPU µs per job of this process (client) and of
// redis-server, each all threads' run time from /proc/<pid>/task/*/schedstat. Environment:
// REDIS_PORT (6379). Keys under --prefix (default bench-bull-<random>), deleted at the end.

const crypto = require('node:crypto');
const fs = require('node:fs');
const { performance } = require('node:perf_hooks');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const args = process.argv.slice(2);
const name = args[0];
function arg(key, fallback) {
  const i = args.indexOf(`--${key}`);
  return i === -1 ? fallback : args[i + 1];
}
const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT || 6379) };
const prefix = arg('prefix', `bench-bull-${crypto.randomBytes(6).toString('hex')}`);

const scenarios = {
  'queue-add': { warmup: 1000, measured: 1000, bulk: 0, data: [10, 10] },
  'queue-add-bulk': { warmup: 1000, measured: 10000, bulk: 50, data: [1, 1] },
  'worker-generic': { warmup: 1000, measured: 1000, concurrency: 1, data: [1, 1] },
  'worker-concurrent': { warmup: 1000, measured: 10000, concurrency: 100, data: [1, 1] },
};
const FILL_BULK = 100;

// `width` members named by fresh UUIDs, each an empty object nested `depth - 1` levels deep.
function sampleData(width, depth) {
  const data = {};
  for (let i = 0; i < width; i++) {
    let member = {};
    for (let j = 1; j < depth; j++) member = { [crypto.randomUUID()]: member };
    data[crypto.randomUUID()] = member;
  }
  return data;
}

function cpuUs(pid) {
  let ns = 0;
  let any = false;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
      any = true;
    } catch {
      // a thread that ended meanwhile
    }
  }
  if (any) return ns / 1000;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10000; // utime + stime, USER_HZ = 100
}

function meter(redisPid) {
  return { at: performance.now(), client: cpuUs(process.pid), redis: cpuUs(redisPid) };
}

function report(from, to, jobs) {
  const secs = (to.at - from.at) / 1000;
  return {
    jobs, secs, jobs_per_s: jobs / secs,
    cpu_us_per_job: { client: (to.client - from.client) / jobs, redis: (to.redis - from.redis) / jobs },
  };
}

async function redisPid() {
  const redis = new IORedis(connection);
  try {
    return Number(/process_id:(\d+)/.exec(await redis.info('server'))[1]);
  } finally {
    await redis.quit();
  }
}

async function adds(s, queue, pid) {
  const data = sampleData(...s.data);
  const step = s.bulk || 1;
  const add = (n) =>
    s.bulk ? queue.addBulk(Array.from({ length: n }, () => ({ name: 'test', data, opts: {} }))) : queue.add('test', data, {});
  for (let added = 0; added < s.warmup; added += step) await add(Math.min(step, s.warmup - added));
  const from = meter(pid);
  for (let added = 0; added < s.measured; added += step) await add(Math.min(step, s.measured - added));
  const to = meter(pid);
  return { ...report(from, to, s.measured), bulk: s.bulk };
}

async function work(s, queue, pid) {
  const data = sampleData(...s.data);
  const result = sampleData(1, 1);
  const total = s.warmup + s.measured;
  for (let written = 0; written < total; written += FILL_BULK) {
    const n = Math.min(FILL_BULK, total - written);
    await queue.addBulk(Array.from({ length: n }, () => ({ name: 'test', data, opts: {} })));
  }
  let count = 0;
  let from;
  let to;
  let worker;
  await new Promise((resolve) => {
    worker = new Worker(
      name,
      async () => {
        count++;
        if (count === s.warmup) from = meter(pid);
        else if (count === total) {
          to = meter(pid);
          resolve();
        }
        return result;
      },
      { connection, prefix, concurrency: s.concurrency },
    );
  });
  await worker.close();
  const counts = await queue.getJobCounts('completed', 'failed', 'wait', 'active', 'delayed');
  if (counts.completed !== total) throw new Error(`${JSON.stringify(counts)} of ${total} jobs`);
  return { ...report(from, to, s.measured), concurrency: s.concurrency };
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
  const s = scenarios[name];
  if (!s) throw new Error(`the scenario must be one of ${Object.keys(scenarios).join(', ')}, not ${name}`);
  const queue = new Queue(name, { connection, prefix });
  await queue.waitUntilReady();
  try {
    const pid = await redisPid();
    const out = s.concurrency ? await work(s, queue, pid) : await adds(s, queue, pid);
    process.stdout.write(`${JSON.stringify({ scenario: name, system: 'bullmq', ...out })}\n`);
  } finally {
    await queue.close();
    await deletePrefix();
  }
}

main().catch((err) => {
  console.error(`scenarios.js: ${err.stack || err}`);
  deletePrefix().finally(() => process.exit(1));
});
