# vault-secrets-provider: build, test and demo.
#
#   make demo    run the provider against a dev OpenBao and mount a secret through the real driver client
#   make unit    the fast tier, seconds: unit tests, the provider core against a fake Vault
#                (tests/core.rs) and the parser properties; needs nothing from the tool cache
#   make test    unit + integration tests against real OpenBao, the real driver client (v1.5 and v1.6)
#                and, end to end, a local Kubernetes control plane with the real driver (v1.5 and v1.6);
#                then the Vault-facing suites again against HashiCorp Vault (OSS)
#   make lint    rustfmt and clippy
#   make soak    minutes of Mounts with rotation and OpenBao restarts (SOAK_SECS, default 300)
#   make fuzz    cargo-fuzz (nightly) on each parser target for FUZZ_SECS seconds (default 60)
#   make audit   cargo deny (licences, bans, sources) and cargo audit (RustSec advisories)
#   make image   the container image (static musl binary, FROM scratch) via buildah, checked by
#                running `--version` from it (scripts/build-image.sh)
#   make bench   benchmarks against the performance targets (one OpenBao, release build); writes BENCHMARKS.md
#                (not part of `make test`; `make bench-quick` is a smoke run that only prints;
#                `make bench-tenants`, `make bench-hashicorp` and `make bench-freshness` measure
#                sections 7, 6 and 8 alone and replace only theirs (6: HashiCorp's provider side by side)
#   make compat  HashiCorp's e2e SecretProviderClasses (from its tarball) mounted through its provider
#                and ours, files and outcomes compared; fails on an unexplained difference
#   make vault-server   HashiCorp Vault server (OSS) built from its Go module (tests/peers/vault/),
#                the second server of `make test`
#   make peer-provider  HashiCorp's vault-csi-provider, stock and unthrottled, from its source
#                tarball VSP_PEER_PROVIDER_TARBALL (tests/peers/csi-provider/); both into
#                $(VSP_TOOLS_DIR)/peers/bin; the provider is run by `make bench` and `make compat`
#
# Everything the tests need (OpenBao, the driver's Go client, kube-apiserver, etcd, the
# driver, helm and kustomize built from Go source) is installed by this Makefile into a per-user cache outside
# the clone (VSP_TOOLS_DIR, default ${XDG_CACHE_HOME:-~/.cache}/vault-secrets-provider), so a
# fresh clone (CI's included) reuses earlier builds; each build is keyed by tool, version and
# a stamp of its inputs. `make clean-tools` empties it. Nothing is installed system-wide.

SHELL := /bin/bash
export VSP_TOOLS_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/vault-secrets-provider
TOOLS := $(VSP_TOOLS_DIR)
CARGO ?= cargo
export GOCACHE := $(TOOLS)/go/cache
export GOMODCACHE := $(TOOLS)/go/mod
export GOPATH := $(TOOLS)/go/path

DRIVER_CLIENTS := $(TOOLS)/bin/driver-client-v1.5 $(TOOLS)/bin/driver-client-v1.6
K8S_TOOLS := $(TOOLS)/k8s

# What scripts/with-kubernetes.sh and tests/kubernetes.rs run (tests/kubernetes/build.sh).
export VSP_TEST_ETCD_BIN := $(K8S_TOOLS)/bin/etcd
export VSP_TEST_KUBE_APISERVER_BIN := $(K8S_TOOLS)/bin/kube-apiserver
export VSP_TEST_CLUSTER_PKI_BIN := $(K8S_TOOLS)/bin/cluster-pki
export VSP_TEST_K8S_TOOLS := $(K8S_TOOLS)

# What tests/manifests.rs runs (tests/install-tools/build.sh): the real helm and kustomize.
INSTALL_TOOLS := $(TOOLS)/install-tools
export VSP_TEST_HELM_BIN := $(INSTALL_TOOLS)/bin/helm
export VSP_TEST_KUSTOMIZE_BIN := $(INSTALL_TOOLS)/bin/kustomize

.PHONY: all build unit test lint image demo bench bench-quick bench-tenants bench-freshness bench-hashicorp compat tools openbao driver-clients postgres k8s-tools install-tools vault-server peer-provider clean clean-tools soak fuzz audit

SOAK_SECS ?= 300
FUZZ_SECS ?= 60
FUZZ_TARGETS := request objects path render

all: build

build:
	$(CARGO) build --release --locked

tools: openbao driver-clients postgres k8s-tools install-tools vault-server

openbao:
	@scripts/install-openbao.sh >/dev/null

# PostgreSQL server binaries (Debian package) for the leased-credentials tests.
postgres:
	@scripts/install-postgres.sh >/dev/null

driver-clients:
	@tests/driver-client/build.sh $(TOOLS)/bin

# kube-apiserver, etcd, the driver binaries: built once per version (minutes the first time).
k8s-tools:
	@tests/kubernetes/build.sh $(K8S_TOOLS)

# The peers: other projects' servers and providers, built for comparison runs (tests/peers/);
# each builds once per version into $(PEERS), nice'd. The Vault server is part of `make test`.
PEERS := $(TOOLS)/peers
# HashiCorp's provider source, a release tarball (relative to this directory); absent: skipped.
export VSP_PEER_PROVIDER_TARBALL ?= ../shared/peers/vault-csi-provider-v1.7.4.tar.gz

# HashiCorp Vault server v1.21 (OSS) from its Go module: ~20 min and ~8 GB of Go caches the first time.
vault-server:
	@tests/peers/vault/build.sh $(PEERS)

# HashiCorp's vault-csi-provider, stock and with client-go's rate limit lifted (for bench).
peer-provider:
	@tests/peers/csi-provider/build.sh $(PEERS)

# Tests that need no server, no Go tool and nothing from the tool cache: while changing code.
unit:
	$(CARGO) test --locked --lib --bins --test core --test layers --test properties

# helm and kustomize for the manifest tests (daemonset/ and its chart), pinned in
# tests/install-tools/: built once per version (a few minutes the first time).
install-tools:
	@tests/install-tools/build.sh $(INSTALL_TOOLS)

# The test files that talk to Vault, run a second time against HashiCorp Vault (OSS) by
# `make test`; their namespace tests say "skipped on HashiCorp Vault" (tests/support/flavour.rs).
# Their tests that never reach a Vault server (the socket, our stand-in hostile servers, the
# support code's own unit tests) run once, in the OpenBao pass.
VAULT_SUITES := mount lifecycle faults tls bad_input security tenants tenants_bounds tenants_fair \
	ops kubernetes freshness secret_sync
VAULT_PASS_SKIP := support:: socket_is_private_and_removed_on_sigterm socket_mode_and_owner \
	healthz_and_readyz_follow_the_socket \
	redirects_lead_only_to_allowed_origins non_vault_bodies_are_never_quoted \
	huge_answers_from_a_hostile_vault a_dense_answer_is_charged hostile_answers_never_panic

# The integration tests share one OpenBao dev server and one Kubernetes control plane
# for the whole run; then the Vault-facing suites share one Vault dev server.
test: tools
	$(CARGO) build --locked --all-targets
	VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin VSP_TEST_PG_BIN=$$(scripts/install-postgres.sh) \
		scripts/with-kubernetes.sh \
		scripts/with-openbao.sh $(CARGO) test --locked --all-targets
	VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin VSP_TEST_PG_BIN=$$(scripts/install-postgres.sh) \
		VSP_TEST_VAULT_BIN=$(PEERS)/bin/vault \
		scripts/with-kubernetes.sh \
		scripts/with-vault.sh $(CARGO) test --locked $(VAULT_SUITES:%=--test %) \
		-- $(VAULT_PASS_SKIP:%=--skip %)

# The soak test alone, longer than its 30 s run inside `make test`.
soak: openbao driver-clients
	$(CARGO) build --locked --all-targets
	VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin VSP_SOAK_SECS=$(SOAK_SECS) \
		scripts/with-openbao.sh $(CARGO) test --locked --test soak -- --nocapture

# libFuzzer on each target (fuzz/), nightly. No sanitizer: our code forbids `unsafe`,
# and panics, failed assertions, timeouts and memory blow-ups are what we look for.
# Crashes land in fuzz/artifacts/<target>/; add them to tests/properties.rs.
fuzz:
	@bin=$$(scripts/install-cargo-tools.sh) && cd fuzz && for t in $(FUZZ_TARGETS); do \
		PATH="$$bin:$$PATH" CARGO_BUILD_JOBS=2 $(CARGO) +nightly fuzz run -s none $$t -- \
			-max_total_time=$(FUZZ_SECS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
			2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|thread|artifact_prefix|Test unit written)" ; \
		test $${PIPESTATUS[0]} -eq 0 || exit 1; done

audit:
	scripts/audit.sh

# benches/provider/ starts its own OpenBao (with an audit device, to count requests).
# Section 6 runs HashiCorp's provider (make peer-provider) against a local kube-apiserver
# (scripts/with-kubernetes.sh); without its tarball the section says why it was not measured.
BENCH_ENV = VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin VSP_TEST_BAO_BIN=$$(scripts/install-openbao.sh) \
	VSP_PEER_PROVIDER_DIR=$(PEERS)/bin

bench: openbao driver-clients k8s-tools peer-provider
	$(BENCH_ENV) scripts/with-kubernetes.sh $(CARGO) bench --locked --bench provider -- --write BENCHMARKS.md

bench-quick: openbao driver-clients k8s-tools peer-provider
	$(BENCH_ENV) scripts/with-kubernetes.sh $(CARGO) bench --locked --bench provider -- --quick

bench-tenants: openbao driver-clients
	$(BENCH_ENV) $(CARGO) bench --locked --bench provider -- --only tenants --write BENCHMARKS.md

bench-freshness: openbao driver-clients
	$(BENCH_ENV) $(CARGO) bench --locked --bench provider -- --only freshness --write BENCHMARKS.md

bench-hashicorp: openbao driver-clients k8s-tools peer-provider
	$(BENCH_ENV) scripts/with-kubernetes.sh \
		$(CARGO) bench --locked --bench provider -- --only hashicorp --write BENCHMARKS.md

# HashiCorp's e2e SecretProviderClasses (from its tarball) through both providers, compared
# (tests/peers/compat.rs); without the tarball it says so and passes.
compat: openbao driver-clients k8s-tools peer-provider postgres
	VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin VSP_TEST_BAO_BIN=$$(scripts/install-openbao.sh) \
		VSP_TEST_PG_BIN=$$(scripts/install-postgres.sh) VSP_PEER_PROVIDER_DIR=$(PEERS)/bin \
		scripts/with-kubernetes.sh $(CARGO) test --locked --test compat -- --compat $(COMPAT_ARGS)

# compat on its own: `--all-targets` leaves out targets with `test = false`.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --test compat -- -D warnings

image:
	scripts/build-image.sh

demo: openbao driver-clients
	$(CARGO) build --locked
	VSP_TEST_DRIVER_CLIENT_DIR=$(TOOLS)/bin scripts/with-openbao.sh scripts/demo.sh

clean:
	$(CARGO) clean
	rm -rf fuzz/target

# The tool cache is shared by every clone of this user; Go's module cache is read-only on disk.
clean-tools:
	chmod -R u+w $(TOOLS) 2>/dev/null || true
	rm -rf $(TOOLS)
