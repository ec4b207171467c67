// A cluster worker that uses the sockets the primary sends with a message
// (worker.send(message, handle) in Node; w.Send(message, WithHandle(h)) in
// clusternet): a connection is answered and ended, a server answers every
// connection it accepts, a UDP socket answers every datagram. Without a
// handle, 'leave' makes the worker disconnect itself
// (cluster.worker.disconnect()), 'die' kill itself (cluster.worker.kill()).
const cluster = require('node:cluster');
const net = require('node:net');
const dgram = require('node:dgram');

process.on('message', (msg, handle) => {
  const me = `node ${cluster.worker.id}`;
  if (handle instanceof net.Socket) {
    handle.end(`${me} got ${msg}\n`);
  } else if (handle instanceof net.Server) {
    handle.on('connection', (s) => s.end(`${me} serves ${msg}\n`));
    process.send('serving');
  } else if (handle instanceof dgram.Socket) {
    handle.on('message', (m, rinfo) => handle.send(`${me} ${msg} ${m}`, rinfo.port, rinfo.address));
    process.send('serving');
  } else if (msg === 'leave') {
    cluster.worker.disconnect();
  } else if (msg === 'die') {
    cluster.worker.kill();
  } else {
    process.send(`no handle with ${JSON.stringify(msg)}`);
  }
});
