// Package metrics serves warren's Prometheus metrics: sandboxes by state,
// and each running sandbox's memory and OOM kills, read when scraped.
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

// Source is what the metrics are read from: the node's sandbox manager.
type Source interface {
	CountByState(ctx context.Context) (map[string]int, error)
	RunningMemory(ctx context.Context) map[string]*wire.Memory
}

// scrapeTimeout bounds one scrape's reads.
const scrapeTimeout = 10 * time.Second

var (
	sandboxesDesc = prometheus.NewDesc("warren_sandboxes", "Sandboxes on this node by state (deleted ones excluded).", []string{"state"}, nil)
	limitDesc     = prometheus.NewDesc("warren_sandbox_memory_limit_bytes", "A running sandbox's requested memory: what it sees as its total.", []string{"sandbox"}, nil)
	usedDesc      = prometheus.NewDesc("warren_sandbox_memory_used_bytes", "What a running sandbox's processes use, as its own kernel accounts it.", []string{"sandbox"}, nil)
	hostDesc      = prometheus.NewDesc("warren_sandbox_memory_host_bytes", "What the host charges for a running sandbox, its runtime included.", []string{"sandbox"}, nil)
	hostPeakDesc  = prometheus.NewDesc("warren_sandbox_memory_host_peak_bytes", "The most the host has charged for a running sandbox.", []string{"sandbox"}, nil)
	oomDesc       = prometheus.NewDesc("warren_sandbox_oom_kills_total", "Processes killed because a running sandbox ran out of memory.", []string{"sandbox"}, nil)
)

type collector struct{ src Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sandboxesDesc, limitDesc, usedDesc, hostDesc, hostPeakDesc, oomDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if counts, err := c.src.CountByState(ctx); err == nil {
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), state)
		}
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

// Handler serves the metrics of src, with the Go runtime's and the
// process's own.
func Handler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{src}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
