package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchShort runs `warren bench --short` so the benchmark never rots:
// every figure must be measured and positive, with peer ratios present.
func TestBenchShort(t *testing.T) {
	s := startServer(t, "")
	out, errOut, code := s.cli(t, "", "bench", "--short", "--json", "--image", "busybox",
		"--runsc", runscBin, "--image-dir", imageDir)
	if code != 0 {
		t.Fatalf("bench: exit %d\n%s", code, errOut)
	}
	var rep struct {
		Rows []struct {
			Metric string `json:"metric"`
			Warren struct {
				N   int     `json:"n"`
				P50 float64 `json:"p50_ms"`
			} `json:"warren"`
			Ratio map[string]float64 `json:"ratio"`
		} `json:"rows"`
		Memory []struct {
			Runtime             string  `json:"runtime"`
			PerSandboxMB        float64 `json:"per_sandbox_mb"`
			HostTasksPerSandbox float64 `json:"host_tasks_per_sandbox"`
		} `json:"idle_memory"`
		Checkpoint []struct {
			Runtime string  `json:"runtime"`
			MB      float64 `json:"mb"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench --json printed %q: %v", out, err)
	}
	want := []string{"gvisor create→first output", "gvisor exec round trip", "gvisor pause", "gvisor resume", "runc create→first output", "runc exec round trip",
		"gvisor request without a process (file stat)", "runc request without a process (file stat)",
		"image pull (cold, loopback registry)", "Dockerfile build (RUN + COPY, uncached)", "Dockerfile rebuild (every step cached)"}
	seen := map[string]bool{}
	for _, r := range rep.Rows {
		seen[r.Metric] = true
		if r.Warren.N == 0 || r.Warren.P50 <= 0 {
			t.Errorf("%s: nothing measured: %+v", r.Metric, r.Warren)
		}
		if strings.Contains(r.Metric, "first output") || strings.Contains(r.Metric, "exec round trip") {
			if len(r.Ratio) == 0 {
				t.Errorf("%s: no ratio against the raw runtime", r.Metric)
			}
		}
	}
	for _, m := range want {
		if !seen[m] {
			t.Errorf("bench lacks %q", m)
		}
	}
	if len(rep.Memory) != 2 || rep.Memory[0].PerSandboxMB <= 0 || rep.Memory[0].HostTasksPerSandbox <= 0 {
		t.Errorf("idle memory: %+v", rep.Memory)
	}
	if len(rep.Checkpoint) != 1 || rep.Checkpoint[0].Runtime != "gvisor" || rep.Checkpoint[0].MB <= 0 {
		t.Errorf("checkpoint size: %+v", rep.Checkpoint)
	}
}
