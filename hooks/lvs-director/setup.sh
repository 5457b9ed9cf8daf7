#!/bin/sh
# Role hook: lvs-director -- an LVS director in front of real servers: ip_forward, the virtual IP,
# ipvsadm rules (NAT, the chosen scheduler) in the format ipvsadm-restore reads, and an ldirectord.cf with the
# real servers and an HTTP health check. Every node of the cluster gets the same image; a node's var
# `lvs_role` (director or real) decides what it runs. A real server serves /var/www/index.html ("ok NODE", the
# health check's answer) with busybox httpd on the service port.
#
# Use in a recipe:
#   hooks:     {post-files: [{script: lvs-director/setup.sh}]}
#   templates: [{path: /etc/ipvsadm.rules, source: lvs-director/ipvsadm.rules.j2},
#               {path: /etc/ldirectord.cf, source: lvs-director/ldirectord.cf.j2},
#               {path: /etc/imgbuild/lvs.env, source: lvs-director/lvs.env.j2}]
#   packages:  ipvsadm ldirectord busybox
# Template variables:
#   lvs_vip            the virtual IP (required)
#   lvs_vip_prefix     its prefix length (default 24)      lvs_vip_dev   its interface (default eth0)
#   lvs_port           the service port (default 80)       lvs_real_port the real servers' port (default lvs_port)
#   lvs_scheduler      rr (default), wrr, lc, wlc, sh, dh ...
#   lvs_forwarding     nat (default; the real servers' gateway must be the director), dr, tun
#   lvs_real_servers   list of real server IPs (default: every node with lvs_role: real)
#   lvs_check_request / lvs_check_receive   the health check (default index.html / ok)
# The kernel must have IPVS (ip_vs) for the rules to load: without it the director boots, logs that, and
# leaves ldirectord stopped (ConditionPathExists=/proc/net/ip_vs).
set -eu
cat > /usr/local/sbin/imgbuild-lvs <<'SCRIPT'
#!/bin/sh
# Bring up this LVS node (imgbuild, hooks/lvs-director).
set -eu
. /etc/imgbuild/lvs.env
if [ "$ROLE" = director ]; then
    touch /run/imgbuild-lvs-director
    echo 1 > /proc/sys/net/ipv4/ip_forward
    ip addr show dev "$VIP_DEV" | grep -q " $VIP/" || ip addr add "$VIP/$VIP_PREFIX" dev "$VIP_DEV"
    if [ -e /proc/net/ip_vs ]; then
        ipvsadm-restore < /etc/ipvsadm.rules
        echo "lvs: director: VIP $VIP, rules loaded"
    else
        echo "lvs: director: VIP $VIP; this kernel has no IPVS (no /proc/net/ip_vs): rules not loaded"
    fi
else
    mkdir -p /var/www
    echo "ok $NODE" > /var/www/index.html
    echo "lvs: real server $NODE"
fi
SCRIPT
chmod 755 /usr/local/sbin/imgbuild-lvs
cat > /etc/systemd/system/imgbuild-lvs.service <<'UNIT'
[Unit]
Description=LVS director or real server setup (imgbuild lvs-director role)
After=network-online.target
Wants=network-online.target
Before=ldirectord.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/imgbuild-lvs

[Install]
WantedBy=multi-user.target
UNIT
cat > /etc/systemd/system/imgbuild-lvs-web.service <<'UNIT'
[Unit]
Description=Real server's web page for the LVS health check (imgbuild lvs-director role)
After=imgbuild-lvs.service
ConditionPathExists=/var/www/index.html

[Service]
ExecStart=/bin/busybox httpd -f -p 80 -h /var/www

[Install]
WantedBy=multi-user.target
UNIT
mkdir -p /etc/systemd/system/ldirectord.service.d
printf '[Unit]\n# imgbuild: only where the kernel has IPVS, and only on the director\nConditionPathExists=/proc/net/ip_vs\nConditionPathExists=/run/imgbuild-lvs-director\n' \
    > /etc/systemd/system/ldirectord.service.d/imgbuild.conf
echo 'net.ipv4.ip_forward = 1' > /etc/sysctl.d/90-imgbuild-lvs.conf
systemctl enable imgbuild-lvs.service imgbuild-lvs-web.service >/dev/null 2>&1
echo "lvs-director role: installed imgbuild-lvs.service"
