package admin

import (
	"context"

	"github.com/listcrypt/listcrypt/milter/workflow"
)

// responder is the key workflow engine over this site (it mails
// subscribers through the reinjection listener).
func (s *Site) responder() (*workflow.Responder, error) {
	r, err := workflow.ForSite(s.Site, nil)
	if err != nil {
		return nil, err
	}
	r.Now = s.Now
	return r, nil
}

// PendingMembers returns the subscriptions and key changes of the list
// that wait for a moderator.
func (s *Site) PendingMembers(ctx context.Context, list string) ([]workflow.PendingEntry, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return nil, err
	}
	r, err := s.responder()
	if err != nil {
		return nil, err
	}
	return r.Pending(ctx, l.Address)
}

// ApproveMember approves what address waits for on the list (its
// subscription or its key change) and tells the subscriber by mail.
// Entry.NoticeErr says if that mail could not be sent.
func (s *Site) ApproveMember(ctx context.Context, list, address string) (workflow.PendingEntry, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return workflow.PendingEntry{}, err
	}
	r, err := s.responder()
	if err != nil {
		return workflow.PendingEntry{}, err
	}
	return r.Approve(ctx, l.Address, address)
}

// RejectMember rejects what address waits for on the list: a subscription
// is removed, a key change dropped (the old key stays). The subscriber is
// told by mail.
func (s *Site) RejectMember(ctx context.Context, list, address string) (workflow.PendingEntry, error) {
	l, err := s.list(ctx, list)
	if err != nil {
		return workflow.PendingEntry{}, err
	}
	r, err := s.responder()
	if err != nil {
		return workflow.PendingEntry{}, err
	}
	return r.Reject(ctx, l.Address, address)
}
