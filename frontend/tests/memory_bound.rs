//! janus's own memory stays bounded whatever the guest runs: `test-roms/runaway.bin` runs on
//! through zeroed RAM, a new translated block every few dozen bytes, and the real janus process
//! must keep its peak resident set, less the guest memory touched, within `--tb-size` plus
//! 64 MiB, on the interpreter, the JIT, KVM (when present) and in `janus diff`. Before the
//! translation cache had a bound, the same guest took about 1 GiB in 8 s.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// What janus may take besides the translation cache (its code, stacks, devices, buffers).
const SLACK: u64 = 64 * MIB;
/// The default `--tb-size`.
const DEFAULT_TB: u64 = janus_accel::soft::DEFAULT_TB_SIZE as u64;

fn runaway() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../test-roms/runaway.bin")
        .to_str()
        .unwrap()
        .to_string()
}

/// A "Name:   123 kB" field of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rest = s.lines().find_map(|l| l.strip_prefix(field))?;
    Some(rest.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
}

/// Waits for `child` (killing it after `limit`), sampling its peak RSS (VmHWM) from /proc
/// while it lives: the highest value seen, its stdout and its stderr.
fn watch(mut child: Child, limit: Duration) -> (u64, String, String) {
    let pid = child.id();
    let start = Instant::now();
    let mut hwm = 0;
    loop {
        if let Some(v) = status_bytes(pid, "VmHWM:") {
            hwm = hwm.max(v);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        hwm,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A number after `label` in the --stats report.
fn stat(stderr: &str, label: &str) -> Option<f64> {
    let rest = stderr.lines().find_map(|l| l.trim().strip_prefix(label))?;
    rest.trim()
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the runaway guest on `accel` for `secs` seconds with `extra` options: janus's peak
/// RSS, the guest memory touched (from --stats) and the stats report.
fn run_runaway(accel: &str, secs: u32, extra: &[&str]) -> (u64, u64, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", &runaway(), "--accel", accel, "--serial", "none"])
        .args(["--timeout", &secs.to_string(), "--stats"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (hwm, _, e) = watch(child, Duration::from_secs(u64::from(secs) + 30));
    assert!(
        e.contains("timeout"),
        "{accel}: the run did not end by its timeout:\n{e}"
    );
    // "peak RSS  261.4 MiB (guest memory touched 12.8 MiB, janus 248.6 MiB)"
    let touched = e
        .split("guest memory touched ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{accel}: no memory line in --stats:\n{e}"));
    (hwm, (touched * MIB as f64) as u64, e)
}

fn check(what: &str, hwm: u64, touched: u64, bound: u64) {
    let own = hwm.saturating_sub(touched);
    eprintln!(
        "{what}: peak RSS {:.1} MiB, guest touched {:.1} MiB, janus {:.1} MiB (bound {:.1} MiB)",
        hwm as f64 / MIB as f64,
        touched as f64 / MIB as f64,
        own as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
    assert!(hwm > 0, "{what}: no RSS sample");
    assert!(
        own <= bound,
        "{what}: janus took {} MiB of its own, over the bound of {} MiB",
        own / MIB,
        bound / MIB
    );
}

fn kvm_present() -> bool {
    let ok = std::path::Path::new("/dev/kvm").exists()
        && janus_accel::kvm::probe("/dev/kvm".as_ref()).is_ok();
    if !ok && std::env::var("JANUS_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("KVM is required (JANUS_REQUIRE_KVM=1) but unavailable");
    }
    ok
}

/// With the default `--tb-size`, 10 s of the runaway guest (about 1 GiB before the bound).
#[test]
fn a_runaway_guest_stays_within_the_default_tb_size() {
    let mut accels = vec!["interp", "jit"];
    if kvm_present() {
        accels.push("kvm");
    } else {
        eprintln!("!!!! SKIPPED the kvm case: KVM unavailable !!!!");
    }
    let runs: Vec<_> = accels
        .iter()
        .map(|&a| std::thread::spawn(move || (a, run_runaway(a, 10, &[]))))
        .collect();
    for r in runs {
        let (a, (hwm, touched, _)) = r.join().unwrap();
        check(a, hwm, touched, DEFAULT_TB + SLACK);
    }
}

/// `--tb-size 16`: the cache is flushed when full (the flush is counted in --stats) and the
/// bound follows the flag.
#[test]
fn a_small_tb_size_is_honoured_and_its_flushes_counted() {
    let runs: Vec<_> = ["interp", "jit"]
        .into_iter()
        .map(|a| std::thread::spawn(move || (a, run_runaway(a, 6, &["--tb-size", "16"]))))
        .collect();
    for r in runs {
        let (a, (hwm, touched, e)) = r.join().unwrap();
        check(a, hwm, touched, 16 * MIB + SLACK);
        let flushes = stat(&e, "tb flushes (cache full)")
            .unwrap_or_else(|| panic!("{a}: no flush counter in --stats:\n{e}"));
        assert!(
            flushes >= 1.0,
            "{a}: the full cache was never flushed:\n{e}"
        );
    }
}

/// `janus diff` of the runaway guest, the interpreter against the JIT, stepping one
/// instruction at a time (a one-instruction block per step on each side), for 10 s: within
/// `--tb-size` (both sides together) plus the slack.
#[test]
fn janus_diff_of_a_runaway_guest_stays_within_the_tb_size() {
    let child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["diff", &runaway(), "--a", "interp", "--b", "jit"])
        .args(["--max-steps", "1000000000", "--tb-size", "16"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (hwm, _, e) = watch(child, Duration::from_secs(10));
    assert!(!e.contains("error"), "{e}");
    // The guest touches almost no memory (it reads zero pages and writes one byte): the whole
    // peak counts as janus's own.
    check("diff interp/jit", hwm, 0, 16 * MIB + SLACK);
}
