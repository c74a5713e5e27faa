#!/usr/bin/env bash
# Start Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672, management API on 15672) when they are not
# running, installing the Debian packages first on a fresh machine. Idempotent.
set -euo pipefail
# rabbitmq-server, rabbitmqctl and rabbitmq-plugins live in /usr/sbin, which a user's PATH often lacks
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }
SUDO=$(need_root)
apt_updated=0
install_pkg() {
  if ! command -v "$2" >/dev/null 2>&1; then
    if [ "$apt_updated" -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$1" >/dev/null
  fi
}

wait_for() {  # wait_for SECONDS COMMAND...
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
    sleep 1
  done
}

# Redis
install_pkg redis-server redis-server
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 30 redis-cli -h 127.0.0.1 -p 6379 ping || { echo "redis did not start" >&2; exit 1; }
fi

# RabbitMQ with the management plugin
install_pkg rabbitmq-server rabbitmq-server
if ! $SUDO rabbitmqctl -q status >/dev/null 2>&1; then
  $SUDO rabbitmq-server -detached
  wait_for 120 $SUDO rabbitmqctl -q await_startup || { echo "rabbitmq did not start" >&2; exit 1; }
fi
$SUDO rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
management_up() {
  python3 -c 'import base64, urllib.request as u
r = u.Request("http://127.0.0.1:15672/api/overview", headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
u.urlopen(r, timeout=3).read()'
}
wait_for 90 management_up || { echo "rabbitmq management API did not come up on 15672" >&2; exit 1; }
echo "services: redis and rabbitmq (management on 15672) are up" >&2
