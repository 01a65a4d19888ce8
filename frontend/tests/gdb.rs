//! The gdbstub driven by Debian's gdb in batch mode, on every backend: janus starts with
//! `-S --gdb tcp::PORT` on test-roms/gdb.bin and gdb breaks, reads registers (general, x87,
//! SSE, control) and memory (through the page tables' high alias), steps, writes a register
//! and memory that the guest then checks, sets a hardware breakpoint and continues to the
//! end. Also: Ctrl-C from gdb stops a running guest and `detach` leaves it running; a dropped
//! connection neither hangs nor crashes janus; bad `--gdb` input is one error line.
//!
//! Without gdb the tests skip loudly; under JANUS_REQUIRE_GDB=1 (CI) they fail instead.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn roms() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-roms")
}

fn gdb_or_skip(test: &str) -> bool {
    let ok = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("JANUS_REQUIRE_GDB").as_deref() == Ok("1") {
            panic!("{test}: gdb is required (JANUS_REQUIRE_GDB=1) but not installed");
        }
        eprintln!("!!!! SKIPPED {test}: gdb is not installed; this test did NOT run !!!!");
    }
    ok
}

fn backends(test: &str) -> Vec<&'static str> {
    let mut v = vec!["interp", "jit"];
    if janus_accel::kvm::probe("/dev/kvm".as_ref()).is_ok() {
        v.push("kvm");
    } else if std::env::var("JANUS_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{test}: KVM is required (JANUS_REQUIRE_KVM=1) but unavailable");
    } else {
        eprintln!("!!!! {test}: KVM unavailable; not run on KVM !!!!");
    }
    v
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running janus and what it has written on stderr so far.
struct Janus {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Janus {
    /// Starts `janus run ARGS` and waits until it listens for gdb.
    fn start(args: &[&str]) -> Janus {
        let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("janus starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let j = Janus { child, stderr };
        let t = Instant::now();
        while !j.err().contains("gdb on ") && !j.err().contains("gdb can connect on ") {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "janus does not listen: {}",
                j.err()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        j
    }

    fn err(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for janus to exit (killing it after that).
    fn wait(mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (Some(s), self.err());
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (None, self.err());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts gdb in batch mode on `port` with `commands`.
fn spawn_gdb(port: u16, commands: &[&str]) -> Child {
    let mut c = Command::new("gdb");
    c.args(["-batch", "-nx", "-ex", "set pagination off"]);
    c.args(["-ex", &format!("target remote 127.0.0.1:{port}")]);
    for cmd in commands {
        c.args(["-ex", cmd]);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdb starts")
}

/// gdb's output once it finishes (killed after `timeout`).
fn gdb_output(mut gdb: Child, timeout: Duration) -> String {
    let t = Instant::now();
    while gdb.try_wait().unwrap().is_none() {
        if t.elapsed() > timeout {
            let _ = gdb.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = gdb.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn expect_all(what: &str, out: &str, wants: &[&str]) {
    for w in wants {
        assert!(
            out.contains(w),
            "{what}: {w:?} missing from gdb's output:\n{out}"
        );
    }
}

#[test]
fn gdb_breaks_reads_steps_writes_and_continues_on_every_backend() {
    let test = "gdb_breaks_reads_steps_writes_and_continues_on_every_backend";
    if !gdb_or_skip(test) {
        return;
    }
    let rom = roms().join("gdb.bin");
    for accel in backends(test) {
        let t = Instant::now();
        let port = free_port();
        let serial = std::env::temp_dir().join(format!("janus-gdb-{}-{accel}", std::process::id()));
        let janus = Janus::start(&[
            "--accel",
            accel,
            "-S",
            "--gdb",
            &format!("tcp::{port}"),
            "--serial",
            &format!("file:{}", serial.display()),
            rom.to_str().unwrap(),
        ]);
        let gdb = spawn_gdb(
            port,
            &[
                "info registers rip",
                "monitor mode",
                "break *0x8c00",
                "continue",
                "info registers rip",
                "p/x $rbx",
                "x/gx 0x8e00",
                "x/gx 0xffffff8000008e00",
                "stepi",
                "p/x $rcx",
                "p $xmm1.v2_int64[0]",
                "p $st0",
                "p/x $cr3",
                "p/x $efer",
                "p/x $cs",
                "monitor mode",
                // The guest checks these two: only a debugger can have written them.
                "set var $rsi = 0x5a5a",
                "set {long}0xffffff8000008e08 = 77",
                "delete",
                "hbreak *0x8c10",
                "continue",
                "p/x $rcx",
                "delete",
                "continue",
            ],
        );
        let out = gdb_output(gdb, Duration::from_secs(120));
        let (status, err) = janus.wait(Duration::from_secs(30));
        let serial_out = std::fs::read_to_string(&serial).unwrap_or_default();
        let _ = std::fs::remove_file(&serial);
        let what = format!("{accel}; janus said:\n{err}");
        expect_all(
            &what,
            &out,
            &[
                "rip            0x7c00",
                "vCPU 0: real mode, cs:rip 0000:7c00",
                "set architecture i8086",
                "Breakpoint 1, 0x0000000000008c00 in ?? ()",
                "rip            0x8c00",
                "= 0x1122334455667788",
                "0x8e00:\t0xfeedfacecafebeef",
                "0xffffff8000008e00:\t0xfeedfacecafebeef",
                "0x0000000000008c05 in ?? ()",
                "= 0x1234\n",
                "= 81985529216486895\n", // 0x0123456789abcdef
                "= 1\n",
                "= 0x90000\n",
                "= 0x500\n", // EFER.LME | LMA
                "= 0x18\n",
                "vCPU 0: long64 mode",
                "Hardware assisted breakpoint 2 at 0x8c10",
                "Breakpoint 2, 0x0000000000008c10 in ?? ()",
                "= 0x1235\n",
                "[Inferior 1 (process 1) exited normally]",
            ],
        );
        assert!(
            serial_out.contains("gdb: PASS"),
            "{what}\nserial:\n{serial_out}"
        );
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{what}");
        eprintln!("{test}: {accel}: {:.2} s", t.elapsed().as_secs_f64());
    }
}

#[test]
fn ctrl_c_in_gdb_stops_a_running_guest_and_detach_lets_it_run() {
    let test = "ctrl_c_in_gdb_stops_a_running_guest_and_detach_lets_it_run";
    if !gdb_or_skip(test) {
        return;
    }
    // loop.bin spins at `jmp $` (0x800d) with interrupts off.
    let rom = roms().join("loop.bin");
    for accel in backends(test) {
        let port = free_port();
        let janus = Janus::start(&[
            "--accel",
            accel,
            "--gdb",
            &format!("tcp::{port}"),
            "--serial",
            "none",
            rom.to_str().unwrap(),
        ]);
        let gdb = spawn_gdb(port, &["continue", "info registers rip", "detach"]);
        // gdb is in `continue`: a SIGINT makes it send Ctrl-C to the stub.
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: kill(2) on the pid of a child this test started; no memory is involved.
        unsafe {
            libc::kill(gdb.id() as libc::pid_t, libc::SIGINT);
        }
        let out = gdb_output(gdb, Duration::from_secs(60));
        let what = format!("{accel}; janus said:\n{}", janus.err());
        expect_all(
            &what,
            &out,
            &[
                "Program received signal SIGINT",
                "rip            0x800d",
                "[Inferior 1 (process 1) detached]",
            ],
        );
        // Detached: the guest runs on until janus is stopped.
        std::thread::sleep(Duration::from_millis(300));
        let mut janus = janus;
        assert!(janus.child.try_wait().unwrap().is_none(), "{what}");
        // SAFETY: as above, on janus's pid.
        unsafe {
            libc::kill(janus.child.id() as libc::pid_t, libc::SIGINT);
        }
        let (status, err) = janus.wait(Duration::from_secs(30));
        assert_eq!(status.and_then(|s| s.code()), Some(130), "{accel}: {err}");
    }
}

#[test]
fn a_dropped_connection_leaves_the_guest_running() {
    // -S holds the guest; a client that connects and vanishes releases it: gdb.bin then runs
    // without its debugger and fails its check 1 (exit status 1), promptly.
    let port = free_port();
    let rom = roms().join("gdb.bin");
    let janus = Janus::start(&[
        "--accel",
        "interp",
        "-S",
        "--gdb",
        &format!("tcp::{port}"),
        "--serial",
        "none",
        rom.to_str().unwrap(),
    ]);
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"$qSupported:multiprocess+#c6");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, err) = janus.wait(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_gdb_options_are_one_error_line() {
    let rom = roms().join("hello.bin");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let in_use = format!("tcp::{port}");
    for (args, want) in [
        (vec!["--gdb", "1234"], "expected tcp::PORT"),
        (vec!["--gdb", "tcp::70000"], "expected tcp::PORT"),
        (vec!["--gdb", &in_use], "cannot listen on 127.0.0.1"),
        (vec!["-S"], "-S waits for a debugger"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_janus"))
            .arg("run")
            .args(&args)
            .arg(&rom)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
