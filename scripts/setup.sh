#!/bin/sh
# Install everything imgbuild and its test suite need, on Debian 12, as root. Safe to run again.
#   system packages (apt-get), then a virtualenv in .venv with imgbuild installed from this checkout.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="
  python3 python3-venv python3-pip ca-certificates openssl gpgv debian-archive-keyring
  debootstrap mmdebstrap lxc bridge-utils iproute2 systemd-container uidmap
  rpm createrepo-c dnf cpio busybox-static
  xen-utils-4.17 xen-tools
  qemu-system-x86 qemu-utils e2fsprogs fdisk mtools dosfstools ovmf libvirt-clients libxml2-utils
  lvm2
  openssh-server openssh-client rsync acl attr kmod ansible-core
  tar zstd xz-utils pigz gzip gnupg
  squashfs-tools squashfs-tools-ng lxd
  xorriso cloud-init
"

if [ "$(id -u)" != 0 ]; then
    echo "error: scripts/setup.sh installs system packages and must run as root" >&2
    exit 2
fi

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Services that come with the packages (sshd, lxc-net ...) are not started: tests start their own.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    case " $missing " in *" cloud-init "*)
        # cloud-init is here for the tests' schema checks of NoCloud seeds, never to configure this host: it
        # stays off at every boot (a host that already had cloud-init is left as it was)
        mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled ;;
    esac
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# the bytecode of imgbuild's own modules, as a non-editable pip install writes it: every command starts ~0.2 s
# sooner, also where PYTHONDONTWRITEBYTECODE keeps Python from writing it on first use
.venv/bin/python -m compileall -q -j 0 builder >/dev/null
./scripts/link-commands.sh          # imgbuild and migrate on PATH (/usr/local/bin), as the README's commands say
echo "setup: ok ($(.venv/bin/imgbuild --version))"
