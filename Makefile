# warren: `make run` to serve, `make test` for the whole suite.
# Both install what is missing first (apt packages, a pinned runsc).

SHELL := /bin/bash
CACHE := $(CURDIR)/.cache
# gVisor's runsc, built from this pinned module version (CGO_ENABLED=0).
RUNSC_VERSION := v0.0.0-20260905035102-160fafc42237
RUNSC := $(CACHE)/runsc/$(RUNSC_VERSION)/runsc
BIN := $(CURDIR)/bin/warren
AGENT := $(CURDIR)/bin/warren-agent
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/warrenhq/warren/internal/cli.Version=$(VERSION)

WARREN_DATA_DIR ?= $(CURDIR)/.data
WARREN_LISTEN ?= 127.0.0.1:7070
# Images (and the OpenCode warren downloads and verifies for the agent host
# tests, in $(CACHE)/sidecars) are cached outside the data dir.
WARREN_IMAGE_DIR ?= $(CACHE)/images
export WARREN_DATA_DIR WARREN_LISTEN WARREN_IMAGE_DIR

# Native Go fuzzers: package:target. `make test` runs each for a count of
# inputs (a wall-clock -fuzztime can fail spuriously as it expires in Go
# 1.26, golang/go#75804); `make fuzz` for longer (FUZZTIME=10m make fuzz).
FUZZ_TARGETS := ./internal/guest:FuzzCollectExec ./internal/guest:FuzzGreeting \
	./internal/network:FuzzPolicy ./internal/preview:FuzzMatch ./internal/preview:FuzzVerify \
	./internal/sandbox:FuzzCreateRequest ./internal/api:FuzzWriteJSONString
FUZZTIME ?= 2m
FUZZMINIMIZETIME ?= 60s

# make install: where things go. DESTDIR stages a package.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
STATEDIR ?= /var/lib/warren
INSTALL_VARS = BINDIR=$(BINDIR) DATADIR=$(DATADIR) UNITDIR=$(UNITDIR) SYSCONFDIR=$(SYSCONFDIR) STATEDIR=$(STATEDIR) DESTDIR=$(DESTDIR)

.PHONY: all deps build console run test test-unit test-nonroot sdk-typescript e2b-sdk generate-envd test-sdk-cross fmt-check test-cgroupv2 vet clean fuzz install uninstall

# The Go SDK (and the packages it uses) build, tests included, for these.
SDK_PLATFORMS := darwin/amd64 darwin/arm64 windows/amd64 windows/arm64 linux/arm64 freebsd/amd64

all: build

deps:
	@RUNSC_VERSION=$(RUNSC_VERSION) RUNSC=$(RUNSC) scripts/deps.sh

# warren finds runsc beside itself: bin/runsc is the one deps built. It
# finds warren-agent there too: the agent alone, which sandboxes boot
# faster with (it must be of the same version; otherwise warren is its own
# agent).
build: console
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/warren
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=$(VERSION)" -o $(AGENT) ./cmd/warren-agent
	@if [ -s $(CACHE)/runsc-path ]; then ln -sfn "$$(cat $(CACHE)/runsc-path)" $(dir $(BIN))runsc; fi

# doctor first: a summary of what is missing beats a stack of errors.
run: deps build
	@$(BIN) doctor --brief
	$(BIN) serve

# Every test that needs no root and no sandbox; any user can run it.
test-unit: test-sdk-cross fmt-check
	go vet ./...
	go test -count=1 $$(go list ./... | grep -v /e2e$$)

# The web console's terminal: xterm.js from its pinned npm packages
# (package-lock.json), copied where go:embed takes it. Without it a plain
# go build still works; the console then says how to get the terminal.
CONSOLE_VENDOR := internal/console/static/vendor
console:
	@cd internal/console/web && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(CONSOLE_VENDOR)
	@cp internal/console/web/node_modules/@xterm/xterm/lib/xterm.mjs internal/console/web/node_modules/@xterm/xterm/css/xterm.css \
		internal/console/web/node_modules/@xterm/addon-fit/lib/addon-fit.mjs $(CONSOLE_VENDOR)/

# The TypeScript SDK, built from its pinned npm packages (package-lock.json).
sdk-typescript:
	cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

# E2B's JavaScript SDK, for the compatibility test (e2e/e2b, pinned by
# its package-lock.json).
e2b-sdk:
	cd e2e/e2b && npm ci --no-audit --no-fund --loglevel=error

# envd's Go code from warren's definitions (committed; needs protoc,
# protoc-gen-go and protoc-gen-connect-go at the versions in go.mod).
generate-envd:
	cd internal/envd/spec && protoc -I . -I /usr/include --go_out=. --go_opt=paths=source_relative \
		--connect-go_out=. --connect-go_opt=paths=source_relative process/process.proto filesystem/filesystem.proto

# Every Go file as gofmt writes it.
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

test-sdk-cross:
	@set -e; for p in $(SDK_PLATFORMS); do echo "go SDK for $$p"; \
		GOOS=$${p%/*} GOARCH=$${p#*/} go vet ./client ./wire ./dirtar; done

# What test-unit runs, as the user nobody (run by make test, as root).
test-nonroot:
	scripts/test-nonroot.sh

install: deps build
	@BIN=$(BIN) AGENT=$(AGENT) RUNSC=$$(cat $(CACHE)/runsc-path) $(INSTALL_VARS) scripts/install.sh install

uninstall:
	@$(INSTALL_VARS) scripts/install.sh uninstall

# The suite drives real runsc and runc sandboxes; it needs root.
test: deps build sdk-typescript e2b-sdk test-sdk-cross fmt-check
	go vet ./...
	# The hostile-guest suite, with the race detector.
	go test -race -count=1 ./internal/guest/
	$(MAKE) --no-print-directory fuzz FUZZTIME=10000x FUZZMINIMIZETIME=200x
	# The unit tests as a user without root; e2e must skip, not fail.
	scripts/test-nonroot.sh
	CGO_ENABLED=0 WARREN_BIN=$(BIN) WARREN_RUNSC=$$(cat $(CACHE)/runsc-path) WARREN_TEST_IMAGE_DIR=$(WARREN_IMAGE_DIR) \
		WARREN_SIDECAR_DIR=$(CACHE)/sidecars \
		go test -count=1 -timeout 25m ./...

# The e2e tests named in TESTS on a kernel with only cgroup v2, in a QEMU VM
# (emulated, no KVM needed; about 10 minutes for the default set). Not part
# of make test: too slow under emulation for every run.
test-cgroupv2: deps build
	CACHE=$(CACHE) WARREN_BIN=$(BIN) WARREN_RUNSC=$$(cat $(CACHE)/runsc-path) WARREN_TEST_IMAGE_DIR=$(WARREN_IMAGE_DIR) \
		scripts/vm-cgroupv2.sh

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t##*:} for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$${t##*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $${t%%:*}; \
	done

vet:
	go vet ./...

clean:
	rm -rf bin
