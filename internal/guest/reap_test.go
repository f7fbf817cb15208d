package guest

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper collects orphans and never an exit status os/exec waits
// for. The test process stands in for PID 1 as a child subreaper: the
// orphans of the commands it starts become its children.
func TestReaperTakesOnlyOrphans(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become a subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go children.run(ctx)
	// A busy reaper, racing every wait.
	go func() {
		for ctx.Err() == nil {
			children.reapOrphans()
			time.Sleep(time.Millisecond)
		}
	}()
	for i := range 30 {
		// Each leaves an orphan that exits around the time it does.
		cmd := exec.Command("/bin/sh", "-c", "(sleep 0.0$((RANDOM % 5)); exit 3) & exit 7")
		if err := children.start(cmd, cmd.Start); err != nil {
			t.Fatal(err)
		}
		err := children.wait(cmd)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Fatalf("run %d: the command's own status was lost: %v", i, err)
		}
	}
	// The orphans are all collected: no exited child is left.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.ECHILD) || err == nil && siginfoPID(&info) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("an orphan was left unreaped (pid %d, %v)", siginfoPID(&info), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
