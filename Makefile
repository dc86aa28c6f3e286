# clearbg: the two commands a newcomer needs are `make run` and `make test`.
# Both first run the idempotent set-up step (ffmpeg, ONNX Runtime, models, test footage),
# which caches everything in $CLEARBG_HOME (default ~/.cache/clearbg), outside the repo.

CLEARBG_HOME ?= $(HOME)/.cache/clearbg
export CLEARBG_HOME

.PHONY: setup setup-tests setup-cuda setup-video-matting build run test bench eval eval-keyframes

setup:
	@scripts/setup.sh

# Also what only the tests need: schemathesis, Chromium and playwright-core, Garage (S3).
setup-tests:
	@scripts/setup.sh --tests

# The GPU build of ONNX Runtime and the CUDA libraries, for `--device cuda` (docs/deploy.md).
setup-cuda: setup
	@scripts/setup-cuda.sh

# Opt-in: Robust Video Matting for the `video` tier. Its weights are GPL-3.0, so neither
# `make run` nor `make test` installs it; this prints the licence and installs it.
setup-video-matting:
	@scripts/setup.sh --with-gpl-models

build: setup
	cargo build --release

# `run` starts the API on 127.0.0.1:8080 with its embedded defaults: a SQLite file and local
# object storage under ./data, one worker. Settings: CLEARBG_* variables (see the README).
run: build
	@mkdir -p data
	@./target/release/clearbg models >/dev/null || ./target/release/clearbg models
	@echo "clearbg: get an API key (in another terminal):  ./target/release/clearbg keys create --client-id me"
	@echo "clearbg: then follow the curl session in README.md (upload -> job -> poll -> download)"
	./target/release/clearbg serve

# Everything, then the API suite again with PostgreSQL in place of SQLite (each test server
# gets a database of its own at 127.0.0.1:5432, dropped after).
test: setup-tests
	cargo test --workspace --no-fail-fast
	CLEARBG_TEST_DATABASE=postgres cargo test -p clearbg --no-fail-fast --test api --test process -- --skip scale_out --skip webapp

bench: build
	bench/run.sh

# Matte quality and temporal stability against ground truth (eval/RESULTS.md). Default tiers:
# light and human; `make eval TIERS="light human original pro"` adds the slow ISNet tiers, which
# run on one second of two clips only, and `video` the opt-in tier (make setup-video-matting).
TIERS ?= light human
eval: build
	cargo build --release --example matte_eval
	cd eval && "$(CLEARBG_HOME)/venv/bin/python" test_metrics.py
	cd eval && "$(CLEARBG_HOME)/venv/bin/python" run.py --tiers "$(TIERS)"

# What keyframes (and a smaller model input) cost in quality: each variant's matte against the
# model on every frame (IoU per frame; MAD and dtSSD on the ground-truth clips). Slow on a CPU:
# ISNet runs on every frame of each clip for the reference.
KF_TIERS ?= human original pro
KF_VARIANTS ?= adaptive
KF_FRAMES ?= 50
eval-keyframes: build
	cargo build --release --example matte_eval
	cd eval && "$(CLEARBG_HOME)/venv/bin/python" keyframes.py --tiers "$(KF_TIERS)" --variants "$(KF_VARIANTS)" --frames $(KF_FRAMES)
