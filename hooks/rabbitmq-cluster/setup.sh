#!/bin/sh
# Role hook: rabbitmq-cluster -- a RabbitMQ cluster: one erlang cookie on every node (owner rabbitmq,
# mode 0400), the other nodes join the first, an HA policy on the first.
#
# Use in a recipe:
#   hooks:     {post-files: [{script: rabbitmq-cluster/setup.sh}]}
#   templates: [{path: /etc/imgbuild/rabbitmq-cluster.env, source: rabbitmq-cluster/cluster.env.j2}]
#   secrets:   {erlang_cookie: {generate: 32, path: /var/lib/rabbitmq/.erlang.cookie, owner: rabbitmq,
#                               group: rabbitmq, mode: "0400"}}
#   packages:  rabbitmq-server
# Nodes are rabbit@NAME: the recipe's nodes must resolve by name, which the /etc/hosts block imgbuild writes
# for every cluster does. Template variables (all optional):
#   rabbitmq_first_node          index of the node the others join (default 0)
#   rabbitmq_policy_name         (default ha-all)
#   rabbitmq_policy_pattern      queues it applies to (default .*)
#   rabbitmq_policy_definition   (default {"ha-mode":"all","ha-sync-mode":"automatic"}; for quorum queues
#                                 use a queue-type argument on the clients instead)
set -eu
cat > /usr/local/sbin/imgbuild-rabbitmq-cluster <<'SCRIPT'
#!/bin/sh
# Join this node to the cluster, or set the policy on the first node (imgbuild, hooks/rabbitmq-cluster).
set -eu
. /etc/imgbuild/rabbitmq-cluster.env
rabbitmqctl await_startup --timeout 120
if [ "$ROLE" = first ]; then
    rabbitmqctl set_policy "$POLICY_NAME" "$POLICY_PATTERN" "$POLICY_DEFINITION"
    echo "rabbitmq: policy $POLICY_NAME set"
else
    n=0
    until rabbitmqctl -n "$FIRST" await_startup --timeout 10 >/dev/null 2>&1; do
        n=$((n + 1)); echo "rabbitmq: $FIRST not up yet (attempt $n)"; sleep 3
    done
    rabbitmqctl stop_app
    rabbitmqctl join_cluster "$FIRST"
    rabbitmqctl start_app
    echo "rabbitmq: joined $FIRST"
fi
mkdir -p /var/lib/imgbuild && touch /var/lib/imgbuild/rabbitmq-cluster-done
SCRIPT
chmod 755 /usr/local/sbin/imgbuild-rabbitmq-cluster
cat > /etc/systemd/system/imgbuild-rabbitmq-cluster.service <<'UNIT'
[Unit]
Description=Join the RabbitMQ cluster / set its policy (imgbuild rabbitmq-cluster role)
After=rabbitmq-server.service network-online.target
Requires=rabbitmq-server.service
ConditionPathExists=!/var/lib/imgbuild/rabbitmq-cluster-done

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/imgbuild-rabbitmq-cluster
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable rabbitmq-server.service imgbuild-rabbitmq-cluster.service >/dev/null 2>&1
# a node must start with no mnesia database of the build's host name
rm -rf /var/lib/rabbitmq/mnesia/*
echo "rabbitmq-cluster role: installed imgbuild-rabbitmq-cluster.service"
