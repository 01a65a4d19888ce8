//! A whole Debian system from its disk, as a user runs it: `janus run --drive file=debian.img`
//! on the JIT boots the image of tests/debian/make-image.sh (SeaBIOS, GRUB, Debian's kernel
//! and initramfs, systemd) to the login prompt on ttyS0; the test logs in as root by typing on
//! janus's stdin, waits for `systemctl is-system-running --wait`, writes a file, and powers off
//! with `systemctl poweroff`, which ends janus with the power-off status (116). The file is then
//! read from the ext4 partition of the image with debugfs (e2fsprogs), without mounting it.
//!
//! The image is a scratch copy, so the cached one stays as built. Without the image the test
//! skips loudly, and under JANUS_REQUIRE_DEBIAN=1 (set by .ci/run once it built the image) it
//! fails instead.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The image's first partition starts at sector 2048 (tests/debian/make-image.sh).
const PART_OFFSET: u64 = 2048 * 512;

fn image() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/debian/assets/debian.img")
}

/// Waits until `out` (everything read so far) contains `needle` after byte `from`, reading
/// from `rx`; returns where the needle ends.
fn wait_for(
    rx: &mpsc::Receiver<Vec<u8>>,
    out: &mut Vec<u8>,
    from: usize,
    needle: &str,
    deadline: Instant,
) -> usize {
    loop {
        let text = String::from_utf8_lossy(&out[from.min(out.len())..]).into_owned();
        if let Some(at) = text.find(needle) {
            // `text` may differ in length from the bytes where they were not UTF-8; the
            // console here is ASCII, so the offsets agree.
            return from + at + needle.len();
        }
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

/// A sparse scratch copy of the image, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(from: &Path) -> Self {
        let p = std::env::temp_dir().join(format!("janus-debian-{}.img", std::process::id()));
        let ok = Command::new("cp")
            .arg("--sparse=always")
            .arg(from)
            .arg(&p)
            .status()
            .expect("cp runs");
        assert!(ok.success(), "copying {} failed", from.display());
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The value printed after `tag=` on a whole line (not the typed command's echo, where `$(`
/// follows the tag).
fn tagged(console: &str, tag: &str) -> Option<String> {
    console.split_inclusive('\n').find_map(|l| {
        let v = l.strip_suffix('\n')?.trim_end_matches('\r');
        let v = v.split_once(&format!("{tag}="))?.1;
        (!v.starts_with('$')).then(|| v.trim().to_string())
    })
}

/// Waits until the guest printed `tag=VALUE` on a line after byte `from`: the value and the
/// end of what was read.
fn wait_tagged(
    rx: &mpsc::Receiver<Vec<u8>>,
    out: &mut Vec<u8>,
    from: usize,
    tag: &str,
    deadline: Instant,
) -> (String, usize) {
    loop {
        let text = String::from_utf8_lossy(&out[from.min(out.len())..]).into_owned();
        if let Some(v) = tagged(&text, tag) {
            return (v, out.len());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend(chunk),
            Err(_) => panic!(
                "no {tag}= from the guest in time; console so far:\n{}",
                String::from_utf8_lossy(out)
            ),
        }
    }
}

#[test]
fn debian_boots_from_its_disk_to_login_and_powers_off_after_writing_a_file() {
    let test = "debian_boots_from_its_disk_to_login_and_powers_off_after_writing_a_file";
    if !image().exists() {
        if std::env::var("JANUS_REQUIRE_DEBIAN").as_deref() == Ok("1") {
            panic!("{test}: the Debian image is required (JANUS_REQUIRE_DEBIAN=1)");
        }
        eprintln!(
            "!!!! SKIPPED {test}: no Debian image (run tests/debian/make-image.sh); this test \
             did NOT run !!!!"
        );
        return;
    }
    let disk = Scratch::new(&image());
    let launched = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args([
            "run",
            "--accel",
            "jit",
            "--mem",
            "512M",
            "--timeout",
            "2700",
        ])
        .arg("--drive")
        .arg(format!("file={}", disk.0.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("janus starts");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    // The console also goes to a file as it comes, to follow a long boot (kept on failure).
    let log_path = disk.0.with_extension("console");
    eprintln!("{test}: console in {}", log_path.display());
    let mut log = std::fs::File::create(&log_path).expect("console log");
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            let _ = log.write_all(&buf[..n]);
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().expect("piped");
    let mut type_line = |line: &str| {
        stdin.write_all(line.as_bytes()).expect("type");
        stdin.write_all(b"\n").expect("type");
        stdin.flush().expect("flush");
    };
    let mut out = Vec::new();
    // Under a loaded host the boot takes long: about 4 minutes of janus's CPU time, so many
    // more of wall time when the host's cores are shared.
    let deadline = launched + Duration::from_secs(2400);
    let mut at = wait_for(&rx, &mut out, 0, "Booting from Hard Disk", deadline);
    at = wait_for(&rx, &mut out, at, "debian login: ", deadline);
    eprintln!("{test}: login prompt after {:.1?}", launched.elapsed());
    type_line("root");
    // Root's shell prompt (root@debian:~#); nothing is typed before it, so that the line is not
    // swallowed by the tty's set-up.
    at = wait_for(&rx, &mut out, at, "root@debian", deadline);
    at = wait_for(&rx, &mut out, at, "# ", deadline);
    type_line("echo JANUS-STATE=$(systemctl is-system-running --wait)");
    let (state, next) = wait_tagged(&rx, &mut out, at, "JANUS-STATE", deadline);
    at = next;
    eprintln!(
        "{test}: systemctl is-system-running --wait: {state} after {:.1?}",
        launched.elapsed()
    );
    let mut failed = String::new();
    if state != "running" {
        type_line("echo JANUS-FAILED=$(systemctl --failed --plain --no-legend | tr '\\n' ' ')");
        (failed, at) = wait_tagged(&rx, &mut out, at, "JANUS-FAILED", deadline);
    }
    let _ = at;
    // The file's contents (janus-42) differ from the typed text, so they can only come from the
    // guest's shell.
    type_line("echo janus-$((6*7)) > /root/janus-wrote-this.txt && sync && systemctl poweroff");
    let status = loop {
        while let Ok(chunk) = rx.try_recv() {
            out.extend(chunk);
        }
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
    let _ = reader.join();
    while let Ok(chunk) = rx.try_recv() {
        out.extend(chunk);
    }
    let console = String::from_utf8_lossy(&out).into_owned();
    let mut err = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    eprintln!(
        "{test}: janus exited ({status}) after {:.1?}",
        launched.elapsed()
    );
    assert_eq!(
        state, "running",
        "the system is not running; failed units: {failed}\nconsole:\n{console}"
    );
    // 116: the guest powered the machine off (ACPI S5).
    assert_eq!(
        status.code(),
        Some(116),
        "stderr: {err}\nconsole:\n{console}"
    );
    assert!(err.contains("powered the machine off"), "{err}");
    assert!(console.contains("reboot: Power down"), "{console}");
    let _ = std::fs::remove_file(&log_path);
    // The file is in the image: debugfs reads the ext4 partition at its offset.
    let fs = format!("{}?offset={PART_OFFSET}", disk.0.display());
    let read = Command::new("debugfs")
        .args(["-R", "cat /root/janus-wrote-this.txt", &fs])
        .output()
        .expect("debugfs (e2fsprogs) runs");
    let text = String::from_utf8_lossy(&read.stdout);
    assert_eq!(
        text.trim(),
        "janus-42",
        "debugfs: {}",
        String::from_utf8_lossy(&read.stderr)
    );
}
