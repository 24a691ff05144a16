# sandboxd — see README.md.
SHELL := /bin/bash
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X github.com/sandboxd/sandboxd/ctl.Version=$(VERSION)
PREFIX   ?= /usr/local
# Static binaries: sandboxd-init runs inside sandboxes that have no libc of ours.
export CGO_ENABLED = 0

.PHONY: all build test unit integration test-languages test-race bench run install uninstall deps clean image

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/sandboxd ./cmd/sandboxctl ./cmd/sandboxd-init

# deps installs what sandboxd and its tests need and the machine lacks.
deps:
	@./.ci/deps

# test runs every test: unit tests, then integration tests against a private
# containerd that the tests start and stop themselves (root needed).
test: deps unit integration

# unit runs vet and the unit tests with the race detector. -race needs cgo,
# for the test binaries only: the binaries `make build` ships stay static.
unit:
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...
	cd deploy/kubernetes && $(GO) vet ./... && $(GO) test -count=1 ./...

integration: build
	$(GO) test -count=1 -tags integration -timeout 30m -v ./cmd/sandboxd/

# test-languages installs every built-in language's Debian package
# (.ci/deps-languages, once: about 4 minutes) and runs the same program in
# each one through the daemon, as `make test` does for the core set: a
# language defined but not runnable fails. About a minute more.
test-languages: build
	./.ci/deps-languages
	SANDBOXD_TEST_LANGUAGES=all $(GO) test -count=1 -tags integration -timeout 30m -run '^TestLanguages' -v ./cmd/sandboxd/

# test-race runs the integration tests against a sandboxd built with the
# race detector (the tests build it, with cgo; sandboxd-init stays static):
# a data race that any daemon of the suite reports fails the suite.
# RUN='TestStream|TestSession' runs some of them.
test-race:
	SANDBOXD_RACE=1 $(GO) test -count=1 -tags integration -timeout 60m -v $(if $(RUN),-run '$(RUN)') ./cmd/sandboxd/

bench: deps build
	$(GO) test -count=1 -tags integration -run '^$$' -bench . -benchtime 1x -timeout 30m ./cmd/sandboxd/

# run starts sandboxd in the foreground, as root, after saying where
# sandboxctl is (not on PATH until make install) and the socket it serves.
run: deps build
	@sock=$$(./bin/sandboxd --check-config 2>/dev/null | sed -n "s/^socket = '\(.*\)'$$/\1/p"); \
	echo "sandboxctl: $(CURDIR)/bin/sandboxctl (make install puts it on PATH); sandboxd's socket: $${sock:-/run/sandboxd/sandboxd.sock}"; \
	echo "try, as root or a member of group sandboxd: SANDBOXD_SOCKET=$${sock:-/run/sandboxd/sandboxd.sock} $(CURDIR)/bin/sandboxctl execute -l python -c 'print(1)'"
	./bin/sandboxd

UNITDIR  ?= /etc/systemd/system

# install puts the binaries, the systemd units and the example configuration
# in place and creates the sandboxd group; enable with
# systemctl enable --now sandboxd.socket sandboxd.service
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/sandboxd $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/sandboxd
	install -m 0755 bin/sandboxd bin/sandboxctl $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 bin/sandboxd-init $(DESTDIR)$(PREFIX)/lib/sandboxd/
	sed 's|/usr/local/bin/sandboxd|$(PREFIX)/bin/sandboxd|' systemd/sandboxd.service > $(DESTDIR)$(UNITDIR)/sandboxd.service
	install -m 0644 systemd/sandboxd.socket $(DESTDIR)$(UNITDIR)/
	install -m 0644 systemd/sandboxd.toml.example $(DESTDIR)/etc/sandboxd/
	getent group sandboxd >/dev/null || groupadd --system sandboxd
	-systemctl daemon-reload 2>/dev/null

uninstall:
	-systemctl disable --now sandboxd.service sandboxd.socket 2>/dev/null
	rm -f $(DESTDIR)$(PREFIX)/bin/sandboxd $(DESTDIR)$(PREFIX)/bin/sandboxctl $(DESTDIR)$(PREFIX)/lib/sandboxd/sandboxd-init
	rm -f $(DESTDIR)$(UNITDIR)/sandboxd.service $(DESTDIR)$(UNITDIR)/sandboxd.socket $(DESTDIR)/etc/sandboxd/sandboxd.toml.example
	-rmdir $(DESTDIR)$(PREFIX)/lib/sandboxd $(DESTDIR)/etc/sandboxd 2>/dev/null
	-systemctl daemon-reload 2>/dev/null

# image builds deploy/Containerfile's images, sandboxd and sandboxd-client
# (IMAGE_TARGETS: also runtimes), tagged $(IMAGE_TAG), with the first
# image builder that works here: docker or nerdctl whose daemon answers,
# podman, buildah. Timestamps come from the last commit, for the same
# image from the same sources.
IMAGE_REPO    ?= sandboxd
IMAGE_TAG     ?= $(VERSION)
IMAGE_TARGETS ?= sandboxd client
image:
	@builder=; \
	for b in docker nerdctl podman buildah; do \
		command -v $$b >/dev/null 2>&1 || continue; \
		case $$b in docker|nerdctl) $$b info >/dev/null 2>&1 || { echo "make image: $$b is installed but its daemon does not answer; trying the next builder" >&2; continue; };; esac; \
		builder=$$b; break; \
	done; \
	if [ -z "$$builder" ]; then \
		echo "make image: no image builder works here (docker or nerdctl with a running daemon, podman, buildah): install one, or build deploy/Containerfile where one is" >&2; \
		exit 1; \
	fi; \
	epoch=$$(git log -1 --format=%ct 2>/dev/null || echo 0); \
	stamp=; case $$builder in podman|buildah) stamp="--timestamp $$epoch";; esac; \
	for target in $(IMAGE_TARGETS); do \
		name=$(IMAGE_REPO); [ $$target = sandboxd ] || name=$(IMAGE_REPO)-$$target; \
		echo "$$builder: $$name:$(IMAGE_TAG) (target $$target)"; \
		$$builder build -f deploy/Containerfile --target $$target -t $$name:$(IMAGE_TAG) \
			--build-arg VERSION=$(VERSION) --build-arg SOURCE_DATE_EPOCH=$$epoch $$stamp . || exit 1; \
	done

clean:
	rm -rf bin
