# overlaybd in Go. The README's quick start is `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
# Binaries built by `make build` (one folder per binary under cmd/).
CMDS := $(notdir $(wildcard cmd/*))
# Packages with concurrency, run again under the race detector.
RACE_PKGS = $(shell $(GO) list ./core/... ./engines/... ./frontends/... ./caches/... ./plugins/... ./conformance/... 2>/dev/null)
# Packages with build-tagged flavours (cgo codecs, ISA-L), tested again with the tags.
TAG_PKGS = $(shell $(GO) list ./codecs/... ./core/zfile/... ./core/envelope/... ./cmd/... 2>/dev/null)
TEST_TIMEOUT ?= 30m

PHONY_EXTRA := install uninstall deb test-vm bench-engines bench-nbd bench-remote test-long conformance-full conformance-vm
.PHONY: $(PHONY_EXTRA) all deps build test test-unit test-race test-tags vet fmt-check demo demo-check fuzz bench clean

all: build

deps:
	scripts/deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...
	$(GO) vet -tags cgo_codecs,isal ./...

fmt-check:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi

# The whole suite: unit, property, golden vectors, fuzz seeds, real NBD clients,
# in-process registries, the quick conformance matrix, the race detector, the
# tagged flavours, and the kernel tier in a qemu VM.
test: deps build vet fmt-check test-unit test-race test-tags test-vm

# OVERLAYBD_REQUIRE_TOOLS=1: a missing NBD client or ext4 tool fails the tests
# instead of skipping them.
test-unit:
	OVERLAYBD_REQUIRE_TOOLS=1 $(GO) test -timeout $(TEST_TIMEOUT) ./...

test-race:
	$(GO) test -race -short -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

test-tags:
	$(GO) test -tags cgo_codecs,isal -timeout $(TEST_TIMEOUT) $(TAG_PKGS)
	$(GO) test -tags purego -timeout $(TEST_TIMEOUT) ./codecs/crc32c/...

# Kernel-level tests (TCMU + tcm_loop, nbd.ko, ext4) in a qemu VM booting
# Debian's kernel; the harness installs and caches what it needs. Needs root.
test-vm:
	OVERLAYBD_REQUIRE_TOOLS=1 $(GO) test -tags vm -count=1 -timeout 30m ./test/vm/
	OVERLAYBD_REQUIRE_TOOLS=1 $(GO) test -tags vm -count=1 -timeout 10m -run Kernel ./cmd/overlaybd-nbd/

# Long runs, never part of `make test`.
FUZZTIME ?= 60s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./... | tee bench.out

# Benchmarks against external peers (docs/BENCHMARKS.md).
bench-engines: deps
	REPS=5 RUNTIME=3 bench/engines/run.sh

bench-nbd: deps build
	ROUNDS=3 bench/nbd-fio.sh 256 5

bench-remote:
	$(GO) test -run '^$$' -bench 'ColdRandom4K|ColdSequential' -benchtime 48x ./core/remote
	$(GO) test -run '^$$' -bench 'FetchAmplification|Download' -benchtime 300x ./core/remote

# The full conformance matrix with every flavour: table on stdout, JSON report.
conformance-full:
	mkdir -p $(BIN)/plugins
	$(GO) build -o $(BIN)/plugins/lz4-cgo ./plugins/examples/lz4-cgo
	$(GO) build -o $(BIN)/plugins/zstd-cgo ./plugins/examples/zstd-cgo
	$(GO) run -tags cgo_codecs,isal ./cmd/overlaybd-conformance --plugin-lz4 $(BIN)/plugins/lz4-cgo --plugin-zstd $(BIN)/plugins/zstd-cgo --ops 300 --report conformance-report.json

# The whole TCMU column of the conformance matrix (2,304 cells at 300
# operations) in the VM against a real kernel: several hours under TCG.
# OVERLAYBD_VM_CONFORMANCE may hold filter flags instead of "full";
# OVERLAYBD_VM_CONFORMANCE_OPS sets the operations per cell.
conformance-vm:
	OVERLAYBD_VM_CONFORMANCE=$${OVERLAYBD_VM_CONFORMANCE:-full} $(GO) test -tags vm -count=1 -timeout 0 -run TestConformanceTCMU -v ./test/vm/

# Long property runs of the LSMT layers and the conformance suite.
test-long:
	OVERLAYBD_LONG=1 $(GO) test -timeout 60m ./core/lsmt/ ./conformance/...

demo: build
	scripts/deps.sh demo
	scripts/demo.sh

demo-check: build
	scripts/deps.sh demo
	scripts/demo.sh --check

# Installation (DESTDIR and PREFIX honoured): binaries in $(PREFIX)/bin, the default
# overlaybd.json in /etc/overlaybd (never overwritten), systemd units.
PREFIX ?= /opt/overlaybd
install: build
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) BINSRC=$(BIN) scripts/install.sh install

uninstall:
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) BINSRC=$(BIN) scripts/install.sh uninstall

deb: build
	BINSRC=$(BIN) scripts/install.sh deb $(CURDIR)/dist/out

clean:
	rm -rf $(BIN) bench.out dist/out
