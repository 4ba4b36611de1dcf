#!/usr/bin/env bash
# Make sure the servers the integration tests talk to answer on loopback: Redis on 6379 and
# PostgreSQL on 5432 (trust auth, database `test`). Machines that already run them are left
# alone; on a plain machine they are installed from Debian's packages and started here.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
apt_install() {
  if [ -z "${ZHIKU_APT_UPDATED:-}" ]; then apt-get update -qq; export ZHIKU_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! answers 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/zhiku-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/zhiku-redis --logfile /tmp/zhiku-redis/redis.log
  for _ in $(seq 1 50); do answers 6379 && break; sleep 0.1; done
  echo "ensure-services: started redis-server on 6379"
fi

if ! answers 5432; then
  ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  conf=/etc/postgresql/$version/main
  # Trust local loopback connections: the tests connect as postgres without a password.
  if ! grep -q "zhiku-trust" "$conf/pg_hba.conf"; then
    { echo "# zhiku-trust"; echo "host all all 127.0.0.1/32 trust"; echo "host all all ::1/128 trust";
      echo "local all all trust"; cat "$conf/pg_hba.conf"; } > /tmp/zhiku-pg_hba.conf
    cp /tmp/zhiku-pg_hba.conf "$conf/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 100); do answers 5432 && break; sleep 0.1; done
  echo "ensure-services: started PostgreSQL $version on 5432"
fi

# Browser tests (tests/ui) drive Debian's chromium through Playwright, never a browser Playwright
# downloads itself; a CJK font makes the Chinese interface text legible in their screenshots.
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
  echo "ensure-services: installed chromium"
fi
if ! ls /usr/share/fonts/truetype/wqy/wqy-microhei.ttc >/dev/null 2>&1; then
  apt_install fonts-wqy-microhei
fi

# Legacy Office formats are converted by LibreOffice or antiword (the parser tests use both).
bash "$(dirname "$0")/ensure-converters.sh"

# OCR of scans and images (rapidocr) imports OpenCV, whose wheel links libGL and GLib.
shared_libs=$(ldconfig -p 2>/dev/null || true)
if ! grep -q 'libGL\.so\.1' <<<"${shared_libs}"; then apt_install libgl1; fi
if ! grep -q 'libglib-2\.0\.so\.0' <<<"${shared_libs}"; then apt_install libglib2.0-0; fi

if command -v psql >/dev/null; then
  if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null
  fi
fi
