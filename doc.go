// Package clusternet is the Node.js cluster module for Go: a primary process
// forks workers, talks to them with messages that may carry sockets and files,
// and shares listening sockets with them. Beyond Node, it supervises the
// workers: it re-forks those that die, reloads them without refusing a
// connection, and shuts them down gracefully.
//
// # A server
//
// A program becomes a cluster by forking itself: the same binary runs as the
// primary and, started again by it, as every worker. In the primary, [Run]
// forks the workers and keeps them running; in a worker, [Listen] replaces
// [net.Listen] and [ServeHTTP] replaces [http.Server.Serve]:
//
//	func main() {
//		if clusternet.IsPrimary() {
//			if err := clusternet.Run(context.Background(), 0); err != nil {
//				log.Fatal(err)
//			}
//			return
//		}
//		ln, err := clusternet.Listen("tcp", ":8000")
//		if err != nil {
//			log.Fatal(err)
//		}
//		srv := &http.Server{Handler: handler}
//		log.Fatal(clusternet.ServeHTTP(srv, ln))
//	}
//
// A worker is started with the CLUSTERNET_WORKER_ID environment variable,
// which the package reads and removes when it is initialized, so that
// [IsWorker] is already true when main runs and processes started by a worker
// are not workers themselves. The channel to the primary is an inherited Unix
// socket pair (a duplex named pipe on Windows) that nobody else can reach.
//
// In a process that is not a worker, Listen is net.Listen, so the same server
// also runs as one process. In a worker, the primary owns the socket: it binds
// the address once for every worker that listens on it (":0" gives them all
// the same port) and, depending on the scheduling policy, hands its
// connections to the workers, shares the socket with them, or binds one per
// worker. A bind error in the primary comes back from the worker's Listen as
// the same error (errors.Is(err, syscall.EADDRINUSE)).
//
// Run keeps n workers (one per CPU for n <= 0). It re-forks a worker that
// dies, after a backoff, and gives up with an error wrapping [ErrCrashLoop]
// when they die in a loop. On SIGHUP (Unix) it reloads them one at a time
// ([Reload]), each replacement listening before the worker it replaces is
// disconnected; a replacement that fails aborts the reload and the old
// workers keep serving. On SIGTERM or SIGINT, or when its context ends, it
// disconnects every worker and returns once they have finished. [Scale]
// changes the number of workers while it runs. [RunOption] values change
// the signals, the timeouts and the backoff, and add a logger, a health
// check, a memory limit ([WithMaxMemory]) and orphan reaping
// ([WithSubreaper]). Under systemd (NOTIFY_SOCKET) it reports readiness,
// reloads and the shutdown.
//
// Serve HTTP in a worker with ServeHTTP rather than [http.Serve] or
// srv.Serve. A disconnected worker (by a reload, a shutdown, or
// [Worker.Disconnect]) closes its listeners, waits for the connections they
// handed out to close, and exits with code 0. ServeHTTP then turns keep-alives
// off, so that every request in progress or already sent is answered before
// the connections close; calling [http.Server.Shutdown] instead would drop the
// requests net/http reads after it began, and doing nothing would leave idle
// connections open, so that the worker never exits. Connections taken out of
// net/http (WebSockets, streams) are the server's to close: [Draining] says
// when.
//
// [Stats] and [Worker.Stats] count connections, messages and restarts;
// [PublishExpvar] publishes them with expvar.
//
// # Forking, events and messages
//
// Node's API is all there: [Fork] starts one worker (with environment
// variables of its own), [Workers] lists them, [Disconnect] stops them all,
// and [SetupPrimary] sets how later workers are started ([Settings]: the
// program, its arguments, directory, environment, output, user).
//
// The primary sees Node's events for every worker ([OnFork], [OnOnline],
// [OnListening], [OnMessage], [OnDisconnect], [OnExit], [OnSetup]) or for one
// ([Worker.OnExit] and the others). Handlers run one at a time, in order, on a
// goroutine owned by the package, so a slow handler holds up every event; for
// one worker the order is fork, online, listening..., then disconnect and exit
// in either order. To be sure to see every event of a worker, add its
// handlers in an OnFork handler.
//
// [Worker.Send] sends a message, encoded with encoding/json or, with
// Settings.Serialization set to [Gob], encoding/gob; in a worker, [Self]
// returns the worker itself, whose Send and OnMessage talk to the primary. A
// message can carry a connection, listener, packet connection or file
// ([WithHandle]), which the receiver takes with [Message.Conn],
// [Message.Listener], [Message.PacketConn] or [Message.File]. Send never waits
// for the peer.
//
// # Scheduling policies
//
// The policy says who accepts the connections of an address that workers
// share. It is set once, before the first Fork or SetupPrimary, with
// [SetSchedulingPolicy] or the CLUSTERNET_SCHED_POLICY environment variable
// (rr, none or reuseport):
//
//   - [SchedRR], the default on Unix: the primary accepts and hands each
//     connection to the next worker that is accepting, as Node's default. The
//     spread is even; a worker that stops accepting is skipped, and what was
//     queued for it is given to the others.
//   - [SchedNone], always on Windows: every worker accepts on the primary's
//     socket, with no hop through the primary, but the kernel picks the worker
//     and often favours a few.
//   - [SchedReusePort]: the primary binds one SO_REUSEPORT socket per worker,
//     which the kernel spreads connections across (evenly on Linux and
//     FreeBSD).
//
// [ListenConfig] sets one listener apart: ReusePort gives it a socket per
// worker whatever the policy, and Exclusive binds it in the worker itself,
// bypassing the primary (Node's exclusive).
//
// # Unix sockets and UDP
//
// Listen("unix", path) works as TCP does: the primary creates the socket file,
// with mode Settings.SocketMode (0600 by default), and removes it when the
// last worker closes its listener; a relative path is the worker's. Abstract
// names ("@name", Linux) work too. [ListenPacket] binds a UDP socket once in
// the primary and shares it with every worker that asks for it (never
// round-robin, as in Node); in a worker the result is a [*UDPConn], which
// embeds [*net.UDPConn].
//
// # Security
//
// The primary reads what a worker sends as hostile input: every frame is
// checked, and everything a worker can make the primary hold is bounded per
// worker. A primary with privileges its workers lack (root binding port 80
// for workers that run as another user, with Settings.Uid and Settings.Gid)
// should set Settings.AllowListen, which is asked before the primary binds
// or shares an address for a worker, and use SchedRR, under which a worker
// never holds the listening socket. The threat model, what a compromised
// worker can and cannot make the primary do, is docs/security.md in the
// repository.
//
// # Windows
//
// The API is the same on Windows, with these differences: SchedRR falls back
// to SchedNone, as in Node; [Worker.Kill] terminates the worker whatever the
// signal, and Run has no reload signal; workers join a job object that ends
// them with the primary; Settings.Uid and Settings.Gid are not supported, and
// Settings.ExtraFiles are inherited at their handle values. docs/windows.md in
// the repository has the details.
package clusternet
