//! Typing into a Linux guest's shell over the serial console, as a user at a terminal would:
//! `janus run` with the console on stdio boots Debian's kernel on the JIT with `janus.shell`
//! (the test initramfs then runs a shell on ttyS0), the test types a command on janus's stdin
//! and reads the answer from its stdout, then powers the guest off from the shell.
//!
//! Needs the assets of tests/linux/fetch-assets.sh; without them the test skips loudly, and
//! under JANUS_REQUIRE_LINUX=1 (set by .ci/run once it fetched them) it fails instead.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/linux/assets")
}

/// Waits until `out` (everything read so far) contains `needle`, reading from `rx`.
fn wait_for(rx: &mpsc::Receiver<Vec<u8>>, out: &mut Vec<u8>, needle: &str, deadline: Instant) {
    while !String::from_utf8_lossy(out).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend(chunk),
            Err(_) => panic!(
                "no {needle:?} from the guest in time; console so far:\n{}",
                String::from_utf8_lossy(out)
            ),
        }
    }
}

#[test]
fn typing_into_the_guest_shell_over_the_serial_console() {
    let test = "typing_into_the_guest_shell_over_the_serial_console";
    let (kernel, initrd) = (assets().join("vmlinux"), assets().join("initramfs.cpio.gz"));
    if !kernel.exists() || !initrd.exists() {
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("{test}: the Linux assets are required (JANUS_REQUIRE_LINUX=1)");
        }
        eprintln!(
            "!!!! SKIPPED {test}: no Linux assets (run tests/linux/fetch-assets.sh); this test \
             did NOT run !!!!"
        );
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", "--accel", "jit", "--mem", "256M", "--timeout", "600"])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--append", "console=ttyS0 quiet janus.shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("janus starts");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(540);
    wait_for(&rx, &mut out, "JANUS-SHELL", deadline);
    // The shell prints its banner and prompt after the marker; wait for the prompt so that the
    // typed line is not swallowed by the tty's set-up.
    wait_for(&rx, &mut out, "# ", deadline);
    // The answer (42X) differs from the typed text, so it can only come from the shell.
    stdin.write_all(b"echo $((6*7))X\n").expect("type");
    stdin.flush().expect("flush");
    wait_for(&rx, &mut out, "42X", deadline);
    stdin.write_all(b"busybox poweroff -f\n").expect("type");
    stdin.flush().expect("flush");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the guest did not power off; console:\n{}",
                String::from_utf8_lossy(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let _ = reader.join();
    let mut err = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    // 116: the guest powered the machine off (ACPI S5 from `poweroff -f`).
    assert_eq!(status.code(), Some(116), "stderr: {err}");
    assert!(err.contains("powered the machine off"), "{err}");
}
