package store_test

import (
	"context"
	"testing"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// A batch number already recorded (by a second attempt that raced on the
// same post, e.g. a hold approve whose claim lapsed) must not make
// RecordBatch drop the recipients the MTA just took: they are recorded
// all the same, or the next attempt would send them the post again.
func TestRecordBatchSameNumberOtherRecipients(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		mkList(t, s, listAddr)
		post := []byte("raced")
		if _, err := s.RecordBatch(ctx, listAddr, post, 1, []string{"a@example.org"}, nil, t0); err != nil {
			t.Fatal(err)
		}
		already, err := s.RecordBatch(ctx, listAddr, post, 1, []string{"b@example.org"}, nil, t0)
		got, _, _ := s.DeliveredRecipients(ctx, listAddr, post)
		if err == nil && len(got) != 2 {
			t.Errorf("b@example.org was handed to the MTA but is not recorded (already=%v, err=nil, delivered=%v): its next attempt sends it again", already, got)
		}
	})
}
