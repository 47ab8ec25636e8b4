package milter

import (
	"context"

	"github.com/listcrypt/listcrypt/policy"
)

// NotifyModerators calls holds.Notifier.NotifyModerators for the external tests, with
// the list locked as endOfMessage holds it.
func (srv *Server) NotifyModerators(ctx context.Context, p *policy.Policy, holdID int64, reason string) error {
	unlock, err := srv.lockLists(ctx, []*policy.Policy{p})
	if err != nil {
		return err
	}
	defer unlock()
	return srv.holds.NotifyModerators(ctx, p, holdID, reason)
}
