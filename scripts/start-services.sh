#!/usr/bin/env bash
# Start the local servers the test suite talks to, when they are installed but not running.
# Uses the start commands of this machine kind (no systemd); each step is skipped when the
# server already answers. Needs root for the server processes themselves.
set -uo pipefail

wait_for() {  # name host port
  for _ in $(seq 1 60); do
    if (exec 3<>"/dev/tcp/$2/$3") 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "start-services: $1 did not start listening on $2:$3" >&2
  return 1
}

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! up 5432 && command -v pg_ctlcluster >/dev/null; then
  echo "start-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for PostgreSQL 127.0.0.1 5432
fi

if ! up 3306 && [ -x /usr/sbin/mariadbd ]; then
  echo "start-services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_for MariaDB 127.0.0.1 3306
fi

if ! up 6379 && command -v redis-server >/dev/null; then
  echo "start-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_for Redis 127.0.0.1 6379
fi
exit 0
