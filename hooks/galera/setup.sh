#!/bin/sh
# Role hook: galera -- a MariaDB Galera cluster node (Debian: mariadb-server + galera-4; on CentOS 6, Percona
# XtraDB Cluster on CentOS 6: the same wsrep settings work there, see docs/clusters.md).
#
# Use in a recipe (post-files), with its two templates:
#   hooks:     {post-files: [{script: galera/setup.sh}]}
#   templates: [{path: /etc/mysql/mariadb.conf.d/60-imgbuild-galera.cnf, source: galera/galera.cnf.j2},
#               {path: /etc/imgbuild/galera-role, source: galera/role.j2}]
#   packages:  mariadb-server galera-4 rsync (and iproute2: the rsync SST checks ports with ss)
# Template variables (recipe or node vars, all optional):
#   galera_cluster_name    wsrep_cluster_name (default: the recipe's name)
#   galera_sst_method      rsync (default), mariabackup ...
#   galera_provider        path of libgalera_smm.so
#   galera_bootstrap_node  index of the node that starts the cluster (default 0: the first node)
# Every node's wsrep_cluster_address lists all nodes; wsrep_node_name/address are the node's own.
#
# At boot, imgbuild-galera.service starts MariaDB: on the bootstrap node the first time with
# galera_new_cluster (--wsrep-new-cluster), afterwards and on the other nodes as a plain start, retried until
# a primary component is reachable. mariadb.service itself is not enabled: the role decides how it starts.
set -eu
cat > /usr/local/sbin/imgbuild-galera-start <<'SCRIPT'
#!/bin/sh
# Start this Galera node (written by imgbuild's galera role hook).
role=$(cat /etc/imgbuild/galera-role 2>/dev/null || echo join)
mark=/var/lib/imgbuild/galera-bootstrapped
if [ "$role" = bootstrap ] && [ ! -e "$mark" ]; then
    echo "galera: starting a new cluster on this node"
    galera_new_cluster
    mkdir -p /var/lib/imgbuild && touch "$mark"
    exit 0
fi
n=0
until systemctl start mariadb; do
    n=$((n + 1))
    echo "galera: no primary component reachable yet (attempt $n); retrying"
    sleep 3
done
SCRIPT
chmod 755 /usr/local/sbin/imgbuild-galera-start
cat > /etc/systemd/system/imgbuild-galera.service <<'UNIT'
[Unit]
Description=Start this MariaDB Galera node (bootstrap or join; imgbuild galera role)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/imgbuild-galera-start
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
systemctl disable mariadb.service >/dev/null 2>&1 || true
# Debian's socket activation holds port 3306 itself, and Galera's recovery step (mysqld --wsrep-recover, run
# before every start) then cannot bind it: a Galera node starts mariadb.service directly.
for s in mariadb.socket mariadb-extra.socket; do
    [ -e "/lib/systemd/system/$s" ] && systemctl mask "$s" >/dev/null 2>&1
done
systemctl enable imgbuild-galera.service >/dev/null 2>&1
# the package's own sample section would be read after ours with the same keys commented out: leave it, but
# make sure nothing else turns wsrep off
echo "galera role: installed imgbuild-galera.service (mariadb.service started by it)"
