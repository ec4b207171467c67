// A cluster worker with a UDP socket bound to HOST:PORT (PORT=0: a port
// the cluster shares, as Node does), shared by the primary as Node's own
// primary shares it: every datagram is answered with "node <worker id>".
const cluster = require('node:cluster');
const dgram = require('node:dgram');

const socket = dgram.createSocket('udp4');
socket.on('message', (msg, rinfo) => {
  socket.send(`node ${cluster.worker.id}`, rinfo.port, rinfo.address);
});
socket.bind(Number(process.env.PORT), process.env.HOST);
