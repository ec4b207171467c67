// A cluster worker whose HTTP server answers "node <worker id>", for the
// tests that need to know which worker served a request. PORT and HOST say
// where it listens (PORT=0: a port the cluster shares, as Node does), or
// SOCKET a Unix socket path. MAXCONN sets server.maxConnections (Node 20
// refuses a connection the primary hands it past that, accepted: false).
// STALL=1 blocks its event
// loop once it listens, so that it reads nothing more from the primary;
// STALL_THEN_CLOSE=ms blocks it that long, then closes the server.
// A string message is answered with its length.
const cluster = require('node:cluster');
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.writeHead(200, { Connection: 'close' });
  res.end(`node ${cluster.worker.id}\n`);
});
if (process.env.MAXCONN !== undefined) {
  server.maxConnections = Number(process.env.MAXCONN);
}
server.on('listening', () => {
  if (process.env.STALL === '1') {
    setTimeout(() => {
      process.send('stalling'); // written before the loop blocks
      for (;;) {}
    }, 0);
  } else if (process.env.STALL_THEN_CLOSE) {
    // Blocks for that many ms, then closes the server before its loop
    // reads what the primary sent meanwhile: every connection in flight
    // comes back refused (accepted: false), in every Node version.
    setTimeout(() => {
      process.send('stalling'); // written before the loop blocks
      const end = Date.now() + Number(process.env.STALL_THEN_CLOSE);
      while (Date.now() < end) {}
      server.close();
      process.send('closed');
    }, 0);
  }
});
if (process.env.SOCKET) {
  server.listen(process.env.SOCKET);
} else {
  server.listen(Number(process.env.PORT), process.env.HOST);
}
process.on('message', (msg) => {
  if (msg === 'address') {
    process.send({ address: server.address() });
  } else if (typeof msg === 'string') {
    process.send(msg.length);
  }
});
