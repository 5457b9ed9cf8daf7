#!/bin/sh
# chroot-escape [COMMAND [ARG...]]: run COMMAND (default: a login shell) in this host's real root, from inside
# the chroot that imgbuild-chroot started. It enters the root of the host's init (pid 1), which /proc shows as
# /proc/1/root; `exit` comes back. Written by `migrate chroot-install`.
if [ ! -d /proc/1/root/ ]; then
    echo "chroot-escape: /proc is not mounted in this chroot (start it with imgbuild-chroot start)" >&2
    exit 1
fi
[ $# -gt 0 ] || set -- /bin/sh -l
exec chroot /proc/1/root "$@"
