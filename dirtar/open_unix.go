//go:build unix

package dirtar

import (
	"errors"
	"os"
	"syscall"
)

// openFile opens a regular file of the tree without following a symbolic
// link swapped in for it, and without blocking on a pipe swapped in; skip
// says the name is no longer a file to pack.
func openFile(root *os.Root, p string) (f *os.File, skip bool, err error) {
	f, err = root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, os.ErrNotExist) {
		return nil, true, nil
	}
	return f, false, err
}
