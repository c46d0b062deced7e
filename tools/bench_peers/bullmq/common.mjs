// What the BullMQ producer and worker share: the benchmark's Redis, its output list and its clock.
//
// Times are seconds since the epoch with sub-millisecond resolution, the same reading as
// Python's time.time() (Date.now() has only whole milliseconds, too coarse for W3).
// performance.timeOrigin is the wall clock when the process started and performance.now()
// runs on the monotonic clock, which NTP slews at the same rate as the wall clock.

export const OUT_KEY = 'bench:out';
export const URL_ENV = 'BENCH_REDIS_URL';
export const NOOP_MODE_ENV = 'BENCH_NOOP_MODE';
export const FLUSH_MS = 10;

// The bench's priorities run higher first; BullMQ's run lower first, and a job without one
// (0) runs before every prioritized job. On the priority queue every job gets a BullMQ
// priority, PRIORITY_FLOOR minus the bench's.
export const PRIORITY_QUEUE = 'prio';
export const PRIORITY_FLOOR = 1000;

export function now() {
  return (performance.timeOrigin + performance.now()) / 1000;
}

export function connectionOptions() {
  const raw = process.env[URL_ENV];
  if (!raw) {
    throw new Error(`${URL_ENV} is not set`);
  }
  const url = new URL(raw);
  const options = {
    host: url.hostname || '127.0.0.1',
    port: Number(url.port || 6379),
    db: Number(url.pathname.replace('/', '') || 0),
  };
  if (url.username) options.username = decodeURIComponent(url.username);
  if (url.password) options.password = decodeURIComponent(url.password);
  return options;
}

export function bullmqPriority(queue, priority) {
  return queue === PRIORITY_QUEUE || priority ? PRIORITY_FLOOR - priority : 0;
}
