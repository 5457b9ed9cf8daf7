#!/bin/sh
# Role hook: galera, EL6 (sysvinit/upstart) variant -- a Percona XtraDB Cluster node on CentOS 6.
#
# Use in a recipe (see recipes/galera-centos6.yml):
#   hooks:     {post-files: [{script: galera/setup-el6.sh}]}
#   templates: [{path: /etc/my.cnf, source: galera/my.cnf.el.j2},
#               {path: /etc/imgbuild/galera-role, source: galera/role.j2}]
#   packages:  Percona-XtraDB-Cluster-server-56 Percona-XtraDB-Cluster-client-56 rsync (from Percona's
#              repository: bootstrap.extra_repos)
# Template variables: galera_cluster_name, galera_sst_method (rsync), galera_provider, galera_slave_threads (2),
# galera_bootstrap_node (0).
# At boot, /etc/init.d/imgbuild-galera starts MySQL: the bootstrap node the first time with an empty cluster
# address (--wsrep-cluster-address=gcomm://, the usual way of starting a new cluster), afterwards and on the
# other nodes as a plain start, retried until a primary component answers. The package's own mysql service is
# switched off: this one decides how it starts.
set -eu
cat > /etc/init.d/imgbuild-galera <<'SCRIPT'
#!/bin/sh
# chkconfig: 345 64 36
# description: Start this Percona XtraDB Cluster node: bootstrap or join (imgbuild galera role)
case "${1:-}" in
start)
    role=$(cat /etc/imgbuild/galera-role 2>/dev/null || echo join)
    mark=/var/lib/imgbuild/galera-bootstrapped
    if [ "$role" = bootstrap ] && [ ! -e "$mark" ]; then
        /etc/init.d/mysql start --wsrep-cluster-address=gcomm:// && mkdir -p /var/lib/imgbuild && touch "$mark"
        exit $?
    fi
    n=0
    until /etc/init.d/mysql start; do
        n=$((n + 1)); echo "galera: no primary component reachable yet (attempt $n); retrying"; sleep 3
    done ;;
stop) /etc/init.d/mysql stop ;;
status) /etc/init.d/mysql status ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
SCRIPT
chmod 755 /etc/init.d/imgbuild-galera
chkconfig mysql off 2>/dev/null || true
chkconfig --add imgbuild-galera
chkconfig imgbuild-galera on
echo "galera role (EL6): installed /etc/init.d/imgbuild-galera (mysql started by it)"
