# hivemind — build, test and run. `make help` lists the targets.

SHELL := /bin/bash
MODULES  := pkg services/controlplane services/host services/dnsprocessor services/notifier cmd/hivectl bench test/sink test/attack
BINARIES := controlplane:hivemind-controlplane host:hivemind-host dnsprocessor:hivemind-dns notifier:hivemind-notifier
# Test tools of the compose cluster (test/sink; test/attack plays a compromised
# host in the e2e suite), built into dist/ beside the roles.
SINKS    := webhook-sink smtp-sink

BIN := $(CURDIR)/bin
DIST := $(CURDIR)/dist
export PATH := $(BIN):$(PATH)

# Pinned tool versions; `make tools` installs each with its own go install.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPCURL_VERSION            := v1.9.4
VTPROTO_VERSION            := v0.6.0

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/hivemind/hivemind/pkg/buildinfo.Version=$(VERSION) \
	-X github.com/hivemind/hivemind/pkg/buildinfo.Commit=$(COMMIT) \
	-X github.com/hivemind/hivemind/pkg/buildinfo.Time=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)

COMPOSE ?= $(shell if command -v docker-compose >/dev/null 2>&1; then echo docker-compose; else echo docker compose; fi)
TEST_FLAGS ?= -race -count=1 -timeout 15m
BREAKING_AGAINST ?= .git\#branch=main

.PHONY: help tools generate check-generated lint breaking build dist test test-long certs run check-readme readme up down e2e bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/buf:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/grpcurl:
	GOBIN=$(BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(BIN)/protoc-gen-go-vtproto:
	GOBIN=$(BIN) go install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$(VTPROTO_VERSION)

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-go-vtproto $(BIN)/grpcurl ## install pinned buf, protoc-gen-go, protoc-gen-go-grpc, protoc-gen-go-vtproto, grpcurl into ./bin

generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-go-vtproto ## regenerate pkg/gen from proto/
	rm -rf pkg/gen
	buf generate

check-generated: generate ## fail when the committed pkg/gen differs from what make generate writes
	@if [ -n "$$(git status --porcelain -- pkg/gen)" ]; then \
		echo "pkg/gen is out of date: run 'make generate' and commit" >&2; git status --porcelain -- pkg/gen >&2; exit 1; fi

lint: $(BIN)/buf ## buf lint, gofmt and go vet on every module
	buf lint
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:" >&2; echo "$$out" >&2; exit 1; fi
	@for m in $(MODULES); do echo "go vet $$m"; (cd $$m && go vet ./...) || exit 1; done

breaking: $(BIN)/buf ## buf breaking against main
	buf breaking --against '$(BREAKING_AGAINST)'

build: ## build the four role binaries and hivectl into ./bin
	@for b in $(BINARIES); do m=$${b%%:*}; n=$${b##*:}; \
		echo "go build $$n"; (cd services/$$m && go build -ldflags '$(LDFLAGS)' -o $(BIN)/$$n ./cmd/$$n) || exit 1; done
	@echo "go build hivectl"; (cd cmd/hivectl && go build -ldflags '$(LDFLAGS)' -o $(BIN)/hivectl .)

dist: ## build static linux binaries for the container images (roles, hivectl and test sinks) into ./dist
	@for b in $(BINARIES); do m=$${b%%:*}; n=$${b##*:}; \
		echo "go build (static) $$n"; (cd services/$$m && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/$$n ./cmd/$$n) || exit 1; done
	@echo "go build (static) hivectl"; (cd cmd/hivectl && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/hivectl .)
	@for n in $(SINKS); do \
		echo "go build (static) $$n"; (cd test/sink && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '-s -w' -o $(DIST)/$$n ./cmd/$$n) || exit 1; done
	@echo "go build (static) hivemind-attack"; (cd test/attack && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '-s -w' -o $(DIST)/hivemind-attack ./cmd/hivemind-attack)

test: ## run every module's tests with -race (50 randomized fault runs through porcupine included)
	@for m in $(MODULES); do echo "== go test $$m"; (cd $$m && go test $(TEST_FLAGS) ./...) || exit 1; done

test-long: ## the tests with 500 randomized fault runs through the linearizability checker
	HIVEMIND_LIN_RUNS=500 $(MAKE) test TEST_FLAGS="$(TEST_FLAGS) -timeout 60m"

# Every container of docker-compose.yml, plus localhost and 127.0.0.1 in each.
CERT_NODES := controlplane-1 controlplane-2 controlplane-3 host-1 host-2 dns-1 dns-2 notifier-1 notifier-2

certs: ## a development CA and a TLS certificate per compose node in ./certs (the CA is kept once made)
	cd pkg && go run ./cmd/hivemind-certs -dir $(CURDIR)/certs $(CERT_NODES)

run: build $(BIN)/grpcurl ## a local cluster on loopback: 3 control-plane nodes, host, dns, notifier (Ctrl-C stops it)
	deploy/local/run.sh

check-readme: build $(BIN)/grpcurl ## run every bin/hivectl and bin/grpcurl example of README.md and docs/hivectl.md against a running make run
	test/readme/check.sh

readme: build $(BIN)/grpcurl ## start a make run cluster of its own, run every README and hivectl example against it, stop it (CI)
	test/readme/with-cluster.sh

up: dist certs ## build the images and start the docker-compose cluster (TLS, certificates from make certs)
	$(COMPOSE) up -d --build

down: ## stop and remove the docker-compose cluster
	$(COMPOSE) down -v --remove-orphans

e2e: dist certs $(BIN)/grpcurl ## bring the compose cluster up, check every container, tear it down
	COMPOSE="$(COMPOSE)" test/e2e/run.sh

BENCH_SUITES ?= controlplane membership dns notifier snapshot

bench: build ## every benchmark on loopback (etcd, NSD side by side when installed); results appended to bench/out/results.jsonl
	@for s in $(BENCH_SUITES); do echo "== bench -suite $$s"; \
		(cd bench && go run . -suite $$s -bin $(BIN) -out $(CURDIR)/bench/out/results.jsonl $(BENCH_FLAGS)) || exit 1; done

clean: ## remove build output and local cluster data
	rm -rf $(DIST) .run
