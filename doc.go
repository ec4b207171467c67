// Package clusternet is the Node.js cluster module for Go: a primary process
// forks workers, talks to them with messages that may carry sockets and files,
// and shares listening sockets with them.
//
// The listening side is a drop-in replacement for net.Listen:
//
//	ln, err := clusternet.Listen("tcp", ":8000")
//	if err != nil {
//		log.Fatal(err)
//	}
//	http.Serve(ln, handler)
//
// In a process that is not a worker, Listen is net.Listen. In a worker, the
// primary owns the socket and, depending on the scheduling policy, accepts
// connections and hands them to the workers in turn (SchedRR, the default on
// Unix), shares the listening socket with them (SchedNone, and always on
// Windows), or binds one SO_REUSEPORT socket per worker (SchedReusePort).
//
// A program becomes a cluster by forking itself:
//
//	if clusternet.IsPrimary() {
//		for i := 0; i < runtime.NumCPU(); i++ {
//			clusternet.Fork()
//		}
//		select {}
//	}
//	// worker: serve as usual
//
// Workers are identified by the CLUSTERNET_WORKER_ID environment variable,
// which the package reads and removes when it is initialized, so that
// processes started by a worker are not workers themselves. The channel to the
// primary is an inherited Unix socket pair (a duplex named pipe on Windows) that
// nobody else can reach.
//
// Events (fork, online, listening, message, disconnect, exit, setup) follow
// Node's documentation; their handlers run one at a time, in order, on a
// goroutine owned by the package.
package clusternet
