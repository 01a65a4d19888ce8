#!/usr/bin/env bash
# build.sh - assemble the janus guest images with nasm.
#
#   test-roms/build.sh           rebuild test-roms/*.bin and benches/guests/*.bin
#                                (and benches/guests/*.rom)
#   test-roms/build.sh --check   build into a temporary directory and compare
#                                byte for byte with the committed .bin and
#                                .rom files; exits 1 if any differ or are missing
#
# Every NAME.asm becomes NAME.bin next to it (nasm -f bin; the output depends
# only on the sources, so it is reproducible). Shared code comes from
# test-roms/include/ (and benches/guests/ for bench.inc). Each benchmark guest
# is also wrapped into a 64 KiB BIOS ROM, benches/guests/NAME.rom, by
# benches/guests/bios-rom.inc. Works from any directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
include="$here/include/"
guests="$root/benches/guests"
dirs=("$here" "$guests")

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

command -v nasm >/dev/null || { echo "build.sh: nasm not found (apt-get install nasm)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

status=0
count=0
for dir in "${dirs[@]}"; do
    [ -d "$dir" ] || continue
    for src in "$dir"/*.asm; do
        [ -e "$src" ] || continue
        name=$(basename "$src" .asm)
        out="$tmp/$name.bin"
        # -w+error: a warning (e.g. a truncated immediate) is a bug here.
        nasm -f bin -w+all -w+error -I "$include" -I "$guests/" -o "$out" "$src"
        outputs=("$name.bin")
        if [ "$dir" = "$guests" ]; then
            # The same image as a BIOS ROM (the path is passed as a string).
            nasm -f bin -w+all -w+error -DIMAGE="'$out'" -o "$tmp/$name.rom" "$guests/bios-rom.inc"
            outputs+=("$name.rom")
        fi
        for file in "${outputs[@]}"; do
            count=$((count + 1))
            dest="$dir/$file"
            rel=${dest#"$root"/}
            if [ "$check" = 1 ]; then
                if [ ! -e "$dest" ]; then
                    echo "missing: $rel"
                    status=1
                elif ! cmp -s "$tmp/$file" "$dest"; then
                    echo "differs: $rel"
                    status=1
                fi
            else
                cp "$tmp/$file" "$dest"
                echo "built $rel ($(wc -c < "$dest") bytes)"
            fi
            rm -f "$tmp/$file"
        done
    done
done

if [ "$check" = 1 ]; then
    if [ "$status" = 0 ]; then
        echo "all $count images match their sources"
    else
        echo "some images are stale: run test-roms/build.sh" >&2
    fi
fi
exit "$status"
