#!/usr/bin/env bash
# Debian packages the test suite uses as real peers (needs root; skipped when present).
#   prometheus-alertmanager: a real Alertmanager sending webhooks to Nachtwacht
#   redis-tools: redis-cli, used by the Frappe preset's job-queue probe
set -euo pipefail
want=(prometheus-alertmanager redis-tools)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-debian-packages: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
apt-get install -y -qq --no-install-recommends "${missing[@]}"
