'use strict';
// The comparison's Node server: the equivalent of the Go handler in
// bench/internal/server/http.go. An HTTP server answering every request with
// the same bytes (res.writeHead(200, {Content-Type, Content-Length}) and the
// same 14-byte body), in a cluster of BENCH_WORKERS workers; the scheduling
// policy is Node's own NODE_CLUSTER_SCHED_POLICY (rr or none).
//
// It speaks the benchmark's control protocol: once every worker listens, one
// JSON line on stdout, {"addr","pid","workers":[{"id","pid"}]}; then for each
// "stats" line on stdin, {"workers":[{"id","pid","conns","reqs"}]}; "quit"
// or the end of stdin disconnects the workers and exits.
const cluster = require('node:cluster');
const http = require('node:http');

const body = Buffer.from('Hello, World!\n');

if (cluster.isPrimary) {
  const n = Math.max(1, parseInt(process.env.BENCH_WORKERS || '2', 10));
  // Workers write to stderr only: stdout is the control channel.
  cluster.setupPrimary({ stdio: ['ignore', 2, 2, 'ipc'] });
  const workers = [];
  let listening = 0;
  let addr = '';
  cluster.on('listening', (w, a) => {
    addr = `${a.address}:${a.port}`;
    if (++listening === n) {
      const ready = { addr, pid: process.pid, workers: workers.map((w) => ({ id: w.id, pid: w.process.pid })) };
      process.stdout.write(JSON.stringify(ready) + '\n');
    }
  });
  cluster.on('exit', (w, code, signal) => {
    if (!w.exitedAfterDisconnect) console.error(`node server: worker ${w.id} died (${signal || code})`);
  });

  let pending = null;
  cluster.on('message', (w, m) => {
    if (!pending || !m || m.cmd !== 'stats') return;
    pending.replies.push({ id: m.id, pid: m.pid, conns: m.conns, reqs: m.reqs });
    if (pending.replies.length === pending.want) finishStats();
  });
  function finishStats(error) {
    const p = pending;
    pending = null;
    clearTimeout(p.timer);
    const r = { workers: p.replies };
    if (error) r.error = error;
    process.stdout.write(JSON.stringify(r) + '\n');
  }
  function stats() {
    const live = Object.values(cluster.workers);
    pending = { want: live.length, replies: [], timer: setTimeout(() => finishStats('timed out'), 10000) };
    for (const w of live) w.send({ cmd: 'stats' });
  }

  let quitting = false;
  function quit() {
    if (quitting) return;
    quitting = true;
    setTimeout(() => {
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
      process.exit(0);
    }, 5000).unref();
    cluster.disconnect(() => process.exit(0));
  }

  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line === 'stats') stats();
      else if (line === 'quit') quit();
    }
  });
  process.stdin.on('end', quit);

  for (let i = 0; i < n; i++) workers.push(cluster.fork());
} else {
  let conns = 0;
  let reqs = 0;
  const server = http.createServer((req, res) => {
    reqs++;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  });
  server.on('connection', () => { conns++; });
  server.listen(0, '127.0.0.1');
  process.on('message', (m) => {
    if (m && m.cmd === 'stats') {
      process.send({ cmd: 'stats', id: cluster.worker.id, pid: process.pid, conns, reqs });
    }
  });
}
