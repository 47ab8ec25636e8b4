package milter

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gauges are the metrics read at scrape time: milter connections in
// use, and from the store (so every host of a shared database reports
// the same) the held posts waiting, the bounce mail counted by the
// responder and the members whose delivery is disabled, per list.
func (srv *Server) gauges() prometheus.Collector { return gauges{srv} }

type gauges struct{ srv *Server }

var (
	connectionsDesc = prometheus.NewDesc("listcrypt_milter_connections", "MTA connections holding a slot of [milter] max_connections.", nil, nil)
	holdsDesc       = prometheus.NewDesc("listcrypt_holds_waiting", "Held posts waiting for a moderator, by list.", []string{"list"}, nil)
	bounceMailDesc  = prometheus.NewDesc("listcrypt_bounce_mail_total", "Mail that reached a list's bounce address, by list and kind (member: a member's failure; unattributed, auto-reply, other: forwarded to the owners). Counted by the responder in the store.", []string{"list", "kind"}, nil)
	disabledDesc    = prometheus.NewDesc("listcrypt_members_delivery_disabled", "Members whose delivery is disabled (bounces, or member disable), by list.", []string{"list"}, nil)
)

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectionsDesc
	ch <- holdsDesc
	ch <- bounceMailDesc
	ch <- disabledDesc
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	g.srv.mu.Lock()
	n := len(g.srv.conns)
	g.srv.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(n))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	set := g.srv.Policies()
	for _, addr := range set.Addresses() {
		holds, err := g.srv.opts.Store.Holds(ctx, addr)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(holdsDesc, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(holdsDesc, prometheus.GaugeValue, float64(len(holds)), addr)
	}
	// The responder is a process per mail: its bounce counters live in
	// the store, and every host of a shared database reports the same.
	counts, disabled, err := g.srv.opts.Store.BounceCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(bounceMailDesc, err)
		return
	}
	for _, c := range counts {
		if set.Lookup(c.List) != nil {
			ch <- prometheus.MustNewConstMetric(bounceMailDesc, prometheus.CounterValue, float64(c.N), c.List, c.Kind)
		}
	}
	for _, addr := range set.Addresses() {
		ch <- prometheus.MustNewConstMetric(disabledDesc, prometheus.GaugeValue, float64(disabled[addr]), addr)
	}
}
