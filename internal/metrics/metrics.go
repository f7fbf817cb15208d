// Package metrics serves warren's Prometheus metrics: what the node holds
// (sandboxes by state and runtime, pools, each running sandbox's memory),
// read when scraped, and what it has done (creates, deletes, execs and
// resumes with their latencies, pool hits, agent reconnects, quota
// refusals, failed authentications, image builds), counted as it
// happens.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/warrenhq/warren/wire"
)

// Source is what the gauges are read from: the node's sandbox manager.
type Source interface {
	// CountByState counts sandboxes by state and runtime.
	CountByState(ctx context.Context) (map[[2]string]int, error)
	RunningMemory(ctx context.Context) map[string]*wire.Memory
	Pools() []wire.PoolStatus
}

// scrapeTimeout bounds one scrape's reads.
const scrapeTimeout = 10 * time.Second

var (
	sandboxesDesc = prometheus.NewDesc("warren_sandboxes", "Sandboxes on this node by state and runtime (deleted ones excluded).", []string{"state", "runtime"}, nil)
	poolSizeDesc  = prometheus.NewDesc("warren_pool_size", "A warm pool's target size.", []string{"image", "runtime"}, nil)
	poolReadyDesc = prometheus.NewDesc("warren_pool_ready", "Booted sandboxes waiting in a warm pool.", []string{"image", "runtime"}, nil)
	limitDesc     = prometheus.NewDesc("warren_sandbox_memory_limit_bytes", "A running sandbox's requested memory: what it sees as its total.", []string{"sandbox"}, nil)
	usedDesc      = prometheus.NewDesc("warren_sandbox_memory_used_bytes", "What a running sandbox's processes use, as its own kernel accounts it.", []string{"sandbox"}, nil)
	hostDesc      = prometheus.NewDesc("warren_sandbox_memory_host_bytes", "What the host charges for a running sandbox, its runtime included.", []string{"sandbox"}, nil)
	hostPeakDesc  = prometheus.NewDesc("warren_sandbox_memory_host_peak_bytes", "The most the host has charged for a running sandbox.", []string{"sandbox"}, nil)
	oomDesc       = prometheus.NewDesc("warren_sandbox_oom_kills_total", "Processes killed because a running sandbox ran out of memory.", []string{"sandbox"}, nil)
)

// Metrics counts what a node does and reads what it holds.
type Metrics struct {
	reg *prometheus.Registry

	creates    *prometheus.CounterVec
	deletes    *prometheus.CounterVec
	createTime *prometheus.HistogramVec
	execTime   prometheus.Histogram
	resumeTime *prometheus.HistogramVec
	poolClaims *prometheus.CounterVec
	reconnects prometheus.Counter
	quota      *prometheus.CounterVec
	authFails  *prometheus.CounterVec
	images     *prometheus.CounterVec
}

// New makes the metrics; Watch adds what is read at every scrape.
func New() *Metrics {
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		creates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_sandbox_creates_total",
			Help: "Sandbox creates by boot path (cold_boot, hot_pool, fork; none when refused) and outcome (ok or the error code)."}, []string{"boot_path", "outcome"}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_sandbox_deletes_total",
			Help: "Sandbox deletes by outcome."}, []string{"outcome"}),
		createTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "warren_sandbox_create_seconds",
			Help: "How long successful creates took, by boot path.", Buckets: latency}, []string{"boot_path"}),
		execTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "warren_exec_seconds",
			Help: "How long synchronous execs took, from request to exit.", Buckets: latency}),
		resumeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "warren_sandbox_resume_seconds",
			Help: "How long resumes took, by outcome.", Buckets: latency}, []string{"outcome"}),
		poolClaims: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_pool_claims_total",
			Help: "Creates that a warm pool could serve (hit) or could not (miss: it was empty)."}, []string{"result"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "warren_agent_reconnects_total",
			Help: "Times a sandbox agent's connection dropped and had to be made again."}),
		quota: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_quota_refusals_total",
			Help: "Requests refused by an org's quota, by quota."}, []string{"quota"}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_auth_failures_total",
			Help: "Requests refused for their API key, by reason."}, []string{"reason"}),
		images: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_image_operations_total",
			Help: "Image pulls, imports, Dockerfile builds and snapshots, by kind and outcome."}, []string{"kind", "outcome"}),
	}
	m.reg.MustRegister(m.creates, m.deletes, m.createTime, m.execTime, m.resumeTime, m.poolClaims, m.reconnects, m.quota, m.authFails, m.images,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Watch reads the node's gauges from src at every scrape.
func (m *Metrics) Watch(src Source) { m.reg.MustRegister(collector{src}) }

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Created counts a create; d counts only for one that succeeded.
func (m *Metrics) Created(bootPath, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	if bootPath == "" {
		bootPath = "none"
	}
	m.creates.WithLabelValues(bootPath, outcome).Inc()
	if outcome == "ok" {
		m.createTime.WithLabelValues(bootPath).Observe(d.Seconds())
	}
}

// Deleted counts a delete.
func (m *Metrics) Deleted(outcome string) {
	if m != nil {
		m.deletes.WithLabelValues(outcome).Inc()
	}
}

// Executed records a synchronous exec's time.
func (m *Metrics) Executed(d time.Duration) {
	if m != nil {
		m.execTime.Observe(d.Seconds())
	}
}

// Resumed records a resume.
func (m *Metrics) Resumed(outcome string, d time.Duration) {
	if m != nil {
		m.resumeTime.WithLabelValues(outcome).Observe(d.Seconds())
	}
}

// PoolClaim counts a create a pool could or could not serve.
func (m *Metrics) PoolClaim(hit bool) {
	if m == nil {
		return
	}
	r := "miss"
	if hit {
		r = "hit"
	}
	m.poolClaims.WithLabelValues(r).Inc()
}

// AgentReconnect counts a dropped agent connection.
func (m *Metrics) AgentReconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

// QuotaRefusal counts a refusal by the named quota.
func (m *Metrics) QuotaRefusal(quota string) {
	if m != nil {
		m.quota.WithLabelValues(quota).Inc()
	}
}

// AuthFailure counts a refused key.
func (m *Metrics) AuthFailure(reason string) {
	if m != nil {
		m.authFails.WithLabelValues(reason).Inc()
	}
}

// ImageOperation counts an image pull, import, build or snapshot.
func (m *Metrics) ImageOperation(kind, outcome string) {
	if m != nil {
		m.images.WithLabelValues(kind, outcome).Inc()
	}
}

type collector struct{ src Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sandboxesDesc, poolSizeDesc, poolReadyDesc, limitDesc, usedDesc, hostDesc, hostPeakDesc, oomDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if counts, err := c.src.CountByState(ctx); err == nil {
		for k, n := range counts {
			ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
	}
	for _, p := range c.src.Pools() {
		ch <- prometheus.MustNewConstMetric(poolSizeDesc, prometheus.GaugeValue, float64(p.Size), p.Image, p.Runtime)
		ch <- prometheus.MustNewConstMetric(poolReadyDesc, prometheus.GaugeValue, float64(p.Ready), p.Image, p.Runtime)
	}
	const mb = 1 << 20
	for id, m := range c.src.RunningMemory(ctx) {
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(m.LimitMB)*mb, id)
		ch <- prometheus.MustNewConstMetric(usedDesc, prometheus.GaugeValue, m.UsedMB*mb, id)
		ch <- prometheus.MustNewConstMetric(hostDesc, prometheus.GaugeValue, m.HostMB*mb, id)
		ch <- prometheus.MustNewConstMetric(hostPeakDesc, prometheus.GaugeValue, m.HostPeakMB*mb, id)
		ch <- prometheus.MustNewConstMetric(oomDesc, prometheus.CounterValue, float64(m.OOMKills), id)
	}
}
