#!/usr/bin/env bash
# fetch-assets.sh - fetch the Linux kernel and initramfs that janus's Linux boot tests use.
#
#   tests/linux/fetch-assets.sh           fetch or build whatever is missing
#   tests/linux/fetch-assets.sh --force   fetch and build everything again
#
# Everything goes into tests/linux/assets/ (git-ignored); nothing is committed:
#   vmlinuz              Debian's current amd64 kernel (a bzImage): the package that
#                        linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64
#   vmlinux              the same kernel uncompressed (an ELF64 with the PVH note when the
#                        kernel has CONFIG_PVH), found and decompressed as the kernel's
#                        scripts/extract-vmlinux does
#   config               the kernel's build configuration
#   busybox              busybox-static's binary
#   initramfs.cpio.gz    a newc cpio (gzip) whose /init (a busybox sh script) prints
#                          JANUS-INIT-OK
#                          JANUS-CPUS=<number of online CPUs>
#                          JANUS-KERNEL=<uname -r>
#                        and then reboots (reboot -f); with `janus.shell` on the kernel
#                        command line it prints JANUS-SHELL and runs an interactive shell
#                        on the console first, powering off when the shell ends. With
#                        `janus.virtio` (or root=/dev/vd*) it first loads the modules and
#                        reports JANUS-PCI=, JANUS-VIRTIO=, JANUS-BLOCK= (and writes
#                        JANUS-HVC0-SAYS-HELLO to hvc0 when it exists); `janus.disk` mounts
#                        /dev/vda and prints JANUS-DISK=<hello.txt>, `janus.write` then
#                        writes written.txt and syncs (JANUS-WRITE-OK), `janus.rng` reads
#                        /dev/hwrng (JANUS-RNG=<rng_current> JANUS-HWRNG=<bytes>),
#                        `janus.poweroff` powers off instead of rebooting; with
#                        root=/dev/vdX it mounts that and switch_roots to its /sbin/init
#   VERSION              package name, package version and kernel release
#   modules/             the kernel's virtio, ext4 and entropy modules with what they depend on
#                        (from the same package; Debian builds them as modules), and
#                        modules/order, their names in load order (a module after its
#                        dependencies), for the initramfs
#   disk.img             an 8 MiB ext4 image (mke2fs -d, no root needed) holding hello.txt
#                        ("JANUS-DISK-HELLO") and a busybox root whose /sbin/init prints
#                        JANUS-ROOT-OK and the root mount, then powers off
#
# Needs Debian's package servers (apt-get update, apt-get download), dpkg-deb, gzip, mke2fs and the
# kernel's decompressor (xz or zstd for Debian; installed with apt-get when missing and run
# as root). The initramfs is written by this script itself (no cpio tool, no mknod, no root)
# with fixed inode numbers and times, so it is the same bytes on every run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
assets="$here/assets"
force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,41p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

say() { echo "fetch-assets: $*"; }
die() { echo "fetch-assets: $*" >&2; exit 1; }

mkdir -p "$assets"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download run as root hands the download to the _apt user, which must be able to
# write here.
chmod 755 "$tmp"
mkdir -m 777 "$tmp/dl"

need() { [ "$force" = 1 ] || [ ! -s "$assets/$1" ]; }

apt_updated=0
apt_update() {
    [ "$apt_updated" = 1 ] && return
    apt_updated=1
    if [ "$(id -u)" = 0 ]; then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed (are Debian's package servers reachable?)"
    else
        say "not root: using the package lists as they are (no apt-get update)"
    fi
}

# download PACKAGE: fetch PACKAGE's .deb into $tmp/dl and unpack it into $tmp/PACKAGE.
download() {
    local pkg=$1
    apt_update
    (cd "$tmp/dl" && apt-get download -qq "$pkg" 2>&1 | grep -v 'unsandboxed' || true)
    local deb
    deb=$(ls "$tmp/dl/${pkg}_"*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || die "apt-get download $pkg failed"
    say "downloaded $(basename "$deb") ($(stat -c %s "$deb") bytes)"
    dpkg-deb -x "$deb" "$tmp/$pkg"
}

# ensure_tool TOOL PACKAGE: install PACKAGE when TOOL is missing (as root).
ensure_tool() {
    command -v "$1" >/dev/null && return
    [ "$(id -u)" = 0 ] || die "$1 is missing; install $2"
    apt_update
    say "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

#--- the kernel -------------------------------------------------------------------------------
if need vmlinuz || need config || need VERSION; then
    apt_update
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [ -n "$pkg" ] || die "cannot tell which kernel package linux-image-amd64 depends on"
    say "linux-image-amd64 -> $pkg"
    download "$pkg"
    image=$(ls "$tmp/$pkg"/boot/vmlinuz-* | head -n1)
    release=${image##*/vmlinuz-}
    cp "$image" "$assets/vmlinuz"
    cp "$tmp/$pkg/boot/config-$release" "$assets/config"
    version=$(dpkg-deb -f "$(ls "$tmp/dl/${pkg}_"*.deb)" Version)
    echo "$pkg $version $release" > "$assets/VERSION"
    rm -f "$assets/vmlinux" # it must match the new vmlinuz
else
    say "vmlinuz, config, VERSION: already there"
fi

#--- kernel modules ---------------------------------------------------------------------------
# The modules the virtio tests need, and what they depend on (each module's .modinfo
# "depends=" list, as depmod reads it: the package has no modules.dep), in load order.
wanted_modules="virtio_pci virtio_mmio virtio_blk virtio_console virtio_rng virtio_net ext4 crc32c_generic"
read -r pkg _ release < "$assets/VERSION"
if need modules/order || [ "$(cat "$assets/modules/release" 2>/dev/null)" != "$release" ]; then
    [ -d "$tmp/$pkg" ] || download "$pkg"
    kdir="$tmp/$pkg/lib/modules/$release/kernel"
    [ -d "$kdir" ] || die "no modules in $pkg"
    rm -rf "$assets/modules"
    mkdir -p "$assets/modules"
    declare -A seen=()
    order=()
    modpath() { find "$kdir" \( -name "$1.ko" -o -name "${1//_/-}.ko" \) | head -n1; }
    add_module() {
        local m=${1//-/_} f dep
        [ -n "${seen[$m]:-}" ] && return
        seen[$m]=1
        f=$(modpath "$m")
        [ -n "$f" ] || die "module $m is not in $pkg (built in? check assets/config)"
        for dep in $(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | tr ',' ' '); do
            add_module "$dep"
        done
        cp "$f" "$assets/modules/$m.ko"
        order+=("$m")
    }
    for m in $wanted_modules; do add_module "$m"; done
    printf '%s\n' "${order[@]}" > "$assets/modules/order"
    echo "$release" > "$assets/modules/release"
    say "modules: ${order[*]}"
else
    say "modules: already there"
fi

#--- vmlinux: the kernel's scripts/extract-vmlinux -------------------------------------------
# Each compressor's magic bytes (as a grep -P pattern), the package and the command that
# decompresses from there to the end of the file.
decompressors=(
    '\x1f\x8b\x08'          gzip        'gzip -dc'
    '\xfd7zXZ\x00'          xz-utils    'xz -dc'
    '\x28\xb5\x2f\xfd'      zstd        'zstd -dcq'
    'BZh'                   bzip2       'bzip2 -dc'
    '\x5d\x00\x00\x00'      xz-utils    'lzma -dc'
    '\x89\x4c\x5a'          lzop        'lzop -dc'
    '\x02\x21\x4c\x18'      lz4         'lz4 -dcq'
)
is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

if need vmlinux; then
    found=0
    for ((i = 0; i < ${#decompressors[@]} && !found; i += 3)); do
        magic=${decompressors[i]} package=${decompressors[i+1]} cmd=${decompressors[i+2]}
        offsets=$(LC_ALL=C grep -obUaP "$magic" "$assets/vmlinuz" | cut -d: -f1 || true)
        [ -n "$offsets" ] || continue
        ensure_tool "${cmd%% *}" "$package"
        for off in $offsets; do
            # Trailing data after the stream makes the tools complain; the output is checked.
            tail -c "+$((off + 1))" "$assets/vmlinuz" | $cmd > "$tmp/vmlinux" 2>/dev/null || true
            if [ -s "$tmp/vmlinux" ] && is_elf "$tmp/vmlinux"; then
                say "vmlinux: ${cmd%% *} stream at offset $off of vmlinuz"
                mv "$tmp/vmlinux" "$assets/vmlinux"
                found=1
                break
            fi
        done
    done
    [ "$found" = 1 ] || die "no compressed ELF found in vmlinuz"
else
    say "vmlinux: already there"
fi

#--- busybox ----------------------------------------------------------------------------------
if need busybox; then
    download busybox-static
    cp "$tmp/busybox-static/bin/busybox" "$assets/busybox"
    chmod 755 "$assets/busybox"
else
    say "busybox: already there"
fi

#--- the initramfs ----------------------------------------------------------------------------
# cpio "newc": a 110-byte ASCII header (magic 070701 and 13 hex fields), the name with its
# NUL padded to 4 bytes, the data padded to 4 bytes; the archive ends with TRAILER!!!.
ino=0
pad4() { head -c $(((4 - $1 % 4) % 4)) /dev/zero; }
# cpio_entry NAME MODE SIZE RDEVMAJOR RDEVMINOR [DATA-FILE]
cpio_entry() {
    local name=$1 mode=$2 size=$3 rmajor=$4 rminor=$5 data=${6:-}
    local namesize=$((${#name} + 1))
    ino=$((ino + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$ino" "$mode" 0 0 1 0 "$size" 0 0 "$rmajor" "$rminor" "$namesize" 0
    printf '%s\0' "$name"
    pad4 $((110 + namesize))
    if [ -n "$data" ]; then cat "$data"; fi
    pad4 "$size"
}
cpio_dir() { cpio_entry "$1" $((8#040755)) 0 0 0; }
cpio_file() { cpio_entry "$1" $((8#100755)) "$(stat -c %s "$2")" 0 0 "$2"; }
cpio_symlink() {
    printf '%s' "$2" > "$tmp/link"
    cpio_entry "$1" $((8#120777)) ${#2} 0 0 "$tmp/link"
}
cpio_chardev() { cpio_entry "$1" $((8#020600)) 0 "$2" "$3"; }

cat > "$tmp/init" <<'EOF'
#!/bin/sh
# janus Linux boot test: say that init runs, how many CPUs are online and which kernel this
# is, then reboot.
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
echo JANUS-INIT-OK
cpus=0
online=$(busybox cat /sys/devices/system/cpu/online 2>/dev/null)
IFS=,
for range in $online; do
    case $range in
        *-*) cpus=$((cpus + ${range#*-} - ${range%-*} + 1)) ;;
        ?*) cpus=$((cpus + 1)) ;;
    esac
done
unset IFS
[ "$cpus" -gt 0 ] || cpus=$(busybox nproc)
echo "JANUS-CPUS=$cpus"
echo "JANUS-KERNEL=$(busybox uname -r)"
# With janus.shell on the command line: an interactive shell on the console (the console
# tests type into it), which powers off when it ends. setsid and cttyhack give it the serial
# port as its controlling terminal, so that Ctrl-C interrupts its foreground program.
case " $(busybox cat /proc/cmdline) " in
    *" janus.shell "*)
        echo JANUS-SHELL
        busybox setsid busybox cttyhack busybox sh
        busybox poweroff -f
        ;;
esac
cmdline=" $(busybox cat /proc/cmdline) "
has() { case "$cmdline" in *" $1 "*) return 0 ;; esac; return 1; }
root=
case "$cmdline" in *" root=/dev/vd"*) root=${cmdline##* root=}; root=${root%% *} ;; esac
if has janus.virtio || [ -n "$root" ]; then
    busybox mount -t devtmpfs devtmpfs /dev
    # insmod does not read module parameters from the command line as modprobe does.
    for m in $(busybox cat /lib/modules/order); do
        args=
        for w in $cmdline; do
            case $w in "$m".*=*) args="$args ${w#"$m".}" ;; esac
        done
        busybox insmod "/lib/modules/$m.ko" $args 2>/dev/null
    done
    busybox sleep 1
    echo "JANUS-PCI=$(busybox ls /sys/bus/pci/devices | busybox wc -l)"
    echo "JANUS-VIRTIO=$(busybox cat /sys/bus/virtio/devices/*/device 2>/dev/null | busybox tr '\n' ' ')"
    echo "JANUS-BLOCK=$(busybox ls /sys/block | busybox grep vd | busybox tr '\n' ' ')"
    [ -e /dev/hvc0 ] && echo "JANUS-HVC0-SAYS-HELLO" > /dev/hvc0
fi
if [ -n "$root" ]; then
    busybox mount -t ext4 "$root" /newroot && exec busybox switch_root /newroot /sbin/init
    echo "JANUS-ROOT-FAILED"
fi
if has janus.disk; then
    busybox mount -t ext4 /dev/vda /mnt
    echo "JANUS-DISK=$(busybox cat /mnt/hello.txt)"
    if has janus.write; then
        echo "JANUS-WROTE-THIS" > /mnt/written.txt
        busybox sync
        busybox umount /mnt && echo JANUS-WRITE-OK
    fi
fi
if has janus.rng; then
    echo "JANUS-RNG=$(busybox cat /sys/class/misc/hw_random/rng_current)"
    echo "JANUS-HWRNG=$(busybox dd if=/dev/hwrng bs=16 count=1 2>/dev/null | busybox od -An -tx1 | busybox tr -d ' \n')"
fi
has janus.poweroff && busybox poweroff -f
busybox reboot -f
busybox poweroff -f
while :; do busybox sleep 1; done
EOF
# The initramfs is rebuilt when its /init or its modules changed (assets/init keeps the one
# it holds).
if need initramfs.cpio.gz || ! cmp -s "$tmp/init" "$assets/init" \
    || [ "$assets/modules/order" -nt "$assets/initramfs.cpio.gz" ]; then
    {
        cpio_dir .
        cpio_dir bin
        cpio_dir dev
        cpio_dir proc
        cpio_dir sys
        cpio_dir mnt
        cpio_dir newroot
        cpio_dir lib
        cpio_dir lib/modules
        cpio_file lib/modules/order "$assets/modules/order"
        while read -r m; do
            cpio_file "lib/modules/$m.ko" "$assets/modules/$m.ko"
        done < "$assets/modules/order"
        cpio_chardev dev/console 5 1
        cpio_chardev dev/ttyS0 4 64
        cpio_file bin/busybox "$assets/busybox"
        cpio_symlink bin/sh busybox
        cpio_file init "$tmp/init"
        cpio_entry TRAILER!!! 0 0 0 0
    } > "$tmp/initramfs.cpio"
    gzip -9 -n < "$tmp/initramfs.cpio" > "$assets/initramfs.cpio.gz"
    cp "$tmp/init" "$assets/init"
    say "built initramfs.cpio.gz"
else
    say "initramfs.cpio.gz: already there"
fi

#--- the ext4 disk image -----------------------------------------------------------------------
if need disk.img || [ "$assets/busybox" -nt "$assets/disk.img" ]; then
    ensure_tool mke2fs e2fsprogs
    droot="$tmp/diskroot"
    mkdir -p "$droot/bin" "$droot/sbin" "$droot/dev" "$droot/proc" "$droot/sys" "$droot/tmp"
    cp "$assets/busybox" "$droot/bin/busybox"
    ln -s busybox "$droot/bin/sh"
    echo "JANUS-DISK-HELLO" > "$droot/hello.txt"
    cat > "$droot/sbin/init" <<'EOF'
#!/bin/sh
# janus root-disk test: say so, show what / is, power off.
export PATH=/bin
busybox mount -t proc proc /proc
echo JANUS-ROOT-OK
echo "JANUS-ROOT-MOUNT=$(busybox awk '$2 == "/" { print $1, $3 }' /proc/mounts)"
echo "JANUS-ROOT-HELLO=$(busybox cat /hello.txt)"
busybox poweroff -f
while :; do busybox sleep 1; done
EOF
    chmod 755 "$droot/sbin/init"
    rm -f "$assets/disk.img"
    E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext4 -L janus \
        -U 4a616e75-7300-4000-8000-000000000001 -E root_owner=0:0 -d "$droot" \
        "$assets/disk.img" 8M
    say "built disk.img"
else
    say "disk.img: already there"
fi

#--- report -----------------------------------------------------------------------------------
read -r pkg version release < "$assets/VERSION"
say "kernel $release (package $pkg $version)"
for f in vmlinuz vmlinux config busybox initramfs.cpio.gz disk.img; do
    printf 'fetch-assets:   %-18s %10d bytes\n' "$f" "$(stat -c %s "$assets/$f")"
done
if grep -q '^CONFIG_PVH=y' "$assets/config"; then
    say "CONFIG_PVH=y: vmlinux has the Xen PVH entry note"
else
    say "CONFIG_PVH is not set: vmlinux has no PVH entry note"
fi
