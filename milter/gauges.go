package milter

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gauges are the metrics read at scrape time: milter connections in
// use, and the held posts waiting per list (from the store, so every
// host of a shared database reports the same).
func (srv *Server) gauges() prometheus.Collector { return gauges{srv} }

type gauges struct{ srv *Server }

var (
	connectionsDesc = prometheus.NewDesc("listcrypt_milter_connections", "MTA connections holding a slot of [milter] max_connections.", nil, nil)
	holdsDesc       = prometheus.NewDesc("listcrypt_holds_waiting", "Held posts waiting for a moderator, by list.", []string{"list"}, nil)
)

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectionsDesc
	ch <- holdsDesc
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
}
