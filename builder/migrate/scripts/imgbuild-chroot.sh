#!/bin/sh
# imgbuild-chroot: run the OS installed in ROOT (below) inside a chroot of this host.
#   imgbuild-chroot start    bind the host's BINDS into it, `mount -a` inside, start its services
#   imgbuild-chroot stop     stop its services and every process left in it, undo its mounts
#   imgbuild-chroot status   what is mounted and running (exit 0 running, 3 stopped)
# Written by `migrate chroot-install`. Run it by hand first (`migrate chroot-start`): if anything goes wrong, a
# reboot brings the host back as it was. Only `migrate chroot-enable` starts it at boot.
# start and stop are idempotent: a second start mounts nothing twice and starts nothing twice.
ROOT=@ROOT@
BINDS=@BINDS@
SERVICES=@SERVICES@
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { echo "imgbuild-chroot: $*" >&2; }

# ROOT must still be the directory it was when this was written: not /, not reached through a symlink now
# (stop ends every process whose root is ROOT: with / that would be every process of the host)
real=$(readlink -f "$ROOT" 2>/dev/null)
if [ -z "$real" ] || [ "$real" = / ] || [ "$real" != "$ROOT" ] || [ ! -d "$ROOT" ]; then
    say "$ROOT resolves to '${real:-nothing}' now, not to itself: refusing to touch it"
    exit 1
fi

mounted() { P="$1" awk 'BEGIN { p = ENVIRON["P"] } $2 == p { f = 1 } END { exit !f }' /proc/mounts; }

# pids of the processes whose root directory is ROOT (our own script's root is the host's)
procs() {
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && echo "${p#/proc/}"
    done
}

# mounts below ROOT, deepest first
mounts_below() { R="$ROOT" awk 'BEGIN { r = ENVIRON["R"] } index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r; }

# where the host's directory $1 is bound inside ROOT, resolved; made if missing. A symlink of the tree may lead
# elsewhere inside ROOT (a merged-usr tree's lib -> usr/lib), never out of it (an absolute /dev link would
# otherwise mount over the host's own /dev): that is refused.
target() {
    t=$ROOT
    rest=${1#/}
    while [ -n "$rest" ]; do
        c=${rest%%/*}
        case "$rest" in */*) rest=${rest#*/} ;; *) rest= ;; esac
        t=$t/$c
        if [ -e "$t" ] || [ -L "$t" ]; then
            t=$(readlink -f "$t") || return 1
            case "$t" in
                "$ROOT"/*) ;;
                *) say "$ROOT$1 leads out of $ROOT (to $t): not mounted"; return 1 ;;
            esac
        else
            mkdir "$t" || return 1
        fi
    done
    [ -d "$t" ] || { say "$t is not a directory: not mounted"; return 1; }
    case "$t" in *[[:space:]]*) say "$t: a name with a space: not mounted"; return 1 ;; esac
    echo "$t"
}

start() {
    [ -d "$ROOT/etc" ] || { say "$ROOT is not an OS tree"; exit 1; }
    # every target first: a tree that would lead one out of ROOT gets no mount at all
    pairs=
    for b in $BINDS; do
        [ -e "$b" ] || continue
        t=$(target "$b") || exit 1
        pairs="$pairs $b=$t"
    done
    for p in $pairs; do
        b=${p%%=*} t=${p#*=}
        mounted "$t" || mount --bind "$b" "$t" || { say "cannot bind $b to $t"; exit 1; }
    done
    if grep -qsv '^[[:space:]]*\(#\|$\)' "$ROOT/etc/fstab"; then
        chroot "$ROOT" mount -a || say "mount -a inside $ROOT failed (continuing)"
    fi
    out=$(mktemp)
    for s in $SERVICES; do
        if [ -x "$ROOT/etc/init.d/$s" ]; then
            # the services' own output goes to a file: a daemon keeping it open must not hold the caller's ssh
            chroot "$ROOT" /etc/init.d/"$s" start </dev/null >"$out" 2>&1 || say "$s did not start"
            cat "$out"
        else
            say "no /etc/init.d/$s in $ROOT: not started"
        fi
    done
    rm -f "$out"
}

stop() {
    rev=
    for s in $SERVICES; do rev="$s $rev"; done
    for s in $rev; do
        [ -x "$ROOT/etc/init.d/$s" ] && chroot "$ROOT" /etc/init.d/"$s" stop </dev/null >/dev/null 2>&1
    done
    for sig in TERM TERM KILL; do
        pids=$(procs)
        [ -n "$pids" ] || break
        kill -"$sig" $pids 2>/dev/null
        sleep 1
    done
    [ -z "$(procs)" ] || say "processes still running in $ROOT: $(procs | tr '\n' ' ')"
    for m in $(mounts_below); do
        umount "$m" 2>/dev/null || umount -l "$m" || say "cannot unmount $m"
    done
}

status() {
    m=$(mounts_below | sort | tr '\n' ' ')
    p=$(procs | tr '\n' ' ')
    echo "mounts: ${m:-none}"
    echo "processes: ${p:-none}"
    [ -n "$p" ]
    return $(( $? ? 3 : 0 ))
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
