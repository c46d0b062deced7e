// One BullMQ worker process of tools/bench.py: `node worker.mjs QUEUE`, one job at a time
// (concurrency 1, like the Python peers' single worker), with the handlers of
// tools/bench_handlers.py: each writes one value to the benchmark's output list.
//
//   noop     RPUSH the time it ran; with BENCH_NOOP_MODE=count (W2's no-op variant) it writes
//            nothing per job: it counts in memory and "<count> <time>" is flushed every 10 ms
//   timed    RPUSH "<enqueued> <started>" (W3)
//   sleeper  sleep, then RPUSH "<kind> <enqueued> <started> <ended>" (W4)
//
// The output goes through a Redis client of its own, not BullMQ's connections.

import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Worker } from 'bullmq';
import { FLUSH_MS, NOOP_MODE_ENV, OUT_KEY, connectionOptions, now } from './common.mjs';

const queueName = process.argv[2];
if (!queueName) {
  console.error('usage: node worker.mjs QUEUE');
  process.exit(2);
}
const connection = connectionOptions();
const out = new Redis(connection);
const counting = process.env[NOOP_MODE_ENV] === 'count';

let unflushed = 0;
let flushedAt = 0;

function flush() {
  const count = unflushed;
  unflushed = 0;
  flushedAt = now();
  if (!count) return Promise.resolve();
  return out.rpush(OUT_KEY, `${count} ${flushedAt}`).catch((err) => console.error(`flush: ${err}`));
}

const handlers = {
  async noop() {
    if (!counting) {
      await out.rpush(OUT_KEY, String(now()));
      return;
    }
    unflushed += 1;
    if (now() - flushedAt >= FLUSH_MS / 1000) flush();
  },
  async timed({ enqueued }) {
    await out.rpush(OUT_KEY, `${enqueued} ${now()}`);
  },
  async sleeper({ kind, enqueued, seconds }) {
    const start = now();
    await sleep(seconds * 1000);
    await out.rpush(OUT_KEY, `${kind} ${enqueued} ${start} ${now()}`);
  },
};

const worker = new Worker(
  queueName,
  async (job) => {
    const handler = handlers[job.name];
    if (!handler) throw new Error(`unknown function ${job.name}`);
    await handler(job.data);
  },
  { connection, concurrency: 1 },
);
worker.on('failed', (job, err) => console.error(`job ${job && job.id} failed: ${err}`));
worker.on('error', (err) => console.error(`worker: ${err}`));

const flusher = counting ? setInterval(flush, FLUSH_MS) : null;

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  if (flusher) clearInterval(flusher);
  await worker.close();
  await flush();
  await out.quit();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
