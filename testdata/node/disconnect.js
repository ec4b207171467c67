// Node's cluster documentation, worker.disconnect(): the worker's server
// keeps its connections open forever, so the primary sends 'shutdown' and
// kills the worker if it has not disconnected within a timeout. The port is
// PORT instead of 8000. SHUTDOWN_CLOSES=1 makes the 'shutdown' handler end
// the connections (the graceful path); without it they stay (the kill path).
const cluster = require('node:cluster');

if (cluster.isPrimary) {
  const worker = cluster.fork();
  let timeout;

  worker.on('listening', (address) => {
    worker.send('shutdown');
    worker.disconnect();
    timeout = setTimeout(() => {
      worker.kill();
    }, 2000);
  });

  worker.on('disconnect', () => {
    clearTimeout(timeout);
  });

} else if (cluster.isWorker) {
  const net = require('node:net');
  const sockets = new Set();
  const server = net.createServer((socket) => {
    // connections never end
    sockets.add(socket);
    socket.write('connected\n');
  });

  server.listen(Number(process.env.PORT), process.env.HOST);

  process.on('message', (msg) => {
    if (msg === 'shutdown') {
      // initiate graceful close of any connections to server
      if (process.env.SHUTDOWN_CLOSES === '1') {
        for (const s of sockets) s.end();
      }
    }
  });
}
