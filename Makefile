# ondemand-snapshotter: the two set-up commands are `make test` and `make run` (see README.md).
SWIFT ?= swift
PREFIX ?= /usr/local
STATE ?= $(CURDIR)/.state
SOCKET ?= $(STATE)/snapshotter.sock
BUILD_FLAGS ?=

.PHONY: all setup build release test lint format run install uninstall bench bench-snapshots bench-registry bench-convert bench-lazy bench-lazy-vm bench-wan bench-coldstart bench-scale bench-disk generate-proto clean

all: build

## setup: install missing Debian packages (apt-get)
setup:
	@scripts/setup.sh

## build: debug build of snapshotterd and snapctl
build: setup
	$(SWIFT) build $(BUILD_FLAGS)

release: setup
	$(SWIFT) build -c release $(BUILD_FLAGS)

## test: install what is missing, build, lint, run every test
test: setup
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(MAKE) --no-print-directory lint
	$(SWIFT) test --skip-build $(BUILD_FLAGS)

## generate-proto: regenerate ContainerdProxy's committed gRPC code from its .proto files (protoc + Swift plugins)
generate-proto:
	scripts/generate-proto.sh

## lint: swift format, and the import check (architecture/dependencies.txt)
lint:
	$(SWIFT) format lint --strict --recursive --parallel Package.swift Sources Tests benchmarks
	python3 scripts/check-imports.py --manifest
	python3 scripts/check-suite-threads.py

format:
	$(SWIFT) format format --in-place --recursive --parallel Package.swift Sources Tests benchmarks

## run: build and start the daemon on ./.state (Ctrl-C stops it)
run: build
	@mkdir -p $(STATE)
	@echo "snapshotterd: state in $(STATE), API on $(SOCKET)"
	@if ! command -v snapctl >/dev/null 2>&1 && [ -w $(PREFIX)/bin ]; then \
	  ln -sf $(CURDIR)/.build/debug/snapctl $(PREFIX)/bin/snapctl; \
	  echo "linked $(PREFIX)/bin/snapctl -> $(CURDIR)/.build/debug/snapctl (make install replaces it)"; \
	fi
	@echo "talk to it with:"
	@echo "  snapctl --socket $(SOCKET) status"
	@echo "  curl --unix-socket $(SOCKET) http://localhost/v1/status"
	.build/debug/snapshotterd --root $(STATE) --socket $(SOCKET) --containerd-socket $(STATE)/containerd.sock

## install: binaries to $(PREFIX)/bin, units to /etc/systemd/system, example config to /etc
install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/ondemand-snapshotter
	install -m 0755 .build/release/snapshotterd .build/release/snapctl $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 deploy/snapshotterd.service deploy/snapshotterd.socket $(DESTDIR)/etc/systemd/system/
	@if [ -e $(DESTDIR)/etc/ondemand-snapshotter/config.toml ]; then \
	  echo "keeping existing /etc/ondemand-snapshotter/config.toml"; \
	else \
	  install -m 0644 deploy/config.toml $(DESTDIR)/etc/ondemand-snapshotter/config.toml; \
	fi
	@echo "installed; enable with: systemctl daemon-reload && systemctl enable --now snapshotterd.socket snapshotterd.service"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/snapshotterd $(DESTDIR)$(PREFIX)/bin/snapctl
	rm -f $(DESTDIR)/etc/systemd/system/snapshotterd.service $(DESTDIR)/etc/systemd/system/snapshotterd.socket

## bench-snapshots: p50/p99 latency of 1,000 prepare and 1,000 remove calls through the socket
bench-snapshots: setup
	$(SWIFT) build -c release --product snapshotterd $(BUILD_FLAGS)
	$(SWIFT) build -c release --product SnapshotBench $(BUILD_FLAGS)
	.build/release/SnapshotBench --daemon .build/release/snapshotterd --count 1000

## bench-registry: one 256 MiB blob download through our client next to curl, same registry, as a ratio
bench-registry: setup
	$(SWIFT) build -c release --product RegistryBench $(BUILD_FLAGS)
	.build/release/RegistryBench 256 3

## bench-convert: ~300 MB of /usr built by mkfs.erofs --chunksize=1048576 and by our tar -> RAFS v6 builder, as a ratio; then its gzip index build vs gzip -d
bench-convert: setup
	$(SWIFT) build -c release --product ConvertBench $(BUILD_FLAGS)
	.build/release/ConvertBench 3

## bench-lazy: cold read of a 256 MiB file through the mount vs curl + decompress, warm vs eager, first-byte latency
bench-lazy: setup
	$(SWIFT) build -c release --product snapshotterd $(BUILD_FLAGS)
	$(SWIFT) build -c release --product snapshotterd-fdholder $(BUILD_FLAGS)
	$(SWIFT) build -c release --product LazyBench $(BUILD_FLAGS)
	.build/release/LazyBench 256 200

## bench-wan: through an emulated wide-area link (netns + veth + tbf + delay line), per profile: near (1 ms,
## 1 Gbit/s), region (20 ms, 200 Mbit/s), far (80 ms, 50 Mbit/s); PROFILE=far for one. First bench-lazy on
## loopback (cold read vs serial curl + zstd), then per profile (cold read vs the link rate, first byte vs RTT,
## pull round trips), then the cold start of a 1 GiB image with a 20 MiB start-up set vs containerd's overlayfs
## and vs the start's limit (WAN_IMAGE_MIB, WAN_STARTUP_MIB)
PROFILE ?= near region far
WAN_IMAGE_MIB ?= 1024
WAN_STARTUP_MIB ?= 20
bench-wan: setup
	$(SWIFT) build -c release --product snapshotterd $(BUILD_FLAGS)
	$(SWIFT) build -c release --product snapshotterd-fdholder $(BUILD_FLAGS)
	$(SWIFT) build -c release --product LazyBench $(BUILD_FLAGS)
	$(SWIFT) build -c release --product ColdStartBench $(BUILD_FLAGS)
	.build/release/LazyBench 256 200
	for profile in $(PROFILE); do LAZYBENCH_PROFILE=$$profile .build/release/LazyBench 256 200 || exit 1; done
	.build/release/ColdStartBench --daemon .build/release/snapshotterd --image-mib $(WAN_IMAGE_MIB) \
		--startup-files $(WAN_STARTUP_MIB) --runs 1 --profile "$(PROFILE)"

## bench-lazy-vm: the same through the cachefiles front end inside the 6.12 test VM (smaller image: TCG is slow)
bench-lazy-vm: setup
	$(SWIFT) build -c release --product snapshotterd $(BUILD_FLAGS)
	$(SWIFT) build -c release --product snapshotterd-fdholder $(BUILD_FLAGS)
	$(SWIFT) build -c release --product LazyBench $(BUILD_FLAGS)
	VM_DISK_SIZE=2G scripts/vm-test --timeout 900 -- env LAZYBENCH_FRONT_END=cachefiles .build/release/LazyBench 32 50

## bench-coldstart: cold start of a container on a 512 MiB image: containerd's overlayfs (pull + unpack + run) vs ours (lazy), as a ratio
bench-coldstart: setup
	$(SWIFT) build -c release --product snapshotterd $(BUILD_FLAGS)
	$(SWIFT) build -c release --product snapshotterd-fdholder $(BUILD_FLAGS)
	$(SWIFT) build -c release --product ColdStartBench $(BUILD_FLAGS)
	.build/release/ColdStartBench --daemon .build/release/snapshotterd --image-mib 512 --startup-files 16

bench: bench-snapshots bench-registry bench-convert bench-lazy bench-coldstart

clean:
	rm -rf .build $(STATE)

## bench-scale: 1,000 images / 10,000 blobs / 1,000 snapshots (200 mounted) through the real daemon: RSS, start-up, p99s, a connection storm
bench-scale: setup
	$(SWIFT) build -c release --product snapshotterd $(BUILD_FLAGS)
	$(SWIFT) build -c release --product ScaleBench $(BUILD_FLAGS)
	.build/release/ScaleBench --daemon .build/release/snapshotterd

## bench-disk: 4 images of 4x the cache budget read in turn with a hot set below it: peak disk use vs the budget, hot-set hit rate, eviction cost, hot-set throughput vs no budget
bench-disk: setup
	$(SWIFT) build -c release --product snapshotterd $(BUILD_FLAGS)
	$(SWIFT) build -c release --product snapshotterd-fdholder $(BUILD_FLAGS)
	$(SWIFT) build -c release --product DiskBench $(BUILD_FLAGS)
	.build/release/DiskBench 128 16
