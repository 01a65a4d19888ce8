//! Record and replay (`janus run --record FILE` / `--replay FILE`, src/record.rs).
//!
//! A Linux session recorded on the JIT: Debian's kernel (PVH vmlinux) with `janus.shell` on the
//! command line and the assets' ext4 image as a read-only virtio disk; the test types commands
//! into the shell on janus's stdin when the guest is ready (loading the virtio modules, mounting
//! the disk and reading a file from it, an arithmetic the shell must do), then powers the
//! guest off. The recording is replayed on the JIT and on the interpreter with no input: the
//! same console output byte for byte, the same instruction count and final state hash (janus
//! compares them with the recording's end and says so), the same exit status.
//!
//! Without the Linux assets the test skips loudly; under JANUS_REQUIRE_LINUX=1 it fails.
//! Also, on test-roms/echo.bin: typed bytes replayed, and the one-line errors for a truncated
//! file, a file of another machine, and machines that cannot be recorded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn assets() -> PathBuf {
    root().join("tests/linux/assets")
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("janus-replay-{}-{name}", std::process::id()))
}

/// Waits until `out` contains `needle` after `from`, reading from `rx`.
fn wait_for(
    rx: &mpsc::Receiver<Vec<u8>>,
    out: &mut Vec<u8>,
    from: usize,
    needle: &str,
    deadline: Instant,
) {
    while !String::from_utf8_lossy(&out[from.min(out.len())..]).contains(needle) {
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

/// The machine options of the Linux session.
fn linux_args() -> Vec<String> {
    let a = assets();
    [
        "--mem",
        "256M",
        "--kernel",
        &a.join("vmlinux").display().to_string(),
        "--initrd",
        &a.join("initramfs.cpio.gz").display().to_string(),
        "--append",
        "console=ttyS0 quiet janus.shell",
        "--drive",
        &format!("file={},readonly=on", a.join("disk.img").display()),
        "--timeout",
        "1500",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// The commands typed, each with what its answer must contain (built so that only the shell
/// can print it: the typed text differs).
const SESSION: &[(&str, &str)] = &[
    (
        "busybox mount -t devtmpfs devtmpfs /dev; for m in $(busybox cat /lib/modules/order); \
         do busybox insmod /lib/modules/$m.ko 2>/dev/null; done; echo MODS-$((40+2))\n",
        "MODS-42",
    ),
    (
        "busybox mount -t ext4 -o ro /dev/vda /mnt && echo DISK-SAYS-$(busybox cat /mnt/hello.txt)\n",
        "DISK-SAYS-",
    ),
    ("echo $((6*7))X\n", "42X"),
];

/// Records the session: its console output, stderr and exit status.
fn record(file: &Path) -> (Vec<u8>, String, Option<i32>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", "--accel", "jit"])
        .args(linux_args())
        .arg("--record")
        .arg(file)
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
    let deadline = Instant::now() + Duration::from_secs(1200);
    wait_for(&rx, &mut out, 0, "JANUS-SHELL", deadline);
    wait_for(&rx, &mut out, 0, "# ", deadline);
    for (typed, answer) in SESSION {
        let from = out.len();
        stdin.write_all(typed.as_bytes()).expect("type");
        stdin.flush().expect("flush");
        wait_for(&rx, &mut out, from, answer, deadline);
        wait_for(&rx, &mut out, from, "# ", deadline);
    }
    stdin.write_all(b"busybox poweroff -f\n").expect("type");
    stdin.flush().expect("flush");
    let status = child.wait().expect("janus ends");
    drop(stdin);
    let _ = reader.join();
    while let Ok(chunk) = rx.try_recv() {
        out.extend(chunk);
    }
    let mut err = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    (out, err, status.code())
}

/// Replays `file` on `accel` with nothing on stdin.
fn replay(file: &Path, accel: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", "--accel", accel])
        .args(linux_args())
        .arg("--replay")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("janus runs")
}

/// The number and hash in janus's "recorded N instructions ..., final state hash H" or
/// "replayed N instructions ... final state hash H" line.
fn count_and_hash(stderr: &str, verb: &str) -> (u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("janus: {verb} ")))
        .unwrap_or_else(|| panic!("no '{verb}' line in:\n{stderr}"));
    let n = line.split(' ').nth(2).and_then(|n| n.parse().ok());
    let hash = line.rsplit(' ').next().map(str::to_string);
    (n.expect("a count"), hash.expect("a hash"))
}

#[test]
fn a_recorded_linux_shell_session_with_disk_reads_replays_exactly_on_the_jit_and_the_interpreter() {
    let test = "a_recorded_linux_shell_session_with_disk_reads_replays_exactly_on_the_jit_and_the_interpreter";
    if !assets().join("vmlinux").exists() || !assets().join("disk.img").exists() {
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("{test}: the Linux assets are required (JANUS_REQUIRE_LINUX=1)");
        }
        eprintln!(
            "!!!! SKIPPED {test}: no Linux assets (run tests/linux/fetch-assets.sh); this test \
             did NOT run !!!!"
        );
        return;
    }
    let file = scratch("linux.jrr");
    let t = Instant::now();
    let (out, err, status) = record(&file);
    let recorded_in = t.elapsed();
    // 116: the guest powered the machine off.
    assert_eq!(status, Some(116), "{test}: recording: {err}");
    let (n, hash) = count_and_hash(&err, "recorded");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("DISK-SAYS-"), "{test}: no disk read:\n{text}");
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    for accel in ["jit", "interp"] {
        let t = Instant::now();
        let r = replay(&file, accel);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(
            r.status.code(),
            Some(116),
            "{test}: {accel} replay: {stderr}"
        );
        assert!(
            r.stdout == out,
            "{test}: the {accel} replay printed other bytes:\n{}\n---- recorded:\n{text}",
            String::from_utf8_lossy(&r.stdout)
        );
        assert_eq!(
            count_and_hash(&stderr, "replayed"),
            (n, hash.clone()),
            "{test}: {accel}: {stderr}"
        );
        assert!(stderr.contains("exactly"), "{stderr}");
        eprintln!(
            "{test}: {accel} replay of {n} instructions in {:.1} s (recorded in {:.1} s, {size} \
             bytes)",
            t.elapsed().as_secs_f64(),
            recorded_in.as_secs_f64()
        );
    }
    let _ = std::fs::remove_file(&file);
}

fn janus(args: &[&str]) -> Output {
    janus_typed(args, b"")
}

/// janus with `typed` on its stdin.
fn janus_typed(args: &[&str], typed: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("janus starts");
    let mut stdin = child.stdin.take().expect("piped");
    // A closed pipe is fine: janus may have refused the options already.
    let _ = stdin.write_all(typed);
    drop(stdin);
    child.wait_with_output().expect("janus runs")
}

/// One line on stderr, containing `want`, and a failure status.
fn one_error_line(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(want), "wanted {want:?}: {err}");
}

/// test-roms/echo.bin prints every byte it receives: recorded with typed input on the
/// interpreter, replayed on the JIT with none, it prints the same.
#[test]
fn typed_input_to_a_rom_replays_and_bad_recordings_are_one_error_line() {
    let rom = root().join("test-roms/echo.bin");
    let rom = rom.to_str().unwrap();
    let file = scratch("rom.jrr");
    let f = file.to_str().unwrap();
    let rec = janus_typed(
        &["run", "--accel", "interp", rom, "--record", f],
        b"hi\x03q",
    );
    let err = String::from_utf8_lossy(&rec.stderr);
    assert!(rec.status.success(), "{err}");
    let out = String::from_utf8_lossy(&rec.stdout);
    assert!(out.contains("<68><69><03>"), "{out}");
    let (n, hash) = count_and_hash(&err, "recorded");
    let rep = janus(&["run", "--accel", "jit", rom, "--replay", f]);
    let err = String::from_utf8_lossy(&rep.stderr);
    assert!(rep.status.success(), "{err}");
    assert_eq!(rep.stdout, rec.stdout, "{err}");
    assert_eq!(count_and_hash(&err, "replayed"), (n, hash));
    // Another machine.
    let other = janus(&["run", "--mem", "32M", rom, "--replay", f]);
    one_error_line(&other, "was recorded on another machine");
    // Truncated (the recorder was killed).
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
    let cut = janus(&["run", rom, "--replay", f]);
    one_error_line(&cut, "is truncated at byte");
    // Not a recording.
    let not = janus(&["run", rom, "--replay", rom]);
    one_error_line(&not, "is not a janus recording");
    // What cannot be recorded.
    let smp = janus(&["run", "--smp", "2", rom, "--record", f]);
    one_error_line(&smp, "one vCPU only");
    let kvm = janus(&["run", "--accel", "kvm", rom, "--record", f]);
    one_error_line(&kvm, "--icount needs a software backend");
    let _ = std::fs::remove_file(&file);
}
