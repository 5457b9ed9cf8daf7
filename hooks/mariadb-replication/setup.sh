#!/bin/sh
# Role hook: mariadb-replication -- MariaDB primary/replica: a unique server-id per node, the binary
# log, a replication user made on the primary, the replica started from the primary's GTID position and
# read-only.
#
# Use in a recipe:
#   hooks:     {post-files: [{script: mariadb-replication/setup.sh}]}
#   templates: [{path: /etc/mysql/mariadb.conf.d/90-imgbuild-replication.cnf, source: mariadb-replication/replication.cnf.j2},
#               {path: /etc/imgbuild/replication.env, source: mariadb-replication/replication.env.j2}]
#   secrets:   {replication_password: {generate: 24, path: /etc/mysql/imgbuild-replication.secret, owner: mysql}}
#   packages:  mariadb-server
# Template variables (all optional):
#   replication_primary         index of the primary node (default 0)
#   replication_user            the replication user (default repl)
#   replication_password_file   where the secret is (default /etc/mysql/imgbuild-replication.secret)
#   replication_server_id_base  server-id of node 0 (default 1; node N gets base + N)
# The password is read from the secret file at boot, fed to mariadb on stdin: never on a command line, never
# logged. imgbuild-replication.service runs once per node (until it succeeded) after mariadb.service.
set -eu
cat > /usr/local/sbin/imgbuild-replication-setup <<'SCRIPT'
#!/bin/sh
# Make this node a replication primary or replica (imgbuild, hooks/mariadb-replication). Runs until it succeeded.
set -eu
. /etc/imgbuild/replication.env
umask 077
PW=$(cat "$PASSWORD_FILE")
sql_escape() { printf '%s' "$1" | sed "s/'/''/g"; }
PWQ=$(sql_escape "$PW")
if [ "$ROLE" = primary ]; then
    printf "CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s';\nGRANT REPLICATION SLAVE ON *.* TO '%s'@'%%';\n" \
        "$REPL_USER" "$PWQ" "$REPL_USER" | mariadb
    echo "replication: primary ready (user $REPL_USER)"
else
    cnf=$(mktemp)
    trap 'rm -f "$cnf"' EXIT
    printf '[client]\nuser=%s\npassword=%s\nhost=%s\n' "$REPL_USER" "$PW" "$PRIMARY" > "$cnf"
    n=0
    until mariadb --defaults-extra-file="$cnf" -e 'SELECT 1' >/dev/null 2>&1; do
        n=$((n + 1)); echo "replication: primary $PRIMARY not reachable yet (attempt $n)"; sleep 3
    done
    printf "STOP SLAVE;\nCHANGE MASTER TO MASTER_HOST='%s', MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos;\nSTART SLAVE;\n" \
        "$PRIMARY" "$REPL_USER" "$PWQ" | mariadb
    echo "replication: replica of $PRIMARY started (read-only)"
fi
mkdir -p /var/lib/imgbuild && touch /var/lib/imgbuild/replication-done
SCRIPT
chmod 700 /usr/local/sbin/imgbuild-replication-setup
cat > /etc/systemd/system/imgbuild-replication.service <<'UNIT'
[Unit]
Description=MariaDB replication: primary user or replica start (imgbuild mariadb-replication role)
After=mariadb.service network-online.target
Requires=mariadb.service
ConditionPathExists=!/var/lib/imgbuild/replication-done

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/imgbuild-replication-setup
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable mariadb.service imgbuild-replication.service >/dev/null 2>&1
echo "mariadb-replication role: installed imgbuild-replication.service"
