// Package metrics holds listcrypt-milter's Prometheus metrics
// ([metrics] listen). Labels carry list addresses (the admin's policy
// files: a bounded set), actions, reason words and reply codes only:
// never a sender's or member's address, a subject or any content. Every
// method is safe on a nil *Metrics (metrics off, tests, the CLI).
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are one process's collectors, in their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	posts          *prometheus.CounterVec
	replies        *prometheus.CounterVec
	batches        *prometheus.CounterVec
	recipients     *prometheus.CounterVec
	reinjectErrors prometheus.Counter
	decide         *prometheus.HistogramVec
	deliver        *prometheus.HistogramVec
}

// New registers the collectors, with the Go runtime's and the process's.
func New() *Metrics {
	r := prometheus.NewRegistry()
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	m := &Metrics{
		Registry: r,
		posts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "listcrypt_posts_total",
			Help: "Posts decided, by list, action (accept, reject, tempfail, discard, hold) and reason word."}, []string{"list", "action", "reason"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "listcrypt_replies_total",
			Help: "Final SMTP replies to list transactions, by code (250 for accepted or discarded)."}, []string{"code"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "listcrypt_delivery_batches_total",
			Help: "Batches the reinjection listener took and the store recorded, by list."}, []string{"list"}),
		recipients: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "listcrypt_delivery_recipients_total",
			Help: "Members served (their batch taken and recorded), by list."}, []string{"list"}),
		reinjectErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "listcrypt_reinject_errors_total",
			Help: "Batches the reinjection listener did not take (a 4xx, a lost connection, a timeout): the post is tempfailed and retried."}),
		decide: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "listcrypt_decide_duration_seconds",
			Help: "Time from end of message to a list's decision (examination, claims, replay table, policy).", Buckets: buckets}, []string{"list"}),
		deliver: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "listcrypt_deliver_duration_seconds",
			Help: "Time to deliver an accepted post to a list's members (encryption, every batch reinjected and recorded).", Buckets: buckets}, []string{"list"}),
	}
	r.MustRegister(m.posts, m.replies, m.batches, m.recipients, m.reinjectErrors, m.decide, m.deliver,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Post counts a decision.
func (m *Metrics) Post(list, action, reason string, took time.Duration) {
	if m == nil {
		return
	}
	m.posts.WithLabelValues(list, action, reason).Inc()
	m.decide.WithLabelValues(list).Observe(took.Seconds())
}

// Delivered observes the time a delivery to list took.
func (m *Metrics) Delivered(list string, took time.Duration) {
	if m == nil {
		return
	}
	m.deliver.WithLabelValues(list).Observe(took.Seconds())
}

// Reply counts a final SMTP reply code.
func (m *Metrics) Reply(code int) {
	if m == nil {
		return
	}
	m.replies.WithLabelValues(strconv.Itoa(code)).Inc()
}

// Batch counts a batch of n members taken and recorded for list.
func (m *Metrics) Batch(list string, n int) {
	if m == nil {
		return
	}
	m.batches.WithLabelValues(list).Inc()
	m.recipients.WithLabelValues(list).Add(float64(n))
}

// ReinjectError counts a batch the listener did not take.
func (m *Metrics) ReinjectError() {
	if m == nil {
		return
	}
	m.reinjectErrors.Inc()
}

// Register adds a collector of the caller's (gauges read at scrape time).
func (m *Metrics) Register(c prometheus.Collector) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(c)
}
