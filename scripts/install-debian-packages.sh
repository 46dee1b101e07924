#!/usr/bin/env bash
# Debian packages the test suite uses as real peers (needs root; skipped when present).
#   prometheus-alertmanager: a real Alertmanager sending webhooks to Nachtwacht
#   prometheus: a real Prometheus scraping /metrics, and promtool checking it and the rules
#   redis-tools: redis-cli, used by the Frappe preset's job-queue probe
#   chromium: /usr/bin/chromium, driven by Playwright in the browser tests (Playwright never
#     downloads a browser of its own here; see docs/decisions/0009)
#   nftables: /usr/sbin/nft, the firewall the security responses drive; the firewall test
#     runs it inside a network namespace of its own (docs/decisions/0026)
#   systemd-journal-remote: /lib/systemd/systemd-journal-remote, which writes a real journal
#     file from journal export format; the `journal` security source's tests read it with
#     journalctl (docs/security-monitoring.md)
set -euo pipefail
want=(prometheus-alertmanager prometheus redis-tools chromium nftables systemd-journal-remote)
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
# apt's progress (hundreds of "Setting up" lines for chromium) goes to a log shown on failure only
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "install-debian-packages: installing ${missing[*]}" >&2
apt-get update -qq >"$log" 2>&1 || true
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
