# Every local task, the way CI runs it.
.PHONY: all fmt lint test bench bench-load demo ci

all: fmt lint test

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test:
	scripts/test.sh

# Criterion micro-benches of the request path.
bench:
	cargo bench -p skygate-benches --bench hot_path

# Load harness: direct-to-simulator vs through Skygate (plain, access log on,
# the full pipeline, policies, limits, cache) vs Pingora's stock proxy and nginx.
bench-load:
	cargo build --release -p skygate -p skygate-benches
	target/release/loadbench

demo:
	cargo run --release -- demo

ci:
	bash .ci/run
