package guest

import (
	"errors"
	"testing"
)

func TestLookupUser(t *testing.T) {
	for spec, want := range map[string][2]uint32{"root": {0, 0}, "0:0": {0, 0}, "nobody": {65534, 65534}, "4321": {4321, 4321}, "4321:7": {4321, 7}, "root:nogroup": {0, 65534}} {
		a, err := lookupUser(spec)
		if err != nil || a.uid != want[0] || a.gid != want[1] {
			t.Errorf("%s: %+v %v, want uid %d gid %d", spec, a, err, want[0], want[1])
		}
	}
	for _, bad := range []string{"no-such-user", "root:no-such-group"} {
		if _, err := lookupUser(bad); !errors.Is(err, errBadRequest) {
			t.Errorf("%s: %v, want a bad request", bad, err)
		}
	}
}
