// A cluster worker that sends the primary every connection its server
// accepts (process.send(message, socket)), and on the primary's word closes
// that server ('close', answered 'closed' once it has) or counts its
// connections ('count', answered {count}): both ask the primary about the
// connections sent to it (NODE_SOCKET_NOTIFY_CLOSE, NODE_SOCKET_GET_COUNT).
const cluster = require('node:cluster');
const net = require('node:net');

const server = net.createServer((socket) => {
  process.send(`conn for node ${cluster.worker.id}`, socket);
});
server.listen(Number(process.env.PORT), process.env.HOST);
process.on('message', (msg) => {
  if (msg === 'count') {
    server.getConnections((err, count) => process.send({ count, err: err ? String(err) : null }));
  } else if (msg === 'close') {
    server.close(() => process.send('closed'));
  }
});
