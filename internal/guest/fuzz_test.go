package guest

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzCollectExec: whatever an agent streams as a synchronous exec's
// answer, the host ends with a result or an error, keeping at most
// MaxCapturedOutput per stream; never a panic.
func FuzzCollectExec(f *testing.F) {
	f.Add([]byte(`{"type":"stdout","data":"hi\n"}` + "\n" + `{"type":"exit","exit_code":0,"duration_ms":3}` + "\n"))
	f.Add([]byte(`{"type":"exit"}`))
	f.Add([]byte(`{"type":"error","message":"x"}` + "\n"))
	f.Add([]byte(`{"type":"stderr","data":"` + strings.Repeat("e", 100) + `"}` + "\n\n\n"))
	f.Add([]byte("{\"type\":\"stdout\",\"data\":\"\\u0000\\ud800\"}\n{\"type\":\"exit\",\"exit_code\":-5,\"duration_ms\":-9}"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		res, err := CollectExec(bytes.NewReader(answer))
		if err == nil && (res == nil || len(res.Stdout) > MaxCapturedOutput || len(res.Stderr) > MaxCapturedOutput || res.DurationMs < 0) {
			t.Fatalf("result %+v", res)
		}
	})
}

// FuzzGreeting: only the exact greeting with the token admits a
// connection, whatever else arrives first.
func FuzzGreeting(f *testing.F) {
	token := "tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	f.Add([]byte(GreetingPrefix + token + "\n"))
	f.Add([]byte(GreetingPrefix + token))
	f.Add([]byte(GreetingPrefix + token + "x\n"))
	f.Add([]byte("\n"))
	f.Add(bytes.Repeat([]byte{0}, 200))
	f.Fuzz(func(t *testing.T, sent []byte) {
		host, agent := net.Pipe()
		defer host.Close()
		go func() {
			agent.Write(sent)
			agent.Close()
		}()
		err := readGreeting(host, token, time.Second)
		line, _, _ := bytes.Cut(sent, []byte("\n"))
		exact := bytes.Equal(line, []byte(GreetingPrefix+token)) && bytes.Contains(sent, []byte("\n"))
		if (err == nil) != exact {
			t.Fatalf("greeting %q: err=%v", sent, err)
		}
	})
}
