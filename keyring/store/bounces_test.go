package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

func TestRecordBounce(t *testing.T) {
	rules := store.BounceRules{Threshold: 2, ResetAfter: 7 * 24 * time.Hour, Disable: true}
	day := func(d int, h int) time.Time { return time.Date(2026, 3, 1+d, h, 0, 0, 0, time.UTC) }
	perm := func(at time.Time) store.BounceEvent {
		return store.BounceEvent{Permanent: true, Status: "5.1.1", At: at}
	}
	temp := func(at time.Time) store.BounceEvent {
		return store.BounceEvent{Status: "4.2.2", At: at}
	}
	type step struct {
		ev      store.BounceEvent
		counted bool
		reached bool
		score   float64
		bounces int
	}
	for _, tc := range []struct {
		name     string
		rules    store.BounceRules
		steps    []step
		disabled bool
	}{
		{"two permanent days apart reach the threshold", rules, []step{
			{perm(day(0, 9)), true, false, 1, 1},
			{perm(day(1, 9)), true, true, 2, 2},
		}, true},
		{"one per 24 hours, across midnight too", rules, []step{
			{perm(day(0, 23)), true, false, 1, 1},
			{perm(day(1, 0)), false, false, 1, 1},
			{perm(day(1, 22)), false, false, 1, 1},
			{perm(day(1, 23)), true, true, 2, 2},
		}, true},
		{"notify, then disable: the next counted bounce disables", store.BounceRules{Threshold: 1, ResetAfter: rules.ResetAfter}, []step{
			{perm(day(0, 9)), true, true, 1, 1},
		}, false},
		{"temporary counts half", rules, []step{
			{temp(day(0, 9)), true, false, 0.5, 1},
			{temp(day(1, 9)), true, false, 1, 2},
			{perm(day(2, 9)), true, true, 2, 3},
		}, true},
		{"a stale score starts from 0", rules, []step{
			{perm(day(0, 9)), true, false, 1, 1},
			{perm(day(8, 9)), true, false, 1, 1},
			{perm(day(15, 10)), true, false, 1, 1},
		}, false},
		{"notify: reached once, delivery stays", store.BounceRules{Threshold: 2, ResetAfter: rules.ResetAfter}, []step{
			{perm(day(0, 9)), true, false, 1, 1},
			{perm(day(1, 9)), true, true, 2, 2},
			{perm(day(2, 9)), true, false, 3, 3},
		}, false},
		{"disabled: nothing more counts", rules, []step{
			{perm(day(0, 9)), true, false, 1, 1},
			{perm(day(1, 9)), true, true, 2, 2},
			{perm(day(2, 9)), false, false, 2, 2},
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Each(t, func(t *testing.T, s *store.Store) {
				ctx := context.Background()
				mkList(t, s, listAddr)
				addMember(t, s, "bob@example.org")
				for i, st := range tc.steps {
					out, err := s.RecordBounce(ctx, listAddr, "bob@example.org", st.ev, tc.rules)
					if err != nil {
						t.Fatal(err)
					}
					if out.Counted != st.counted || out.Reached != st.reached || out.State.Score != st.score || out.State.Bounces != st.bounces {
						t.Fatalf("step %d: counted %v reached %v score %v bounces %d, want %v %v %v %d",
							i, out.Counted, out.Reached, out.State.Score, out.State.Bounces, st.counted, st.reached, st.score, st.bounces)
					}
					if !out.State.LastBounceAt.Equal(st.ev.At) || out.State.LastStatus != st.ev.Status {
						t.Errorf("step %d: last bounce %v %q", i, out.State.LastBounceAt, out.State.LastStatus)
					}
				}
				dis, err := s.DeliveryDisabled(ctx, listAddr)
				if err != nil {
					t.Fatal(err)
				}
				if dis["bob@example.org"] != tc.disabled || len(dis) > 1 {
					t.Fatalf("disabled = %v, want bob %v", dis, tc.disabled)
				}
				states, err := s.BounceStates(ctx, listAddr)
				if err != nil || len(states) != 1 || states[0].Disabled() != tc.disabled {
					t.Fatalf("states %+v %v", states, err)
				}
			})
		})
	}
}

func TestBounceOfNoMember(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		_, err := s.RecordBounce(ctx, listAddr, "stranger@example.org", store.BounceEvent{Permanent: true}, store.BounceRules{Threshold: 1, ResetAfter: time.Hour})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if _, err := s.SetDelivery(ctx, listAddr, "stranger@example.org", false, t0); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("SetDelivery err = %v, want ErrNotFound", err)
		}
	})
}

// A member removed and subscribed again starts with a clean record, and
// an admin's enable clears the score.
func TestDeliveryEnableAndRemove(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		addMember(t, s, "bob@example.org")
		rules := store.BounceRules{Threshold: 1, ResetAfter: 24 * time.Hour, Disable: true}
		if out, err := s.RecordBounce(ctx, listAddr, "bob@example.org", store.BounceEvent{Permanent: true, At: t0}, rules); err != nil || !out.Reached {
			t.Fatalf("%+v %v", out, err)
		}
		if ch, err := s.SetDelivery(ctx, listAddr, "bob@example.org", false, t0); err != nil || ch {
			t.Fatalf("disable a disabled member: changed %v %v", ch, err)
		}
		if ch, err := s.SetDelivery(ctx, listAddr, "bob@example.org", true, t0); err != nil || !ch {
			t.Fatalf("enable: changed %v %v", ch, err)
		}
		st, _ := s.BounceStates(ctx, listAddr)
		if len(st) != 1 || st[0].Disabled() || st[0].Score != 0 || st[0].Bounces != 0 {
			t.Fatalf("after enable: %+v", st)
		}
		// Within 24 hours again: the score started over, so it counts.
		if out, err := s.RecordBounce(ctx, listAddr, "bob@example.org", store.BounceEvent{Permanent: true, At: t0.Add(time.Hour)}, rules); err != nil || !out.Counted || !out.Reached {
			t.Fatalf("after enable: %+v %v", out, err)
		}
		if err := s.RemoveMember(ctx, listAddr, "bob@example.org"); err != nil {
			t.Fatal(err)
		}
		addMember(t, s, "bob@example.org")
		if dis, err := s.DeliveryDisabled(ctx, listAddr); err != nil || len(dis) != 0 {
			t.Fatalf("after re-subscribing: %v %v", dis, err)
		}
	})
}

// Two bounces for one member at the same instant are counted one after
// the other: exactly one is counted (same day), never both, never none.
func TestRecordBounceConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		addMember(t, s, "bob@example.org")
		rules := store.BounceRules{Threshold: 5, ResetAfter: 24 * time.Hour}
		const n = 8
		var wg sync.WaitGroup
		counted := make(chan bool, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := s.RecordBounce(ctx, listAddr, "bob@example.org", store.BounceEvent{Permanent: true, At: t0}, rules)
				if err != nil {
					t.Error(err)
					return
				}
				counted <- out.Counted
			}()
		}
		wg.Wait()
		close(counted)
		c := 0
		for b := range counted {
			if b {
				c++
			}
		}
		if c != 1 {
			t.Fatalf("%d of %d concurrent bounces counted, want 1", c, n)
		}
	})
}

func TestBounceCounts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		mkList(t, s, "other@lists.example.org")
		for _, k := range []struct{ list, kind string }{{listAddr, "bounce"}, {listAddr, "bounce"}, {listAddr, "other"}, {"other@lists.example.org", "auto-reply"}} {
			if err := s.CountBounceMail(ctx, k.list, k.kind); err != nil {
				t.Fatal(err)
			}
		}
		addMember(t, s, "bob@example.org")
		if _, err := s.SetDelivery(ctx, listAddr, "bob@example.org", false, t0); err != nil {
			t.Fatal(err)
		}
		counts, disabled, err := s.BounceCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.BounceCount{{listAddr, "bounce", 2}, {listAddr, "other", 1}, {"other@lists.example.org", "auto-reply", 1}}
		if len(counts) != len(want) {
			t.Fatalf("counts %+v", counts)
		}
		for i := range want {
			if counts[i] != want[i] {
				t.Errorf("counts[%d] = %+v, want %+v", i, counts[i], want[i])
			}
		}
		if disabled[listAddr] != 1 || len(disabled) != 1 {
			t.Errorf("disabled = %v", disabled)
		}
	})
}

func addMember(t *testing.T, s *store.Store, addr string) {
	t.Helper()
	if err := s.PutMember(context.Background(), store.Member{List: listAddr, Address: addr, State: store.MemberActive, Fingerprint: "AB"}); err != nil {
		t.Fatal(err)
	}
}

// A member notified under action "notify" (or whose score passed a
// threshold lowered since) is disabled by its next counted bounce once
// the list disables.
func TestBounceDisableAfterNotify(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		addMember(t, s, "bob@example.org")
		notify := store.BounceRules{Threshold: 1, ResetAfter: 7 * 24 * time.Hour}
		if out, err := s.RecordBounce(ctx, listAddr, "bob@example.org", store.BounceEvent{Permanent: true, At: t0}, notify); err != nil || !out.Reached || out.State.Disabled() {
			t.Fatalf("notify: %+v %v", out, err)
		}
		disable := notify
		disable.Disable = true
		out, err := s.RecordBounce(ctx, listAddr, "bob@example.org", store.BounceEvent{Permanent: true, At: t0.Add(25 * time.Hour)}, disable)
		if err != nil || !out.Counted || !out.Reached || !out.State.Disabled() {
			t.Fatalf("disable above the threshold: %+v %v", out, err)
		}
	})
}
