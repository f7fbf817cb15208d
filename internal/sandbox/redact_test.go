package sandbox

import "testing"

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"git clone https://bob:s3cret@git.example.com/x.git failed": "git clone https://***@git.example.com/x.git failed",
		"fatal: unable to access 'https://tok@github.com/a/b/'":     "fatal: unable to access 'https://***@github.com/a/b/'",
		"ssh://git@host:22/repo and http://plain.example/":          "ssh://***@host:22/repo and http://plain.example/",
		"no url here, user@example.com":                             "no url here, user@example.com",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}
