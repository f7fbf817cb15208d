//go:build !unix

package dirtar

import (
	"errors"
	"os"
)

// openFile opens a regular file of the tree; skip says it is gone.
func openFile(root *os.Root, p string) (f *os.File, skip bool, err error) {
	f, err = root.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, true, nil
	}
	return f, false, err
}
