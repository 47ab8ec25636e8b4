package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/listcrypt/listcrypt/keyring/store"
	"github.com/listcrypt/listcrypt/policy"
)

// SetDelivery enables or disables delivery to a member of list (enabling
// also clears its bounce score, docs/bounces.md). It reports whether
// anything changed.
func (s *Site) SetDelivery(ctx context.Context, list, address string, enabled bool) (bool, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return false, err
	}
	addr := policy.NormalizeAddress(address)
	changed, err := s.Store.SetDelivery(ctx, l.Address, addr, enabled, s.Now())
	if errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("%s is not a member of %s", addr, l.Address)
	}
	return changed, err
}

// Bounces returns the bounce records of the list's members (those that
// ever bounced or were disabled), by address.
func (s *Site) Bounces(ctx context.Context, list string) ([]store.BounceState, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return nil, err
	}
	return s.Store.BounceStates(ctx, l.Address)
}
