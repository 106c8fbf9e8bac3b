package cli

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Shutdown is a server's reaction to SIGINT and SIGTERM, in three steps:
//
//  1. The first signal asks for a graceful stop: Context is cancelled. The
//     server stops taking work, lets the requests in flight finish within
//     its grace period, finishes trace recordings, flushes and closes its
//     writable layers, and exits.
//  2. The second signal asks for a quick stop: Quick is closed. The server
//     stops waiting for requests in flight, but still finishes the trace
//     recordings and flushes the writable layers (work bounded by what is
//     in memory) before it exits.
//  3. The third signal ends the process at once, by the signal's default
//     action, whatever it is doing: Shutdown stops catching the signals
//     when it sees the second.
type Shutdown struct {
	ctx    context.Context
	cancel context.CancelFunc
	quick  chan struct{}
	sigs   chan os.Signal
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// NotifyShutdown starts catching SIGINT and SIGTERM (see Shutdown). Stop
// ends it.
func NotifyShutdown() *Shutdown {
	s := &Shutdown{
		quick: make(chan struct{}),
		sigs:  make(chan os.Signal, 2),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	signal.Notify(s.sigs, os.Interrupt, syscall.SIGTERM)
	go s.watch()
	return s
}

func (s *Shutdown) watch() {
	defer close(s.done)
	select {
	case <-s.sigs:
		s.cancel()
	case <-s.quit:
		return
	}
	select {
	case <-s.sigs:
		// The third signal gets the default action: stop catching before
		// telling the server to hurry.
		signal.Stop(s.sigs)
		close(s.quick)
	case <-s.quit:
	}
}

// Context is cancelled at the first signal.
func (s *Shutdown) Context() context.Context { return s.ctx }

// Quick is closed at the second signal.
func (s *Shutdown) Quick() <-chan struct{} { return s.quick }

// Stop stops catching the signals (they get their default action again)
// and cancels Context.
func (s *Shutdown) Stop() {
	s.once.Do(func() {
		signal.Stop(s.sigs)
		close(s.quit)
		<-s.done
		s.cancel()
	})
}
