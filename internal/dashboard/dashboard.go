// Package dashboard is the terminal view of a running agent host: each
// service's health, ports and uptime, the connect details, pending
// approvals and the merged log, with keys to copy, detach and quit.
package dashboard

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/warrenhq/warren/internal/agenthost"
)

// Outcome is how the dashboard ended.
type Outcome int

const (
	// Detached: the services keep running.
	Detached Outcome = iota
	// Quit: the caller should stop the services.
	Quit
)

// Run shows the dashboard for a run until the user detaches or quits.
func Run(ctx context.Context, run *agenthost.Run, in io.Reader, out io.Writer) (Outcome, error) {
	m := &model{run: run, outcome: Detached}
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out))
	if _, err := p.Run(); err != nil && ctx.Err() == nil {
		return Detached, err
	}
	return m.outcome, nil
}

type service struct {
	Name        string `json:"name"`
	WorkspaceID string `json:"workspaceId"`
	Healthy     bool   `json:"healthy"`
	URL         string `json:"url"`
	Sandbox     string `json:"sandbox"`
	SandboxID   string `json:"sandboxId"`
	UptimeMs    int64  `json:"uptimeMs"`
}

type status struct {
	OK       bool      `json:"ok"`
	UptimeMs int64     `json:"uptimeMs"`
	Services []service `json:"services"`
	Warnings []string  `json:"warnings"`
	Approval struct {
		Mode string `json:"mode"`
	} `json:"approval"`
	Bridge agenthost.BridgeStatus `json:"bridge"`
}

type model struct {
	run       *agenthost.Run
	st        *status
	stErr     error
	approvals int
	logs      []string
	logOffset int64
	width     int
	height    int
	note      string
	outcome   Outcome
}

type tickMsg struct {
	st        *status
	err       error
	approvals int
	lines     []string
	offset    int64
}

const maxLogLines = 500

func (m *model) Init() tea.Cmd { return m.poll(0) }

// poll fetches the status and new log lines, after a pause unless first.
func (m *model) poll(wait time.Duration) tea.Cmd {
	run, offset := m.run, m.logOffset
	return func() tea.Msg {
		time.Sleep(wait)
		msg := tickMsg{offset: offset}
		msg.st, msg.err = fetchStatus(run)
		msg.approvals = countApprovals(run)
		msg.lines, msg.offset = readLog(run.LogPath, offset)
		return msg
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tickMsg:
		m.st, m.stErr, m.approvals, m.logOffset = msg.st, msg.err, msg.approvals, msg.offset
		m.logs = append(m.logs, msg.lines...)
		if len(m.logs) > maxLogLines {
			m.logs = m.logs[len(m.logs)-maxLogLines:]
		}
		return m, m.poll(time.Second)
	case tea.KeyPressMsg:
		switch msg.String() {
		case "q", "ctrl+c":
			m.outcome = Quit
			return m, tea.Quit
		case "d":
			m.outcome = Detached
			return m, tea.Quit
		case "c":
			m.note = "client token copied"
			return m, copyCmd(m.run.Pairing.ClientToken)
		case "h":
			m.note = "host token copied"
			return m, copyCmd(m.run.Pairing.HostToken)
		case "u":
			m.note = "URL copied"
			return m, copyCmd(m.run.Pairing.ConnectURL)
		case "a":
			if len(m.run.Pairing.Workspaces) > 0 {
				m.note = "attach command copied"
				return m, copyCmd(m.run.Pairing.Workspaces[0].Attach)
			}
		case "p":
			if m.st != nil && m.st.Bridge.Enabled {
				m.note = "making a pairing code…"
				return m, pairCode(m.run)
			}
			m.note = "no chat bridge: start with --telegram-token or the Slack tokens"
		}
	case pairMsg:
		m.note = string(msg)
	}
	return m, nil
}

// pairMsg is the outcome of making a pairing code, for the note line.
type pairMsg string

// pairCode makes a host pairing code for the chat bridge.
func pairCode(run *agenthost.Run) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var out struct {
			Code      string    `json:"code"`
			ExpiresAt time.Time `json:"expiresAt"`
		}
		if _, err := agenthost.HostClient(run.Pairing.URL, run.Pairing.HostToken).Call(ctx, "POST", "/bridge/codes", map[string]string{"role": agenthost.ChatHost}, &out); err != nil {
			return pairMsg("pairing code: " + err.Error())
		}
		return pairMsg(fmt.Sprintf("send in the chat: /pair %s (host chat, until %s)", out.Code, out.ExpiresAt.Local().Format("15:04")))
	}
}

// copyCmd puts text on the terminal's clipboard with OSC 52, which works
// over SSH and in tmux (with set-clipboard on).
func copyCmd(text string) tea.Cmd {
	return func() tea.Msg {
		fmt.Fprintf(os.Stdout, "\x1b]52;c;%s\x07", base64.StdEncoding.EncodeToString([]byte(text)))
		return nil
	}
}

func (m *model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	return v
}

func (m *model) render() string {
	var b strings.Builder
	p := m.run.Pairing
	fmt.Fprintf(&b, "warren start — run %s — pid %d\n\n", m.run.RunID, m.run.PID)
	warnings := p.Warnings
	if m.st != nil {
		warnings = m.st.Warnings
	}
	for _, w := range warnings {
		fmt.Fprintf(&b, "WARNING: %s\n", w)
	}
	if len(warnings) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("SERVICE            STATE      SANDBOX                        URL                              UPTIME\n")
	server := "starting"
	var up time.Duration
	if m.st != nil && m.st.OK {
		server, up = "healthy", time.Duration(m.st.UptimeMs)*time.Millisecond
	} else if m.stErr != nil {
		server = "down"
	}
	fmt.Fprintf(&b, "%-18s %-10s %-30s %-32s %s\n", "workspace-server", server, "(host)", p.URL, up.Round(time.Second))
	if m.st != nil {
		for _, s := range m.st.Services {
			state := "unhealthy"
			if s.Healthy {
				state = "healthy"
			}
			fmt.Fprintf(&b, "%-18s %-10s %-30s %-32s %s\n", s.Name, state, s.Sandbox+" "+s.SandboxID, s.URL,
				(time.Duration(s.UptimeMs) * time.Millisecond).Round(time.Second))
		}
		if br := m.st.Bridge; br.Enabled {
			up := time.Duration(0)
			if br.State == "running" {
				up = time.Since(br.StartedAt)
			}
			fmt.Fprintf(&b, "%-18s %-10s %-30s %-32s %s\n", "bridge", br.State, fmt.Sprintf("(host) pid %d", br.PID),
				fmt.Sprintf("%s, %d chats, %d restarts", strings.Join(br.Platforms, "+"), br.Chats, br.Restarts), up.Round(time.Second))
			if br.LastError != "" && br.State != "running" {
				fmt.Fprintf(&b, "  last exit: %s\n", br.LastError)
			}
		}
	}
	fmt.Fprintf(&b, "\nconnect URL   %s\nclient token  %s\nhost token    %s\n", p.ConnectURL, p.ClientToken, p.HostToken)
	for _, w := range p.Workspaces {
		fmt.Fprintf(&b, "workspace     %s  %s\n  proxy       %s\n  attach      %s\n", w.ID, w.Path, w.ProxyURL, w.Attach)
	}
	mode := p.Approval
	fmt.Fprintf(&b, "approvals     %s, %d pending\n", mode, m.approvals)
	b.WriteString("\n── log ──\n")
	used := strings.Count(b.String(), "\n") + 3
	room := m.height - used
	if room < 3 {
		room = 3
	}
	start := max(len(m.logs)-room, 0)
	for _, l := range m.logs[start:] {
		if m.width > 0 && len(l) > m.width {
			l = l[:m.width]
		}
		b.WriteString(l + "\n")
	}
	keys := "[c] client token  [h] host token  [u] URL  [a] attach"
	if m.st != nil && m.st.Bridge.Enabled {
		keys += "  [p] pair a chat"
	}
	fmt.Fprintf(&b, "\n%s  [d] detach  [q] quit   %s", keys, m.note)
	return b.String()
}

func fetchStatus(run *agenthost.Run) (*status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var st status
	_, err := agenthost.BearerClient(run.Pairing.URL, run.Pairing.ClientToken).Call(ctx, "GET", "/status", nil, &st)
	return &st, err
}

func countApprovals(run *agenthost.Run) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out struct {
		Items []json.RawMessage `json:"items"`
	}
	if _, err := agenthost.HostClient(run.Pairing.URL, run.Pairing.HostToken).Call(ctx, "GET", "/approvals", nil, &out); err != nil {
		return 0
	}
	return len(out.Items)
}

// readLog returns the complete lines written to the log since offset.
func readLog(path string, offset int64) ([]string, int64) {
	f, err := os.Open(path)
	if err != nil {
		return nil, offset
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset
	}
	var lines []string
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // a partial line waits for the next read
		}
		offset += int64(len(line))
		lines = append(lines, strings.TrimRight(line, "\n"))
	}
	return lines, offset
}
