#!/usr/bin/env bash
# Idempotent set-up of what only the tests need, under $CLEARBG_HOME (default ~/.cache/clearbg):
#   tools/bin/garage   Garage, a real S3-compatible object store (https://garagehq.deuxfleurs.fr),
#                      for the scale-out tests. It is built from crates.io because it is the one
#                      production S3 server that a package registry carries (MinIO and SeaweedFS
#                      are in none of them; moto and s3rver are mocks). ~15 min once on 2 cores.
# PostgreSQL is not installed here: the tests expect one at 127.0.0.1:5432 (CLEARBG_TEST_POSTGRES).
set -euo pipefail

ROOT=${CLEARBG_HOME:-$HOME/.cache/clearbg}
GARAGE_VERSION=2.5.0
TOOLS=$ROOT/tools
mkdir -p "$TOOLS"
exec 9>"$ROOT/.test-tools.lock"
if ! flock -n 9; then
  echo "waiting for another test-tools run ($ROOT/.test-tools.lock)"
  flock 9
fi

if ! "$TOOLS/bin/garage" --version 2>/dev/null | grep -q ":$GARAGE_VERSION "; then
  echo "building garage $GARAGE_VERSION from crates.io into $TOOLS (once; about 15 min on 2 cores)"
  # SQLite metadata only (bundled), no LMDB, metrics or K2V: the tests need none of them.
  cargo install --quiet --locked "garage@$GARAGE_VERSION" --no-default-features --features bundled-libs,sqlite \
    --root "$TOOLS" --target-dir "$ROOT/downloads/garage-build"
  rm -rf "$ROOT/downloads/garage-build"
fi
echo "ok garage $GARAGE_VERSION"

command -v psql >/dev/null || echo "note: psql not found; the PostgreSQL tests need a server at 127.0.0.1:5432 and psql"
