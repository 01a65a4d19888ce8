//! Networking with Debian's kernel: virtio-net over user-mode networking and over TAP, on the
//! interpreter and the JIT. Not on KVM: on this project's kvm_pvm hosts Debian's kernel does not
//! reach /init (it meets an AVX instruction, README "Booting Linux"), as for every Linux test.
//!
//! - user: the guest gets a DHCP lease (busybox udhcpc), fetches a page from an HTTP server the
//!   test runs on the host's loopback through the gateway address (busybox wget to 10.0.2.2),
//!   and serves a page with busybox httpd that the test fetches from the host through
//!   `hostfwd`. Needs passt (skips loudly without it; fails under JANUS_REQUIRE_PASST=1).
//! - tap: the test makes a network namespace with a TAP in it (`unshare -rn`, `ip tuntap`),
//!   runs janus there, and the guest pings the TAP's address. Where this machine cannot make
//!   one the test says why, loudly (and fails under JANUS_REQUIRE_TAP=1).
//!
//! The guest is driven through its serial console (`janus.shell`), as frontend/tests/console.rs
//! does. Needs the assets of tests/linux/fetch-assets.sh (skips loudly without them, fails under
//! JANUS_REQUIRE_LINUX=1).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

fn skip(test: &str, var: &str, why: &str) {
    if required(var) {
        panic!("{test}: {why} ({var}=1)");
    }
    eprintln!("!!!! SKIPPED {test}: {why}; this test did NOT run !!!!");
}

/// The kernel and initramfs, or `None` (loudly) when they were not fetched.
fn assets(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = root().join("tests/linux/assets");
    let (k, i) = (dir.join("vmlinux"), dir.join("initramfs.cpio.gz"));
    if k.exists() && i.exists() {
        return Some((k, i));
    }
    skip(
        test,
        "JANUS_REQUIRE_LINUX",
        "no Linux assets (run tests/linux/fetch-assets.sh)",
    );
    None
}

/// A guest on its serial console: janus (possibly under a wrapper) with stdin and stdout piped.
struct Guest {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Vec<u8>>,
    out: Vec<u8>,
    deadline: Instant,
}

impl Guest {
    /// Starts `program args...` (janus itself or a wrapper that runs it) and waits for the shell.
    fn start(program: &str, args: &[String]) -> Guest {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("janus starts");
        let mut stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().expect("piped");
        let mut g = Guest {
            child,
            stdin,
            rx,
            out: Vec::new(),
            deadline: Instant::now() + Duration::from_secs(1500),
        };
        g.wait_for("JANUS-SHELL");
        g.wait_for("# ");
        g
    }

    /// Waits until the console shows `needle` after what was consumed so far; returns the text
    /// up to it and consumes it.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let text = String::from_utf8_lossy(&self.out).into_owned();
            if let Some(at) = text.find(needle) {
                self.out.drain(..at + needle.len());
                return text[..at].to_string();
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.out.extend(chunk),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {needle:?} from the guest in time; console:\n{text}");
                }
            }
        }
    }

    /// Types `cmd`, then waits for `done` (text the command prints that the typed line does
    /// not contain, so that the echo does not match).
    fn run(&mut self, cmd: &str, done: &str) -> String {
        self.stdin
            .write_all(cmd.as_bytes())
            .and_then(|()| self.stdin.write_all(b"\n"))
            .expect("type");
        self.stdin.flush().expect("flush");
        self.wait_for(done)
    }

    /// Powers the guest off and checks that janus says so.
    fn poweroff(mut self) {
        let _ = self.stdin.write_all(b"busybox poweroff -f\n");
        let _ = self.stdin.flush();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > self.deadline {
                let _ = self.child.kill();
                panic!("the guest did not power off");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // 116: the guest powered the machine off.
        assert_eq!(status.code(), Some(116));
    }
}

fn janus_args(accel: &str, kernel: &Path, initrd: &Path, netdev: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "--accel",
        accel,
        "--mem",
        "256M",
        "--timeout",
        "1500",
        "--kernel",
    ]
    .map(String::from)
    .to_vec();
    a.push(kernel.display().to_string());
    a.push("--initrd".into());
    a.push(initrd.display().to_string());
    a.extend(["--append".into(), "console=ttyS0 quiet janus.shell".into()]);
    a.extend(["--netdev".into(), netdev.into()]);
    a
}

/// A one-page HTTP server on the host's loopback; returns its port.
fn host_http_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = conn.read(&mut req);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A free TCP port on the host (bound, noted, let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Loads the initramfs's modules (virtio-pci, virtio-net and what they need, in the order
/// tests/linux/fetch-assets.sh wrote) and waits for eth0.
const MODULES: &str = "for m in $(busybox cat /lib/modules/order); do busybox insmod /lib/modules/$m.ko 2>/dev/null; done; \
    for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; busybox sleep 1; done; \
    busybox ip link show eth0; echo MODULES-''DONE";

/// The shell lines that bring eth0 up and take a DHCP lease.
const DHCP: &str = "busybox mkdir -p /tmp; \
    printf '#!/bin/sh\\n[ \"$1\" = bound ] && busybox ifconfig $interface $ip netmask $subnet up && busybox route add default gw $router\\nexit 0\\n' > /tmp/dhcp.sh; \
    busybox chmod +x /tmp/dhcp.sh; \
    busybox ip link set eth0 up; \
    busybox udhcpc -i eth0 -n -q -t 20 -T 1 -s /tmp/dhcp.sh; echo DHCP-''DONE";

fn user_networking(accel: &str) {
    let test = &format!("user_networking_{accel}");
    let Some((kernel, initrd)) = assets(test) else {
        return;
    };
    if Command::new("passt").arg("--version").output().is_err()
        && std::env::var_os("JANUS_PASST").is_none()
    {
        skip(
            test,
            "JANUS_REQUIRE_PASST",
            "passt is not installed (apt-get install passt)",
        );
        return;
    }
    let page = host_http_server("janus-host-page-7d41\n");
    let fwd = free_port();
    let netdev = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{fwd}-:8080");
    let mut g = Guest::start(
        env!("CARGO_BIN_EXE_janus"),
        &janus_args(accel, &kernel, &initrd, &netdev),
    );
    let link = g.run(MODULES, "MODULES-DONE");
    assert!(
        link.contains("link/ether 52:54:00:12:34:56"),
        "no eth0: {link}"
    );
    let dhcp = g.run(DHCP, "DHCP-DONE");
    let lease = g.run(
        "busybox ip -4 addr show eth0; echo ADDR-''DONE",
        "ADDR-DONE",
    );
    assert!(
        lease.contains("inet 10.0.2.15/24"),
        "no DHCP lease: {dhcp}{lease}"
    );
    // Guest -> host: the gateway address reaches the host's loopback.
    let got = g.run(
        &format!("busybox wget -q -O - http://10.0.2.2:{page}/; echo WGET-''DONE"),
        "WGET-DONE",
    );
    assert!(got.contains("janus-host-page-7d41"), "{got}");
    // Host -> guest: hostfwd to busybox httpd on port 8080.
    g.run(
        "busybox mkdir -p /www && echo janus-guest-page-93c2 > /www/index.html && busybox httpd -p 8080 -h /www && echo HTTPD-''UP",
        "HTTPD-UP",
    );
    g.wait_for("# ");
    let mut conn = TcpStream::connect(("127.0.0.1", fwd)).expect("connect to the hostfwd port");
    conn.set_read_timeout(Some(Duration::from_secs(300)))
        .expect("timeout");
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    assert!(
        reply.contains("janus-guest-page-93c2"),
        "reply through hostfwd: {reply:?}"
    );
    g.poweroff();
}

#[test]
fn user_networking_interp() {
    user_networking("interp");
}

#[test]
fn user_networking_jit() {
    user_networking("jit");
}

/// Whether a TAP can be made in a new network namespace here; `Err` says why not.
fn tap_possible() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-rn", "ip", "tuntap", "add", "dev", "jtap0", "mode", "tap"])
        .output()
        .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "'unshare -rn ip tuntap add dev jtap0 mode tap' failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn tap_ping(accel: &str) {
    let test = &format!("tap_ping_{accel}");
    let Some((kernel, initrd)) = assets(test) else {
        return;
    };
    if let Err(why) = tap_possible() {
        skip(
            test,
            "JANUS_REQUIRE_TAP",
            &format!("cannot make a TAP in a network namespace: {why}"),
        );
        return;
    }
    // In a fresh network namespace: a TAP with the host side's address, then janus on it.
    let args = janus_args(accel, &kernel, &initrd, "tap,id=t0,ifname=jtap0");
    let mut wrapper = vec![
        "-rn".to_string(),
        "sh".into(),
        "-c".into(),
        "ip tuntap add dev jtap0 mode tap && ip addr add 10.9.0.1/24 dev jtap0 && ip link set jtap0 up && exec \"$0\" \"$@\"".into(),
        env!("CARGO_BIN_EXE_janus").into(),
    ];
    wrapper.extend(args);
    let mut g = Guest::start("unshare", &wrapper);
    let link = g.run(MODULES, "MODULES-DONE");
    assert!(
        link.contains("link/ether 52:54:00:12:34:56"),
        "no eth0: {link}"
    );
    g.run(
        "busybox ip addr add 10.9.0.2/24 dev eth0 && busybox ip link set eth0 up && echo LINK-''UP",
        "LINK-UP",
    );
    let ping = g.run(
        "busybox ping -c 3 -W 30 10.9.0.1; echo PING-''DONE",
        "PING-DONE",
    );
    assert!(ping.contains("3 packets received"), "{ping}");
    g.poweroff();
}

#[test]
fn tap_ping_interp() {
    tap_ping("interp");
}

#[test]
fn tap_ping_jit() {
    tap_ping("jit");
}

/// `janus run ARGS` with `env`: its exit code and stderr.
fn janus_fails(env: &[(&str, &str)], wrapper: &[&str], args: &[&str]) -> (Option<i32>, String) {
    let janus = env!("CARGO_BIN_EXE_janus");
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(janus);
            c
        }
        None => Command::new(janus),
    };
    let out = cmd
        .arg("run")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("janus starts");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One line naming the cause, exit status 1, for each bad --netdev.
fn assert_one_line(got: (Option<i32>, String), cause: &str) {
    let (code, err) = got;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("janus: error: ") && err.contains(cause),
        "{err}"
    );
}

#[test]
fn bad_netdev_arguments_are_one_line_each() {
    assert_one_line(
        janus_fails(&[], &[], &["--netdev", "socket,id=a"]),
        "unknown netdev type 'socket'",
    );
    assert_one_line(
        janus_fails(&[], &[], &["--netdev", "tap,id=a"]),
        "needs ifname=NAME",
    );
    assert_one_line(
        janus_fails(&[], &[], &["--netdev", "user,id=a,hostfwd=tcp::99999-:80"]),
        "hostfwd",
    );
    assert_one_line(
        janus_fails(&[], &[], &["--nic", "user,bogus=1"]),
        "unknown option 'bogus'",
    );
    assert_one_line(
        janus_fails(
            &[("JANUS_PASST", "/nonexistent/passt")],
            &[],
            &["--netdev", "user,id=a"],
        ),
        "needs the passt program",
    );
}

#[test]
fn a_tap_without_permission_is_one_line() {
    // Root of a new user namespace, but not of the network namespace: TUNSETIFF is refused.
    let probe = Command::new("unshare").args(["-r", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        skip(
            "a_tap_without_permission_is_one_line",
            "JANUS_REQUIRE_TAP",
            "'unshare -r' does not work here",
        );
        return;
    }
    assert_one_line(
        janus_fails(
            &[],
            &["unshare", "-r"],
            &["--netdev", "tap,id=t,ifname=jnoperm0"],
        ),
        "cannot open TAP interface 'jnoperm0': Operation not permitted",
    );
}

#[test]
fn a_hostfwd_port_in_use_is_one_line() {
    if Command::new("passt").arg("--version").output().is_err() {
        skip(
            "a_hostfwd_port_in_use_is_one_line",
            "JANUS_REQUIRE_PASST",
            "passt is not installed",
        );
        return;
    }
    let taken = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    assert_one_line(
        janus_fails(
            &[],
            &[],
            &["--netdev", &format!("user,id=u,hostfwd=tcp::{port}-:80")],
        ),
        &format!("passt exited at once (exit status: 1): a hostfwd port in use ({port})"),
    );
}
