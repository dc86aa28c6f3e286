# clearbg: the two commands a newcomer needs are `make run` and `make test`.
# Both first run the idempotent set-up step (ffmpeg, ONNX Runtime, models, test footage),
# which caches everything in $CLEARBG_HOME (default ~/.cache/clearbg), outside the repo.

CLEARBG_HOME ?= $(HOME)/.cache/clearbg
export CLEARBG_HOME

.PHONY: setup build run test bench

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
