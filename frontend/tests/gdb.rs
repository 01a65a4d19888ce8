//! The gdbstub driven by Debian's gdb in batch mode, on every backend: janus starts with
//! `-S --gdb tcp::PORT` on test-roms/gdb.bin; gdb disassembles its real-mode start (the i8086
//! description), breaks in long mode, reconnects (the x86-64 description), reads registers
//! (general, x87, SSE, control) and memory (through the page tables' high alias), steps,
//! writes a register and memory that the guest then checks, sets a hardware breakpoint and
//! continues to the end. Also: Ctrl-C from gdb stops a running guest and `detach` leaves it
//! running; a dropped connection keeps the guest for the next debugger, with no hang or
//! crash; bad `--gdb` input is one error line; and the Linux kernel to start_kernel.
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
        let target = format!("target remote 127.0.0.1:{port}");
        let gdb = spawn_gdb(
            port,
            &[
                // Real mode: gdb gets the i8086 description (32-bit registers).
                "info registers eip",
                "monitor mode",
                "x/3i $pc",
                "break *0x8c00",
                "continue",
                // Now in long mode: a new connection gets the x86-64 description.
                "disconnect",
                &target,
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
                "eip            0x7c00",
                "vCPU 0: real mode, cs:rip 0000:7c00",
                "set architecture i8086",
                "xor    %ax,%ax", // 16-bit disassembly (31 c0)
                "Breakpoint 1, 0x00008c00 in ?? ()",
                "0x0000000000008c00 in ?? ()",
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
        // Real mode: the i8086 description, with 32-bit registers.
        let gdb = spawn_gdb(port, &["continue", "info registers eip", "detach"]);
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
                "eip            0x800d",
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
fn a_dropped_connection_keeps_the_guest_for_the_next_debugger() {
    // -S holds the guest; a client that connects, sends half a packet and vanishes leaves it
    // held; the next debugger detaches, which lets it run: gdb.bin then runs without its
    // debugger and fails its check 1 (exit status 1), promptly.
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
    std::thread::sleep(Duration::from_millis(300));
    let mut janus = janus;
    assert!(janus.child.try_wait().unwrap().is_none(), "still held");
    if gdb_or_skip("a_dropped_connection_keeps_the_guest_for_the_next_debugger") {
        let out = gdb_output(spawn_gdb(port, &["detach"]), Duration::from_secs(60));
        assert!(out.contains("detached"), "{out}");
    } else {
        let _ = janus.child.kill();
        return;
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

/// Where `kallsyms` in a vmlinux says `name` (e.g. "Tstart_kernel": type letter and name) is.
/// Debian's vmlinux has no ELF symbol table (its System.map is a stub too), so the test reads
/// the kernel's own compressed symbol table (CONFIG_KALLSYMS with base-relative offsets, as
/// scripts/kallsyms lays it out: offsets, relative base, count, names, markers, token table,
/// token index, each 8-aligned). Finds the token table by its run of one-digit tokens "0".."9"
/// (token i is the character i where that character occurs in symbols).
fn kallsyms_lookup(vmlinux: &[u8], name: &str) -> Option<u64> {
    let u16_at = |p: usize| u16::from_le_bytes([vmlinux[p], vmlinux[p + 1]]);
    let u32_at = |p: usize| u32::from_le_bytes(vmlinux[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| u64::from_le_bytes(vmlinux[p..p + 8].try_into().unwrap());
    let digits: Vec<u8> = (b'0'..=b'9').flat_map(|c| [c, 0]).collect();
    let mut tokens = None;
    for p in vmlinux
        .windows(digits.len())
        .enumerate()
        .filter(|(_, w)| *w == digits.as_slice())
        .map(|(p, _)| p)
    {
        // Back over the 0x30 tokens before "0", then forward over all 256.
        let mut start = p;
        let mut ok = true;
        for _ in 0..0x30 {
            if start < 2 || vmlinux[start - 1] != 0 || vmlinux[start - 2] == 0 {
                ok = false;
                break;
            }
            start -= 2;
            while start > 0 && vmlinux[start - 1] != 0 {
                start -= 1;
            }
        }
        if !ok {
            continue;
        }
        let mut table = Vec::with_capacity(256);
        let mut r = start;
        for _ in 0..256 {
            let end = r + vmlinux[r..].iter().position(|&b| b == 0)?;
            table.push(&vmlinux[r..end]);
            r = end + 1;
        }
        let index = (r + 7) & !7;
        if u16_at(index) == 0 && usize::from(u16_at(index + 2 * 0x30)) == p - start {
            tokens = Some((start, table));
            break;
        }
    }
    let (table_at, table) = tokens?;
    // The relative base (a kernel text address), the symbol count, then the names.
    let mut x = table_at & !7;
    let lowest = table_at.saturating_sub(32 << 20);
    while x > lowest {
        x -= 8;
        let base = u64_at(x);
        let n = u32_at(x + 8) as usize;
        if !(0xffff_ffff_8000_0000..0xffff_ffff_c000_0000).contains(&base)
            || !(1000..=2_000_000).contains(&n)
            || u32_at(x + 12) != 0
        {
            continue;
        }
        let mut pos = x + 16;
        let mut found = None;
        let mut whole = true;
        for i in 0..n {
            let Some(&b0) = vmlinux.get(pos) else {
                whole = false;
                break;
            };
            let mut len = usize::from(b0);
            pos += 1;
            if len & 0x80 != 0 {
                len = (len & 0x7f) | usize::from(vmlinux[pos]) << 7;
                pos += 1;
            }
            if pos + len >= table_at {
                whole = false;
                break;
            }
            let s: Vec<u8> = vmlinux[pos..pos + len]
                .iter()
                .flat_map(|&t| table[usize::from(t)].iter().copied())
                .collect();
            if s == name.as_bytes() {
                found = Some(i);
            }
            pos += len;
        }
        // The markers follow the names; the first is 0.
        if !whole || u32_at((pos + 7) & !7) != 0 {
            continue;
        }
        let i = found?;
        let offsets = x - 4 * n - if n % 2 == 1 { 4 } else { 0 };
        let off = u32_at(offsets + 4 * i) as i32;
        // x86-64 has absolute per-CPU symbols: a non-negative offset is an absolute value (a
        // per-CPU offset), a negative one an address relative to the base, as -1 - offset.
        return Some(if off >= 0 {
            off as u64
        } else {
            base.wrapping_sub(1).wrapping_sub(i64::from(off) as u64)
        });
    }
    None
}

/// The PVH vmlinux under gdb on the JIT: from the PVH entry (32-bit protected mode, the i386
/// description) to startup_64 (64-bit), a new connection (x86-64), `break` at start_kernel
/// (by its kallsyms address), continue to there, read registers and memory,
/// step into start_kernel's first call, then run on at full speed to the initramfs's /init,
/// which reboots: gdb sees the exit. KVM is not run here: on kvm_pvm the kernel's ring-0 code
/// runs in KVM's instruction emulator (about 2 MIPS), minutes for this boot.
#[test]
fn gdb_breaks_at_start_kernel_of_the_pvh_vmlinux_on_the_jit() {
    let test = "gdb_breaks_at_start_kernel_of_the_pvh_vmlinux_on_the_jit";
    if !gdb_or_skip(test) {
        return;
    }
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/linux/assets");
    let (vmlinux, initrd) = (assets.join("vmlinux"), assets.join("initramfs.cpio.gz"));
    let Ok(image) = std::fs::read(&vmlinux) else {
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("{test}: the Linux assets are required (JANUS_REQUIRE_LINUX=1)");
        }
        eprintln!(
            "!!!! SKIPPED {test}: no {}; run tests/linux/fetch-assets.sh; this test did NOT run !!!!",
            vmlinux.display()
        );
        return;
    };
    let start_kernel = kallsyms_lookup(&image, "Tstart_kernel").expect("start_kernel in kallsyms");
    // The PVH entry code jumps to startup_64 by its physical address, in 64-bit mode.
    let startup_64 = kallsyms_lookup(&image, "Tstartup_64").expect("startup_64 in kallsyms")
        - 0xffff_ffff_8000_0000;
    drop(image);
    let t = Instant::now();
    let port = free_port();
    let serial = std::env::temp_dir().join(format!("janus-gdb-linux-{}", std::process::id()));
    let janus = Janus::start(&[
        "--accel",
        "jit",
        "-m",
        "256M",
        "-S",
        "--gdb",
        &format!("tcp::{port}"),
        "--serial",
        &format!("file:{}", serial.display()),
        "--kernel",
        vmlinux.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--append",
        "console=ttyS0 earlyprintk=serial,ttyS0",
    ]);
    let bp = format!("break *{start_kernel:#x}");
    let bp64 = format!("break *{startup_64:#x}");
    let code = format!("x/5xb {start_kernel:#x}");
    let target = format!("target remote 127.0.0.1:{port}");
    let gdb = spawn_gdb(
        port,
        &[
            // The PVH entry is 32-bit code: gdb gets the i386 description, and stops where
            // the kernel enters 64-bit code; a new connection then gets x86-64.
            "monitor mode",
            "info registers eip",
            &bp64,
            "continue",
            "monitor mode",
            "delete",
            "disconnect",
            &target,
            &bp,
            "continue",
            "info registers rip",
            "monitor mode",
            &code,
            "stepi",
            "info registers rip",
            "delete",
            "continue",
        ],
    );
    let out = gdb_output(gdb, Duration::from_secs(180));
    let (status, err) = janus.wait(Duration::from_secs(30));
    let serial_out = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_file(&serial);
    let what = format!("janus said:\n{err}");
    let rip = format!("rip            {start_kernel:#x}");
    expect_all(
        &what,
        &out,
        &[
            "prot32 mode",
            "set architecture i386",
            &format!("Breakpoint 1, {startup_64:#010x} in ?? ()"),
            &format!(":{startup_64:x}, linear {startup_64:#x}; gdb: set architecture i386:x86-64"),
            &format!("Breakpoint 2, {start_kernel:#018x} in ?? ()"),
            &rip,
            "long64 mode",
            "[Inferior 1 (process 1) exited with code 0162]", // 114: the reboot
        ],
    );
    // The first instruction of start_kernel as gdb read it; stepi lands where it says.
    let bytes: Vec<u8> = out
        .lines()
        .find(|l| l.starts_with(&format!("{start_kernel:#x}:")))
        .expect("the code bytes")
        .split_whitespace()
        .skip(1)
        .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap())
        .collect();
    let after = out
        .lines()
        .filter(|l| l.starts_with("rip "))
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .expect("rip after stepi");
    let want = match bytes[0] {
        // call rel32
        0xe8 => {
            let rel = i32::from_le_bytes(bytes[1..5].try_into().unwrap());
            (start_kernel + 5).wrapping_add(rel as i64 as u64)
        }
        // endbr64 (f3 0f 1e fa) or a 1-byte push: just past it.
        0xf3 => start_kernel + 4,
        _ => start_kernel + 1,
    };
    assert_eq!(after, want, "stepi from start_kernel: {bytes:02x?}\n{out}");
    assert!(serial_out.contains("Linux version"), "{what}");
    assert!(serial_out.contains("JANUS-INIT-OK"), "{what}\n{serial_out}");
    assert_eq!(status.and_then(|s| s.code()), Some(114), "{what}");
    eprintln!("{test}: {:.2} s", t.elapsed().as_secs_f64());
}
