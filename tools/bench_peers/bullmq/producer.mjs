// The BullMQ producer of tools/bench.py, driven by bench_peers/bullmq_peer.py.
//
// It reads one JSON command per line on stdin and answers each with one JSON line on stdout
// once it is done (commands run one after another):
//   {"op": "one", "n": N, "queue": Q}    N no-op jobs, one `queue.add` at a time -> {"seconds"}
//   {"op": "bulk", "n": N, "queue": Q}   N no-op jobs in one `queue.addBulk`     -> {"seconds"}
//   {"op": "add", "func": F, "args": [...], "queue": Q, "priority": P}   one job  -> {}
//   {"op": "plan", "jobs": [[offset, func, queue, priority, kind, seconds], ...]}
//       each job added `offset` seconds after the start, stamped with the time just before
//       its `queue.add` (the way bench_peers/base.py's run_plan does)            -> {}
// Every answer has "ok"; a failed command answers {"ok": false, "error": "..."}.
// The first line, once Redis answers, is {"ok": true, "ready": true, "bullmq": version}.
// Timings are taken here, around the library calls, so Node's start-up is not counted.

import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { bullmqPriority, connectionOptions, now } from './common.mjs';

const connection = connectionOptions();
const queues = new Map();

function queueNamed(name) {
  let queue = queues.get(name);
  if (!queue) {
    queue = new Queue(name, { connection });
    queue.on('error', (err) => console.error(`queue ${name}: ${err}`));
    queues.set(name, queue);
  }
  return queue;
}

function jobData(func, args) {
  if (func === 'noop') return {};
  if (func === 'timed') return { enqueued: args[0] };
  if (func === 'sleeper') return { kind: args[0], enqueued: args[1], seconds: args[2] };
  throw new Error(`unknown function ${func}`);
}

function add(func, args, queueName, priority) {
  const opts = {};
  const bullPriority = bullmqPriority(queueName, priority);
  if (bullPriority) opts.priority = bullPriority;
  return queueNamed(queueName).add(func, jobData(func, args), opts);
}

async function addOneAtATime(n, queueName) {
  const queue = queueNamed(queueName);
  await queue.waitUntilReady();
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    await queue.add('noop', {});
  }
  return (performance.now() - start) / 1000;
}

async function addInBulk(n, queueName) {
  const queue = queueNamed(queueName);
  await queue.waitUntilReady();
  const jobs = Array.from({ length: n }, () => ({ name: 'noop', data: {} }));
  const start = performance.now();
  await queue.addBulk(jobs);
  return (performance.now() - start) / 1000;
}

async function runPlan(jobs) {
  await Promise.all([...new Set(jobs.map((job) => job[2]))].map((q) => queueNamed(q).waitUntilReady()));
  const start = performance.now();
  for (const [offset, func, queueName, priority, kind, seconds] of jobs) {
    const pause = start + offset * 1000 - performance.now();
    if (pause > 0) await sleep(pause);
    const args = func === 'timed' ? [now()] : [kind, now(), seconds];
    await add(func, args, queueName, priority);
  }
}

async function handle(command) {
  switch (command.op) {
    case 'one':
      return { seconds: await addOneAtATime(command.n, command.queue) };
    case 'bulk':
      return { seconds: await addInBulk(command.n, command.queue) };
    case 'add':
      await add(command.func, command.args, command.queue, command.priority || 0);
      return {};
    case 'plan':
      await runPlan(command.jobs);
      return {};
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

function answer(reply) {
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}

async function main() {
  const manifest = new URL('./node_modules/bullmq/package.json', import.meta.url);
  const { version } = JSON.parse(await readFile(manifest, 'utf8'));
  await queueNamed('bench').waitUntilReady();
  answer({ ok: true, ready: true, bullmq: version });
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    try {
      answer({ ok: true, ...(await handle(JSON.parse(line))) });
    } catch (err) {
      answer({ ok: false, error: String(err && err.stack ? err.stack.split('\n')[0] : err) });
    }
  }
  await Promise.all([...queues.values()].map((queue) => queue.close()));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
