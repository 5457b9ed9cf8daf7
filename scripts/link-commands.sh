#!/bin/sh
# Put imgbuild and migrate on PATH: a symlink in $IMGBUILD_BINDIR (default /usr/local/bin) to this checkout's
# .venv/bin/COMMAND, made only where nothing is, or where an earlier setup's link (to some .venv/bin/COMMAND)
# is; anything else there is left alone and named. Called by scripts/setup.sh.
set -eu
cd "$(dirname "$0")/.."
bindir=${IMGBUILD_BINDIR:-/usr/local/bin}
for c in imgbuild migrate; do
    target="$PWD/.venv/bin/$c"
    dest="$bindir/$c"
    if [ -L "$dest" ]; then
        case "$(readlink "$dest")" in
            */.venv/bin/"$c") ;;
            *) echo "setup: $dest is a link to $(readlink "$dest"), not to imgbuild: left alone; run $target" \
                    "(or '. .venv/bin/activate' first)" >&2
               continue ;;
        esac
    elif [ -e "$dest" ]; then
        echo "setup: $dest exists and is not imgbuild's link: left alone; run $target (or '. .venv/bin/activate'" \
             "first)" >&2
        continue
    fi
    mkdir -p "$bindir"
    ln -sfn "$target" "$dest.imgbuild-tmp"
    mv -fT "$dest.imgbuild-tmp" "$dest"
    echo "setup: $dest -> $target"
done
