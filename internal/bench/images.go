package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/wire"
)

// images measures a cold pull from a registry on loopback, a Dockerfile
// build (RUN and COPY, nothing cached) and a rebuild with every step
// cached, against docker pull and docker build of the same when a Docker
// engine answers.
func (o *Options) images(ctx context.Context) ([]Row, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(ln)
	defer srv.Close()
	ref := ln.Addr().String() + "/bench/image:1"
	if err := pushRootfs(ref, o.Rootfs); err != nil {
		return nil, fmt.Errorf("push the bench image: %w", err)
	}
	docker := o.dockerReady(ctx)
	c := o.Client

	o.logf("images: cold pull of %s", o.Image)
	var pulls, dpulls []time.Duration
	for i := 0; i < o.Runs; i++ {
		_ = c.DeleteImage(ctx, "bench-pull")
		_, _ = c.PruneImages(ctx)
		start := time.Now()
		if _, err := c.PullImage(ctx, &wire.ImagePullRequest{Name: "bench-pull", Ref: ref}, nil); err != nil {
			return nil, fmt.Errorf("pull: %w", err)
		}
		pulls = append(pulls, time.Since(start))
		if docker {
			exec.CommandContext(ctx, o.Docker, "rmi", "-f", ref).Run()
			start := time.Now()
			if b, err := exec.CommandContext(ctx, o.Docker, "pull", "-q", ref).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("docker pull: %v: %s", err, b)
			}
			dpulls = append(dpulls, time.Since(start))
		}
	}
	pull := Row{Metric: "image pull (cold, loopback registry)", Warren: summarize(pulls)}
	if docker {
		pull.addPeer("docker pull", summarize(dpulls))
	}

	dir, err := os.MkdirTemp("", "warren-bench-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "payload.txt"), bytes.Repeat([]byte("warren\n"), 1<<14), 0o644)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM bench-pull\nARG NONCE\nRUN echo built $NONCE > /built\nCOPY payload.txt /payload.txt\n"), 0o644)
	ddir := filepath.Join(dir, "docker")
	os.MkdirAll(ddir, 0o755)
	os.WriteFile(filepath.Join(ddir, "payload.txt"), bytes.Repeat([]byte("warren\n"), 1<<14), 0o644)
	os.WriteFile(filepath.Join(ddir, "Dockerfile"), []byte("FROM "+ref+"\nARG NONCE\nRUN echo built $NONCE > /built\nCOPY payload.txt /payload.txt\n"), 0o644)

	o.logf("images: Dockerfile build, then rebuild from cache")
	var builds, rebuilds, dbuilds, drebuilds []time.Duration
	for i := 0; i < o.Runs; i++ {
		nonce := strconv.FormatInt(time.Now().UnixNano(), 10)
		opts := client.BuildOptions{Name: "bench-built", Args: map[string]string{"NONCE": nonce}}
		for _, into := range []*[]time.Duration{&builds, &rebuilds} {
			start := time.Now()
			if _, err := c.BuildDir(ctx, opts, dir, nil); err != nil {
				return nil, fmt.Errorf("build: %w", err)
			}
			*into = append(*into, time.Since(start))
		}
		if docker {
			for _, into := range []*[]time.Duration{&dbuilds, &drebuilds} {
				start := time.Now()
				cmd := exec.CommandContext(ctx, o.Docker, "build", "-q", "--network", "none", "--build-arg", "NONCE="+nonce, "-t", "warren-bench-built", ddir)
				cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
				if b, err := cmd.CombinedOutput(); err != nil {
					return nil, fmt.Errorf("docker build: %v: %s", err, b)
				}
				*into = append(*into, time.Since(start))
			}
		}
	}
	build := Row{Metric: "Dockerfile build (RUN + COPY, uncached)", Warren: summarize(builds), Note: "RUN in a " + o.defaultRuntime() + " sandbox"}
	rebuild := Row{Metric: "Dockerfile rebuild (every step cached)", Warren: summarize(rebuilds)}
	if docker {
		build.addPeer("docker build", summarize(dbuilds))
		rebuild.addPeer("docker build (cached)", summarize(drebuilds))
		exec.Command(o.Docker, "rmi", "-f", "warren-bench-built", ref).Run()
	}
	_ = c.DeleteImage(ctx, "bench-built")
	_ = c.DeleteImage(ctx, "bench-pull")
	_, _ = c.PruneImages(ctx)
	return []Row{pull, build, rebuild}, nil
}

func (o *Options) defaultRuntime() string {
	if info, err := o.Client.Info(context.Background()); err == nil {
		return info.DefaultRuntime
	}
	return "default"
}

// pushRootfs pushes a root filesystem as a one-layer image.
func pushRootfs(ref, rootfs string) error {
	var buf bytes.Buffer
	if err := dirtar.Pack(&buf, rootfs); err != nil {
		return err
	}
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	return remote.Write(r, img)
}
