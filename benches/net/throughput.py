#!/usr/bin/env python3
"""Guest-to-host TCP throughput of one VM run: boots the test initramfs's shell
(`janus.shell`), loads virtio-net, configures eth0 (DHCP on user networking, a static address
on TAP), then runs `dd if=/dev/zero bs=64k count=N | nc HOST PORT` in the guest N times while a
sink on the host counts the bytes. Prints one line per run: `MBPS <megabytes per second>`, from
the sink's first byte to its last.

  throughput.py --mode user|tap --mib N --runs R -- VM-COMMAND...

With --mode tap this must already run in a network namespace that has jtap0 at 10.9.0.1/24
(benches/net-throughput.sh makes it). Needs the assets of tests/linux/fetch-assets.sh.
"""
import argparse, os, select, socket, subprocess, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--mode", choices=["user", "tap"], required=True)
ap.add_argument("--mib", type=int, default=32)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd

host = "127.0.0.1" if a.mode == "user" else "10.9.0.1"
guest_host = "10.0.2.2" if a.mode == "user" else "10.9.0.1"
sink = socket.socket()
sink.bind((host, 0))
sink.listen(4)
port = sink.getsockname()[1]
results = []

def serve():
    while True:
        c, _ = sink.accept()
        n, first, last = 0, None, None
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            now = time.monotonic()
            first = first or now
            last = now
            n += len(d)
        c.close()
        if n and last > first:
            results.append((n, last - first))

threading.Thread(target=serve, daemon=True).start()

p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = b""

def wait(needle, t):
    global out
    end = time.time() + t
    while needle.encode() not in out:
        if time.time() > end or p.poll() is not None:
            sys.exit("throughput: no %r from the guest; console:\n%s" % (needle, out.decode(errors="replace")[-3000:]))
        r, _, _ = select.select([p.stdout], [], [], 1)
        if r:
            out += os.read(p.stdout.fileno(), 65536)
    out = out[out.index(needle.encode()) + len(needle):]

def run(line, tag):
    p.stdin.write(("%s; echo %s''%s\n" % (line, tag[:2], tag[2:])).encode())
    p.stdin.flush()
    wait(tag, 1800)

wait("JANUS-SHELL", 1800)
wait("# ", 60)
run("busybox mount -t devtmpfs devtmpfs /dev; for m in $(busybox cat /lib/modules/order); do busybox insmod /lib/modules/$m.ko 2>/dev/null; done;"
    " for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; busybox sleep 1; done", "MODS-DONE")
if a.mode == "user":
    run("busybox mkdir -p /tmp; printf '#!/bin/sh\\n[ \"$1\" = bound ] && busybox ifconfig $interface $ip"
        " netmask $subnet up && busybox route add default gw $router\\nexit 0\\n' > /tmp/d.sh;"
        " busybox chmod +x /tmp/d.sh; busybox ip link set eth0 up;"
        " busybox udhcpc -i eth0 -n -q -t 20 -T 1 -s /tmp/d.sh >/dev/null", "DHCP-DONE")
else:
    run("busybox ip addr add 10.9.0.2/24 dev eth0; busybox ip link set eth0 up; busybox sleep 1", "LINK-DONE")
count = a.mib * 16
for i in range(a.runs):
    before = len(results)
    run("busybox dd if=/dev/zero bs=64k count=%d 2>/dev/null | busybox nc %s %d" % (count, guest_host, port), "SENT%d-DONE" % i)
    t = time.time()
    while len(results) == before and time.time() - t < 10:
        time.sleep(0.05)
    if len(results) == before:
        sys.exit("throughput: the sink got nothing")
    n, secs = results[-1]
    if n != count * 65536:
        sys.exit("throughput: the sink got %d bytes of %d" % (n, count * 65536))
    print("MBPS %.1f" % (n / secs / 1e6), flush=True)
p.stdin.write(b"busybox poweroff -f\n")
p.stdin.flush()
try:
    p.wait(60)
except subprocess.TimeoutExpired:
    p.kill()
