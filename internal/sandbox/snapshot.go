package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/wire"
)

// Snapshot makes the image name from a sandbox's files as they are now:
// its image with its writable layer on top, and its env, working
// directory and user as the image's config. The sandbox is frozen for the
// copy where its runtime can (so the image is what one moment held) and
// runs on afterwards. The tree is read with every path resolved inside it,
// whatever the sandbox does to it meanwhile.
func (m *Manager) Snapshot(ctx context.Context, org, id, name string) (*wire.Image, error) {
	if name == "" {
		return nil, badRequest("name", "name is required: the new image's name")
	}
	if err := m.cfg.Images.CheckName(name); err != nil {
		return nil, err
	}
	if user, err := m.ImageInUse(ctx, name); err != nil {
		return nil, err
	} else if user != "" {
		return nil, conflict("cannot replace image %s: %s uses it", name, user)
	}
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	row, err := m.cfg.Store.GetSandbox(ctx, org, id)
	if err != nil {
		return nil, err
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	if len(sp.Secrets)+len(sp.SecretFiles) > 0 {
		return nil, conflict("sandbox %s holds secrets; a snapshot could carry them into an image, so it is refused", id)
	}
	cfg := &wire.ImageConfig{WorkingDir: sp.Workdir, User: sp.User}
	for _, k := range slices.Sorted(maps.Keys(sp.Env)) {
		cfg.Env = append(cfg.Env, k+"="+sp.Env[k])
	}
	if base, err := m.cfg.Images.Get(row.Image); err == nil && base.Config != nil {
		cfg.Entrypoint, cfg.Cmd = base.Config.Entrypoint, base.Config.Cmd
	}
	return m.snapshot(ctx, l, &sp, name, wire.ImageSnapshot, "snapshot of "+id+" ("+row.Image+")", cfg)
}

// snapshot copies a running sandbox's files into the image name, frozen
// for the copy where the runtime can.
func (m *Manager) snapshot(ctx context.Context, l *live, sp *spec, name, kind, source string, cfg *wire.ImageConfig) (*wire.Image, error) {
	defer l.hold()()
	merged := m.layout(l.id).Merged()
	if mounted, _ := overlay.IsMounted(merged); !mounted {
		return nil, conflict("sandbox %s has no files mounted to snapshot", l.id)
	}
	// Owners as the image has them: a sandbox in a user namespace sees
	// its files owned by ids shifted into the namespace's range.
	var unshift func(uid, gid int) (int, int)
	if r := userNS(l.rt, sp); r != nil {
		base, size := int(r.HostID), int(r.Size)
		shift := func(id int) int {
			if id >= base && id < base+size {
				return id - base
			}
			return id
		}
		unshift = func(uid, gid int) (int, int) { return shift(uid), shift(gid) }
	}
	if f, ok := l.rt.(runtime.Freezer); ok {
		if err := f.Freeze(ctx, l.id); err != nil {
			return nil, fmt.Errorf("freeze sandbox %s for its snapshot: %w", l.id, err)
		}
		defer func() {
			if err := f.Thaw(context.WithoutCancel(ctx), l.id); err != nil {
				m.log.Error("thaw sandbox after its snapshot", "sandbox.id", l.id, "err", err)
			}
		}()
	}
	return m.cfg.Images.Snapshot(ctx, name, kind, source, cfg, func(ctx context.Context, rootfs string) error {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(dirtar.Pack(pw, merged)) }()
		err := dirtar.Unpack(pr, rootfs, dirtar.Options{Owners: true, SpecialBits: true, MapOwner: unshift})
		pr.CloseWithError(err)
		return err
	})
}
