package outbound

import (
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestStreamInOrder: the stream hands out every batch once, numbered and
// in recipient order, then io.EOF; the copies decrypt.
func TestStreamInOrder(t *testing.T) {
	rs := recipients(t, 95, legacyX25519)
	params := testParams(t)
	params.BatchSize = 10
	params.Workers = 3
	pr, err := Prepare(testPost(), params)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pr.Stream(rs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Len() != 10 {
		t.Fatalf("Len = %d, want 10", s.Len())
	}
	for i := range 10 {
		b, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if b.Number != i+1 || len(b.Recipients) != min(10, 95-i*10) || b.Recipients[0] != rs[i*10].Address {
			t.Fatalf("batch %d: number %d, recipients %v", i+1, b.Number, b.Recipients)
		}
		if i == 4 || i == 9 {
			last := len(b.Recipients) - 1
			if _, err := decrypt(t, parseMessage(t, b.Message()).pgp, ent(rs[i*10+last].Key)); err != nil {
				t.Fatalf("batch %d: %v", i+1, err)
			}
		}
	}
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("after the last batch: %v, want io.EOF", err)
	}
}

// TestStreamClose: a stream closed after two batches stops its workers,
// and Next never blocks on a batch nobody makes.
func TestStreamClose(t *testing.T) {
	rs := recipients(t, 300, legacyX25519)
	params := testParams(t)
	params.BatchSize = 5
	pr, err := Prepare(testPost(), params)
	if err != nil {
		t.Fatal(err)
	}
	// The workers wait before the third batch until the stream is
	// closed: on an idle machine they would otherwise make all 60
	// batches before Close, and Next would reach io.EOF.
	release := make(chan struct{})
	hook := func(batch int) {
		if batch >= 2 {
			<-release
		}
	}
	unitHook.Store(&hook)
	defer unitHook.Store(nil)
	before := runtime.NumGoroutine()
	s, err := pr.Stream(rs)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	close(release)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, err := s.Next()
			if err == io.EOF {
				t.Error("every batch made after Close")
				return
			}
			if err != nil {
				if !errors.Is(err, errStreamStopped) {
					t.Errorf("after Close: %v", err)
				}
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Next blocked after Close")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamEmpty: no recipients, no stream, no batches.
func TestStreamEmpty(t *testing.T) {
	pr, err := Prepare(testPost(), testParams(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := pr.Stream(nil)
	if err != nil || s != nil || s.Len() != 0 {
		t.Fatalf("Stream(nil) = %v, %v", s, err)
	}
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("Next on a nil stream: %v", err)
	}
	s.Close()
}

// TestStreamWorkerPanic: a panic in a worker goroutine (a bug) fails its
// batch with the panic and its stack instead of killing the process;
// the batches before it are whole, Next after it keeps the error.
func TestStreamWorkerPanic(t *testing.T) {
	rs := recipients(t, 40, legacyX25519)
	params := testParams(t)
	params.BatchSize = 10
	params.Workers = 2
	pr, err := Prepare(testPost(), params)
	if err != nil {
		t.Fatal(err)
	}
	hook := func(batch int) {
		if batch == 2 {
			panic("worker bug")
		}
	}
	unitHook.Store(&hook)
	defer unitHook.Store(nil)
	s, err := pr.Stream(rs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 2 {
		if _, err := s.Next(); err != nil {
			t.Fatalf("batch %d: %v", i+1, err)
		}
	}
	_, err = s.Next()
	if err == nil || !strings.Contains(err.Error(), "panic while making the key packets of batch 3: worker bug") || !strings.Contains(err.Error(), "makeUnit") {
		t.Fatalf("batch 3: %v", err)
	}
	if _, again := s.Next(); again == nil || again.Error() != err.Error() {
		t.Fatalf("Next after the error: %v", again)
	}
}
