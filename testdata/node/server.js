// The first example of Node's cluster documentation (CommonJS), as the
// tests run it: only the worker branch runs, under a clusternet primary,
// and the port is the one the test chose (PORT) instead of 8000.
const cluster = require('node:cluster');
const http = require('node:http');
const numCPUs = require('node:os').availableParallelism();
const process = require('node:process');

if (cluster.isPrimary) {
  console.log(`Primary ${process.pid} is running`);

  // Fork workers.
  for (let i = 0; i < numCPUs; i++) {
    cluster.fork();
  }

  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} died`);
  });
} else {
  // Workers can share any TCP connection
  // In this case it is an HTTP server
  http.createServer((req, res) => {
    res.writeHead(200);
    res.end('hello world\n');
  }).listen(Number(process.env.PORT), process.env.HOST);

  console.log(`Worker ${process.pid} started`);
}
