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
