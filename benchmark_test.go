package clusternet

// Benchmarks of the hot paths, here so that they reach them directly and so
// that go test -cpuprofile profiles the primary's side (the test process is
// the primary): message encoding and decoding, frames on a channel, the
// round-robin handoff, and Listen. The end-to-end benchmarks, with a
// primary of their own for each policy, and the comparison with net.Listen
// and Node are in bench/.
//
//	go test -run '^$' -bench . -benchtime 2s
//	go test -run '^$' -bench 'Handoff/rr' -cpuprofile cpu.out && go tool pprof -top cpu.out

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type benchPayload struct {
	Action     string `json:"action"`
	PowerLevel int    `json:"powerLevel"`
	Data       string `json:"data,omitempty"`
}

var benchSizes = []struct {
	name string
	size int
}{{"small", 0}, {"64KiB", 64 << 10}}

func newBenchPayload(size int) benchPayload {
	return benchPayload{Action: "pewpewpew", PowerLevel: 9001, Data: strings.Repeat("x", size)}
}

// BenchmarkMessageCodec is what one message costs its two ends: the
// sender's encodeMessage, the receiver's check on arrival and the handler's
// Decode, for a stream of messages of one type.
func BenchmarkMessageCodec(b *testing.B) {
	for _, ser := range []Serialization{JSON, Gob} {
		for _, sz := range benchSizes {
			b.Run(ser.String()+"/"+sz.name, func(b *testing.B) {
				p := newBenchPayload(sz.size)
				f, err := encodeMessage(ser, p, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(f.b)))
				b.ReportAllocs()
				w := &Worker{codec: ser} // the receiver
				for b.Loop() {
					f, _ := encodeMessage(ser, p, nil)
					body := f.b[frameHeaderLen+1:]
					gd, err := w.checkMessage(body)
					if err != nil {
						b.Fatal(err)
					}
					var q benchPayload
					if err := (Message{data: body, codec: ser, gob: gd}).Decode(&q); err != nil {
						b.Fatal(err)
					}
					putBuffer(f.buf) // as the channel does once the frame is written
				}
			})
		}
	}
}

// BenchmarkChannelFrames sends message frames one way over a channel on a
// socket pair, read by a frameReader, as between a primary and a worker.
func BenchmarkChannelFrames(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			a, fd, err := channelPair()
			if err != nil {
				b.Fatal(err)
			}
			peer, err := inheritedChannel(uint64(fd))
			if err != nil {
				b.Fatal(err)
			}
			ch := newChannel(a, DefaultMaxMessageSize)
			fr := newFrameReader(peer, DefaultMaxMessageSize)
			f, _ := encodeMessage(JSON, newBenchPayload(sz.size), nil)
			b.SetBytes(int64(len(f.b)))
			var got atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					if _, err := fr.next(); err != nil {
						return
					}
					got.Add(1)
				}
			}()
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				ch.send(outFrame{b: f.b})
				for int64(i)-got.Load() > 256 { // a window, as a peer's inbox would impose
					time.Sleep(10 * time.Microsecond)
				}
			}
			for got.Load() < int64(b.N) { // timed: until the last frame is read
				time.Sleep(10 * time.Microsecond)
			}
			b.StopTimer()
			ch.shutdown()
			<-ch.done
			<-done
			fr.close()
		})
	}
}

func init() {
	// bench-accept answers every connection with one byte and closes it.
	helpers["bench-accept"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		if err != nil {
			os.Exit(2)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				select {}
			}
			c.Write([]byte{'x'})
			c.Close()
		}
	}
	// bench-listen measures, for every message, a Listen that the primary
	// binds afresh to its first accepted connection, and answers with the
	// nanoseconds.
	helpers["bench-listen"] = func() {
		// A few ports in turn, port 0 the first time: a worker listening on
		// thousands of addresses looks hostile to the primary, and the
		// primary may still hold the socket of the one just closed (it
		// closes its copy of a handle once the frame is written).
		var ports [16]string
		i := 0
		Self().OnMessage(func(Message) {
			slot := i % len(ports)
			i++
			addr := ports[slot]
			if addr == "" {
				addr = "127.0.0.1:0"
			}
			t0 := time.Now()
			ln, err := Listen("tcp", addr)
			if errors.Is(err, syscall.EADDRINUSE) {
				t0 = time.Now()
				ln, err = Listen("tcp", "127.0.0.1:0")
			}
			if err != nil {
				Self().Send(-1)
				return
			}
			ports[slot] = ln.Addr().String()
			go func() {
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					io.Copy(io.Discard, c)
					c.Close()
				}
			}()
			c, err := ln.Accept()
			d := time.Since(t0)
			ln.Close()
			if err != nil {
				Self().Send(-1)
				return
			}
			c.Close()
			Self().Send(int64(d))
		})
		select {}
	}
}

// BenchmarkHandoff is connections per second through two workers under each
// policy: dial, read the worker's byte, see it close. The test process is
// both the primary and the client.
func BenchmarkHandoff(b *testing.B) {
	for _, p := range []Policy{SchedRR, SchedNone, SchedReusePort} {
		b.Run(p.String(), func(b *testing.B) {
			require(b, map[Policy]string{SchedRR: "rr", SchedNone: "unix", SchedReusePort: "reuseport"}[p])
			setPolicy(b, p)
			addrs := make(chan Address, 2)
			for range 2 {
				w := fork(b, "bench-accept")
				w.OnListening(func(a Address) { addrs <- a })
			}
			a := recv(b, addrs, "listening")
			recv(b, addrs, "listening")
			addr := a.String()
			const conc = 16
			var next atomic.Int64
			var failed atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() {
					var buf [8]byte
					for next.Add(1) <= int64(b.N) {
						c, err := net.DialTimeout("tcp", addr, testTimeout)
						if err != nil {
							failed.Add(1)
							continue
						}
						c.SetDeadline(time.Now().Add(testTimeout))
						if n, _ := io.ReadFull(c, buf[:1]); n != 1 {
							failed.Add(1)
						}
						c.Read(buf[:]) // EOF
						c.Close()
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d connections failed", n, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}

// BenchmarkListen is a worker's Listen (the primary binds the address
// afresh: the worker closed it last) to its first accepted connection (ns/listen, measured in the worker); ns/op adds the
// message round trip that asks for it.
func BenchmarkListen(b *testing.B) {
	for _, p := range []Policy{SchedRR, SchedNone, SchedReusePort} {
		b.Run(p.String(), func(b *testing.B) {
			require(b, map[Policy]string{SchedRR: "rr", SchedNone: "unix", SchedReusePort: "reuseport"}[p])
			setPolicy(b, p)
			w := fork(b, "bench-listen")
			res := make(chan int64, 1)
			w.OnMessage(func(m Message) {
				var d int64
				m.Decode(&d)
				res <- d
			})
			var total int64
			for range 3 { // warm up
				w.Send(0)
				recv(b, res, "listen latency")
			}
			for b.Loop() {
				w.Send(0)
				d := recv(b, res, "listen latency")
				if d < 0 {
					b.Fatal("the worker's Listen or Accept failed")
				}
				total += d
			}
			b.ReportMetric(float64(total)/float64(b.N), "ns/listen")
		})
	}
}
