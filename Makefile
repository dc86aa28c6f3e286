# clearbg: the two commands a newcomer needs are `make run` and `make test`.
# Both first run the idempotent set-up step (ffmpeg, ONNX Runtime, models, test footage),
# which caches everything in $CLEARBG_HOME (default ~/.cache/clearbg), outside the repo.

CLEARBG_HOME ?= $(HOME)/.cache/clearbg
export CLEARBG_HOME

.PHONY: setup build run test bench eval

setup:
	@scripts/setup.sh

build: setup
	cargo build --release

# Until the HTTP service lands, `run` removes the background of a real clip of a person.
run: build
	@mkdir -p data
	./target/release/clearbg models
	./target/release/clearbg remove "$(CLEARBG_HOME)/fixtures/carphone.mp4" -o data/demo.webm --model human
	@echo "open data/demo.webm in a browser to see the subject over transparency"

test: setup
	cargo test --workspace --no-fail-fast

bench: build
	bench/run.sh

# Matte quality and temporal stability against ground truth (eval/RESULTS.md). Default tiers:
# light and human; `make eval TIERS="light human original pro"` adds the slow ISNet tiers, which
# run on one second of two clips only.
TIERS ?= light human
eval: build
	cargo build --release -p clearbg-engine --example matte_eval
	cd eval && "$(CLEARBG_HOME)/venv/bin/python" test_metrics.py
	cd eval && "$(CLEARBG_HOME)/venv/bin/python" run.py --tiers "$(TIERS)"
