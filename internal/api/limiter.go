package api

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// limiter counts failed authentications per client address: each address
// may fail burst times, then once per refill; past that its requests are
// refused before any key is looked at, so keys cannot be guessed at
// speed.
type limiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

const (
	failBurst   = 20
	failRefill  = 3 * time.Second
	maxTracked  = 10000
	forgetAfter = failBurst * failRefill
)

func newLimiter() *limiter { return &limiter{buckets: map[string]*bucket{}} }

// level refills b to now.
func (b *bucket) level(now time.Time) float64 {
	return min(failBurst, b.tokens+float64(now.Sub(b.last))/float64(failRefill))
}

// blocked says how long addr must wait before it may try again.
func (l *limiter) blocked(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[addr]
	if b == nil {
		return 0
	}
	if lv := b.level(time.Now()); lv < 1 {
		return time.Duration((1 - lv) * float64(failRefill))
	}
	return 0
}

// fail records a failed authentication from addr.
func (l *limiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= maxTracked {
			l.forget(now)
		}
		b = &bucket{tokens: failBurst, last: now}
		l.buckets[addr] = b
	}
	b.tokens, b.last = max(0, b.level(now)-1), now
}

// forget drops addresses that have refilled; if none has, the table is
// full of attackers and is cleared rather than grown.
func (l *limiter) forget(now time.Time) {
	for a, b := range l.buckets {
		if now.Sub(b.last) > forgetAfter {
			delete(l.buckets, a)
		}
	}
	if len(l.buckets) >= maxTracked {
		clear(l.buckets)
	}
}

// clientAddr is the address a request came from, without its port.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
