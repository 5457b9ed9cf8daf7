#!/bin/sh
# Role hook: memcached -- memcached with raised file-descriptor limits: the same number in
# /etc/security/limits.conf (nofile), the systemd unit (LimitNOFILE) and the daemon's -c (max connections).
#
# Use in a recipe:
#   hooks: {post-files: [{script: memcached/setup.sh, env: {MEMCACHED_MAX_CONN: "65536"}}]}
#   packages: memcached
# Variables (environment of the hook):
#   MEMCACHED_MAX_CONN   -c, and the open-files limit (default 65536)
#   MEMCACHED_NOFILE     open-files limit of limits.conf and the unit, if it should differ (default: the same
#                        number; memcached itself sets its own limit to -c when it starts as root)
#   MEMCACHED_MEMORY     -m in MB (default: the package's, 64)
#   MEMCACHED_LISTEN     -l address (default: the package's, 127.0.0.1; 0.0.0.0 for every interface)
set -eu
CONN=${MEMCACHED_MAX_CONN:-65536}
NOFILE=${MEMCACHED_NOFILE:-$CONN}
case "$CONN$NOFILE" in *[!0-9]*) echo "memcached: MEMCACHED_MAX_CONN and MEMCACHED_NOFILE must be numbers" >&2; exit 2;; esac
conf=/etc/memcached.conf
set_opt() {   # set_opt FLAG VALUE: replace "-F old" or add it
    if grep -q "^$1 " "$conf"; then sed -i "s|^$1 .*|$1 $2|" "$conf"; else echo "$1 $2" >> "$conf"; fi
}
set_opt -c "$CONN"
[ -z "${MEMCACHED_MEMORY:-}" ] || set_opt -m "$MEMCACHED_MEMORY"
[ -z "${MEMCACHED_LISTEN:-}" ] || set_opt -l "$MEMCACHED_LISTEN"
mkdir -p /etc/security/limits.d /etc/systemd/system/memcached.service.d
printf 'memcache soft nofile %s\nmemcache hard nofile %s\n' "$NOFILE" "$NOFILE" > /etc/security/limits.d/90-imgbuild-memcached.conf
printf '[Service]\nLimitNOFILE=%s\n' "$NOFILE" > /etc/systemd/system/memcached.service.d/90-imgbuild-limits.conf
echo "memcached role: -c $CONN, nofile $NOFILE"
