#!/usr/bin/env bash
# System packages the tests need: PostgreSQL 15 + wal2json (source/CDC tests) and kcat (its
# librdkafka mock cluster is the Kafka broker in tests), Prometheus and its Pushgateway (the
# metrics tests scrape and push to the real servers). Idempotent; needs root (or sudo).
set -euo pipefail
pkgs=(postgresql-15 postgresql-15-wal2json kcat prometheus prometheus-pushgateway)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Native pgvector for the PostgreSQL 15 the tests start (Debian bookworm ships no package). Built
# from the vendored release archive beside the repo (../shared/vendor, see its README) when the
# archive is there and the extension is not installed yet; skipped otherwise (the pgvector tests
# then report themselves as not run, and CI's SLUICE_REQUIRE_PGVECTOR=1 turns that into a failure).
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGVECTOR_VERSION=0.8.6
PGVECTOR_SHA256=b4eb8abc425b465082ae5955d13df5338c32ec1bd441f0eb86d780e3958766a6
# SLUICE_PGVECTOR_ARCHIVE overrides the path (a worktree not beside shared/).
pgvector_archive="${SLUICE_PGVECTOR_ARCHIVE:-$(cd "$(dirname "$0")/.." && pwd)/../shared/vendor/pgvector-${PGVECTOR_VERSION}.tar.gz}"
pgvector_control="$(/usr/lib/postgresql/15/bin/pg_config --sharedir 2>/dev/null)/extension/vector--${PGVECTOR_VERSION}.sql"
if [ -f "$pgvector_archive" ] && [ ! -f "$pgvector_control" ]; then
  echo "$PGVECTOR_SHA256  $pgvector_archive" | sha256sum -c --quiet - || {
    echo "install-system-deps: $pgvector_archive does not match the pinned sha256; not building pgvector" >&2
    exit 1
  }
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  build_pkgs=()
  for p in postgresql-server-dev-15 build-essential; do dpkg -s "$p" >/dev/null 2>&1 || build_pkgs+=("$p"); done
  if ((${#build_pkgs[@]})); then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${build_pkgs[@]}"
  fi
  build_dir="$(mktemp -d)"
  trap 'rm -rf "$build_dir"' EXIT
  tar xzf "$pgvector_archive" -C "$build_dir"
  # OPTFLAGS="" keeps the build portable (no -march=native: the CI machine may not be the runner).
  make -s -C "$build_dir/pgvector-${PGVECTOR_VERSION}" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
  $SUDO make -s -C "$build_dir/pgvector-${PGVECTOR_VERSION}" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" install >/dev/null
  echo "install-system-deps: pgvector ${PGVECTOR_VERSION} installed into $($PG_CONFIG --pkglibdir)"
fi
