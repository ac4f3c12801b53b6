# vault-secrets-provider: build, test and demo.
#
#   make demo    run the provider against a dev OpenBao and mount a secret through the real driver client
#   make test    unit + integration tests against real OpenBao and the real driver client (v1.5 and v1.6)
#   make lint    rustfmt and clippy
#   make bench   benchmarks against SPEC §11 (one OpenBao, release build); writes BENCHMARKS.md
#                (not part of `make test`; `make bench-quick` is a smoke run that only prints)
#
# Everything the tests need (OpenBao, the driver's Go client) is installed into .tools/
# by this Makefile; nothing is installed system-wide.

SHELL := /bin/bash
TOOLS := $(CURDIR)/.tools
CARGO ?= cargo
export GOCACHE := $(TOOLS)/go/cache
export GOMODCACHE := $(TOOLS)/go/mod
export GOPATH := $(TOOLS)/go/path

DRIVER_CLIENTS := $(TOOLS)/bin/driver-client-v1.5 $(TOOLS)/bin/driver-client-v1.6

.PHONY: all build test lint demo bench bench-quick tools openbao driver-clients postgres clean

all: build

build:
	$(CARGO) build --release --locked

tools: openbao driver-clients postgres

openbao:
	@scripts/install-openbao.sh >/dev/null

# PostgreSQL server binaries (Debian package) for the leased-credentials tests.
postgres:
	@scripts/install-postgres.sh >/dev/null

driver-clients:
	@tests/driver-client/build.sh $(TOOLS)/bin

# The integration tests share one OpenBao dev server for the whole run.
test: tools
	$(CARGO) build --locked --all-targets
	VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin VSP_TEST_PG_BIN=$$(scripts/install-postgres.sh) \
		scripts/with-openbao.sh $(CARGO) test --locked --all-targets

# benches/provider/ starts its own OpenBao (with an audit device, to count requests).
BENCH_ENV = VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin VSP_TEST_BAO_BIN=$$(scripts/install-openbao.sh)

bench: openbao driver-clients
	$(BENCH_ENV) $(CARGO) bench --locked --bench provider -- --write BENCHMARKS.md

bench-quick: openbao driver-clients
	$(BENCH_ENV) $(CARGO) bench --locked --bench provider -- --quick

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

demo: tools
	$(CARGO) build --locked
	VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin scripts/with-openbao.sh scripts/demo.sh

clean:
	$(CARGO) clean
	rm -rf $(TOOLS)
