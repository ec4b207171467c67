'use strict';
// The comparison's Node message benchmark: Node's own
// benchmark/cluster/echo.js (the primary sends a payload to every worker and
// waits for all of them to echo it back before sending the next), plus a
// one-way stream with a window of unacknowledged messages; the same as
// bench/internal/server/msg.go in Go.
//
// Configuration: BENCH_MSG, JSON {serialization: "json"|"advanced", workers,
// tests: [{kind: "rt"|"oneway", size}], durationMs, max, window, ackEvery,
// warmup}. Each test runs with workers of its own and prints one JSON line.
const cluster = require('node:cluster');

const payloadBase = { action: 'pewpewpew', powerLevel: 9001 };

function payload(size) {
  return size > 0 ? { ...payloadBase, data: 'x'.repeat(size) } : { ...payloadBase };
}

if (cluster.isPrimary) {
  const cfg = JSON.parse(process.env.BENCH_MSG || '{}');
  const workers = cfg.workers || 1;
  cluster.setupPrimary({ serialization: cfg.serialization || 'json', stdio: ['ignore', 2, 2, 'ipc'] });
  const tests = cfg.tests || [{ kind: 'rt', size: 0 }];
  const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

  function forkAll(kind, cb) {
    const ws = [];
    let online = 0;
    for (let i = 0; i < workers; i++) {
      const w = cluster.fork({ BENCH_KIND: kind, BENCH_ACK: String(cfg.ackEvery || 16) });
      w.on('online', () => { if (++online === workers) cb(ws); });
      ws.push(w);
    }
  }

  function stop(ws, cb) {
    let left = ws.length;
    for (const w of ws) {
      w.removeAllListeners('message');
      w.on('exit', () => { if (--left === 0) cb(); });
      w.disconnect();
    }
  }

  function rt(ws, data, done) {
    const warm = cfg.warmup || 50;
    let got = 0, rounds = 0, start = 0, deadline = Infinity;
    const broadcast = () => { for (const w of ws) w.send(data); };
    const onMessage = (m) => {
      if (++got < ws.length) return;
      got = 0;
      rounds++;
      const t = now();
      if (rounds === warm) {
        start = t;
        deadline = t + cfg.durationMs;
      } else if (rounds > warm && (rounds - warm >= cfg.max || t >= deadline)) {
        done((rounds - warm) * ws.length, (t - start) / 1000);
        return;
      }
      broadcast();
    };
    for (const w of ws) w.on('message', onMessage);
    broadcast();
  }

  function oneway(ws, data, done) {
    const warm = cfg.warmup || 50;
    const window = cfg.window || 128;
    const sent = ws.map(() => 0), acked = ws.map(() => 0);
    let acks = 0, total = 0, base = 0, start = 0, deadline = Infinity, stopped = false;
    const fill = (i) => {
      while (!stopped && sent[i] - acked[i] < window) {
        ws[i].send(data);
        sent[i]++;
      }
    };
    ws.forEach((w, i) => {
      w.on('message', (m) => {
        if (stopped) return;
        total += m.n - acked[i];
        acked[i] = m.n;
        acks++;
        const t = now();
        if (acks === warm) {
          start = t;
          deadline = t + cfg.durationMs;
          base = total;
        } else if (acks > warm && (total - base >= cfg.max || t >= deadline)) {
          stopped = true;
          done(total - base, (t - start) / 1000);
          return;
        }
        fill(i);
      });
    });
    ws.forEach((w, i) => fill(i));
  }

  const next = (i) => {
    if (i === tests.length) return process.exit(0);
    const t = tests[i];
    const data = payload(t.size);
    const bytes = JSON.stringify(data).length;
    forkAll(t.kind === 'oneway' ? 'sink' : 'echo', (ws) => {
      (t.kind === 'oneway' ? oneway : rt)(ws, data, (count, seconds) => {
        const rate = count / seconds;
        const r = {
          impl: 'node', serialization: cfg.serialization || 'json', kind: t.kind, size: t.size, workers,
          count, seconds, rate, mbps: rate * bytes / 1e6,
        };
        process.stdout.write(JSON.stringify(r) + '\n');
        stop(ws, () => next(i + 1));
      });
    });
  };
  next(0);
} else {
  const kind = process.env.BENCH_KIND;
  const every = parseInt(process.env.BENCH_ACK || '16', 10);
  let n = 0;
  process.on('message', (m) => {
    if (kind === 'echo') {
      process.send(m);
      return;
    }
    if (++n % every === 0) process.send({ n });
  });
}
