//! Typing into a Linux guest's shell over the serial console, as a user at a terminal would:
//! `janus run` with the console on stdio boots Debian's kernel on the JIT with `janus.shell`
//! (the test initramfs then runs a shell on ttyS0), the test types a command on janus's stdin
//! and reads the answer from its stdout, then powers the guest off from the shell.
//!
//! Needs the assets of tests/linux/fetch-assets.sh; without them the test skips loudly, and
//! under JANUS_REQUIRE_LINUX=1 (set by .ci/run once it fetched them) it fails instead.
//!
//! The terminal tests run janus on a pseudo-terminal made by util-linux's `script`, as a user at
//! a terminal: raw mode for the run (keys reach the guest as typed, Ctrl-C included), the Ctrl-A
//! escape keys, and the terminal's settings (`stty -g`) the same after the run as before.

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

/// janus on a pseudo-terminal: `script` runs `stty -g; janus ARGS; echo status=$?; stty -g` with
/// the pty as the controlling terminal (so a Ctrl-C that the terminal turned into SIGINT would
/// reach janus); the test types into `script`'s stdin and reads the terminal's output.
struct OnPty {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    rx: mpsc::Receiver<Vec<u8>>,
    out: Vec<u8>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl OnPty {
    fn start(args: &[&str]) -> Option<OnPty> {
        if Command::new("script").arg("--version").output().is_err() {
            if std::env::var("JANUS_REQUIRE_PTY").as_deref() == Ok("1") {
                panic!("`script` (util-linux) is required (JANUS_REQUIRE_PTY=1)");
            }
            eprintln!("!!!! SKIPPED: no `script` (util-linux) to make a pty; did NOT run !!!!");
            return None;
        }
        let janus = env!("CARGO_BIN_EXE_janus");
        let cmd = format!(
            "stty -g; {janus} {}; echo status=$?; stty -g",
            args.join(" ")
        );
        let mut child = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script starts");
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
        let stdin = child.stdin.take().expect("piped");
        Some(OnPty {
            child,
            stdin,
            rx,
            out: Vec::new(),
            reader: Some(reader),
        })
    }

    fn wait_for(&mut self, needle: &str, deadline: Instant) {
        wait_for(&self.rx, &mut self.out, needle, deadline);
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.stdin.write_all(keys).expect("type");
        self.stdin.flush().expect("flush");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Waits for the end, then checks that the terminal's settings are those from before.
    fn finish(mut self, deadline: Instant) -> String {
        self.wait_for("status=", deadline);
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        while let Ok(chunk) = self.rx.try_recv() {
            self.out.extend(chunk);
        }
        let text = self.text();
        let settings: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.len() > 40 && l.split(':').count() > 30)
            .collect();
        assert_eq!(settings.len(), 2, "two stty -g lines expected:\n{text}");
        assert_eq!(
            settings[0], settings[1],
            "terminal settings not restored:\n{text}"
        );
        text
    }
}

fn roms() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-roms")
}

#[test]
fn raw_terminal_and_ctrl_a_keys_with_a_test_rom() {
    let rom = roms().join("echo.bin");
    let rom = rom.to_str().unwrap();
    let Some(mut t) = OnPty::start(&["run", rom, "--accel", "jit", "--timeout", "120"]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(100);
    t.wait_for("type keys, q ends", deadline);
    // Raw mode: one key arrives without a newline, Ctrl-C reaches the guest as a byte (in
    // cooked mode the first would wait for Enter and the second would kill janus with SIGINT).
    t.type_keys(b"a");
    t.wait_for("<61>", deadline);
    t.type_keys(b"\x03");
    t.wait_for("<03>", deadline);
    // Ctrl-A Ctrl-A sends one Ctrl-A; Ctrl-A h lists the keys; Ctrl-A s prints the stats.
    t.type_keys(b"\x01\x01");
    t.wait_for("<01>", deadline);
    t.type_keys(b"\x01h");
    t.wait_for("Ctrl-A x       quit", deadline);
    t.type_keys(b"\x01s");
    t.wait_for("janus stats so far (jit backend)", deadline);
    // The vCPU's counters so far: echo.bin polls the UART's line status register.
    t.wait_for("io-in ", deadline);
    t.wait_for("instructions ", deadline);
    t.wait_for("serial bytes out", deadline);
    // Ctrl-A x quits with the stop report and status 0.
    t.type_keys(b"\x01x");
    let text = t.finish(deadline);
    assert!(
        text.contains("quit from the console (Ctrl-A x); guest stopped"),
        "{text}"
    );
    assert!(text.contains("janus: vCPU 0: running at"), "{text}");
    assert!(text.contains("status=0"), "{text}");
    // The escapes themselves never reached the guest.
    assert!(!text.contains("<78>") && !text.contains("<68>"), "{text}");
}

#[test]
fn ctrl_c_interrupts_the_guest_shell_on_a_terminal() {
    let test = "ctrl_c_interrupts_the_guest_shell_on_a_terminal";
    let (kernel, initrd) = (assets().join("vmlinux"), assets().join("initramfs.cpio.gz"));
    if !kernel.exists() || !initrd.exists() {
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("{test}: the Linux assets are required (JANUS_REQUIRE_LINUX=1)");
        }
        eprintln!("!!!! SKIPPED {test}: no Linux assets; this test did NOT run !!!!");
        return;
    }
    // An initramfs built before its shell got a controlling terminal cannot pass this test.
    let init = std::fs::read_to_string(assets().join("init")).unwrap_or_default();
    if !init.contains("cttyhack") {
        let why = "the initramfs predates `setsid cttyhack sh`: run tests/linux/fetch-assets.sh \
                   (it rebuilds the initramfs alone)";
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("{test}: {why}");
        }
        eprintln!("!!!! SKIPPED {test}: {why}; this test did NOT run !!!!");
        return;
    }
    let (kernel, initrd) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let Some(mut t) = OnPty::start(&[
        "run",
        "--accel",
        "jit",
        "--mem",
        "256M",
        "--timeout",
        "600",
        "--kernel",
        kernel,
        "--initrd",
        initrd,
        "--append",
        "'console=ttyS0 quiet janus.shell'",
    ]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(540);
    t.wait_for("JANUS-SHELL", deadline);
    t.wait_for("# ", deadline);
    // A foreground program, then Ctrl-C: the guest's tty turns the byte into its own SIGINT.
    t.type_keys(b"sleep 100\r");
    t.wait_for("sleep 100", deadline);
    std::thread::sleep(Duration::from_secs(2));
    let typed = Instant::now();
    let before = t.out.len();
    t.type_keys(b"\x03");
    // The shell's next prompt (typing ahead would have the tty echo the line twice: once as
    // typed, once as the shell's line editor redraws it).
    while !String::from_utf8_lossy(&t.out[before..]).contains("# ") {
        let left = deadline.saturating_duration_since(Instant::now());
        match t.rx.recv_timeout(left) {
            Ok(chunk) => t.out.extend(chunk),
            Err(_) => panic!("no prompt after Ctrl-C:\n{}", t.text()),
        }
    }
    t.type_keys(b"echo $((6*7))X\r");
    t.wait_for("42X", deadline);
    assert!(
        typed.elapsed() < Duration::from_secs(60),
        "the shell answered only after the sleep ended:\n{}",
        t.text()
    );
    // The guest echoes what is typed; the host terminal does not echo it a second time.
    assert_eq!(
        t.text().matches("echo $((6*7))X").count(),
        1,
        "{}",
        t.text()
    );
    t.type_keys(b"\x01x");
    let text = t.finish(deadline);
    assert!(text.contains("quit from the console (Ctrl-A x)"), "{text}");
    assert!(text.contains("status=0"), "{text}");
}

#[test]
fn terminal_is_restored_after_a_timeout_an_error_and_a_signal() {
    let lp = roms().join("loop.bin");
    let lp = lp.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(100);
    // --timeout: status 124.
    let Some(t) = OnPty::start(&["run", lp, "--accel", "jit", "--timeout", "1"]) else {
        return;
    };
    let text = t.finish(deadline);
    assert!(text.contains("status=124"), "{text}");
    // An error once the terminal is raw (KVM cannot be opened when the run starts): status 1.
    let Some(t) = OnPty::start(&["run", lp, "--accel", "kvm", "--kvm-device", "/nonexistent"])
    else {
        return;
    };
    let text = t.finish(deadline);
    assert!(text.contains("status=1"), "{text}");
    // SIGTERM from outside: status 143 with the stop report.
    let Some(mut t) = OnPty::start(&["run", lp, "--accel", "jit", "--timeout", "60"]) else {
        return;
    };
    t.wait_for("spinning forever", deadline);
    let janus = descendant_named(t.child.id(), "janus").expect("janus runs under script");
    // SAFETY: sending SIGTERM to a process this test started (through script and its shell).
    unsafe { libc::kill(janus, libc::SIGTERM) };
    let text = t.finish(deadline);
    assert!(text.contains("stopped by SIGTERM"), "{text}");
    assert!(text.contains("status=143"), "{text}");
}

/// The first process named `name` among the descendants of `root` (by /proc's parent links).
fn descendant_named(root: u32, name: &str) -> Option<i32> {
    let procs: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm.to_string()))
        })
        .collect();
    let mut family = vec![root as i32];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        for (pid, ppid, comm) in &procs {
            if *ppid == parent {
                if comm == name {
                    return Some(*pid);
                }
                family.push(*pid);
            }
        }
        i += 1;
    }
    None
}
