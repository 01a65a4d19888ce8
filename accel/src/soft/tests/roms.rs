//! Runs the guest test programs of test-roms/ on the software CPU (ignored by default: those
//! programs change under other hands). `cargo test -p janus-accel soft::tests::roms -- --ignored
//! --nocapture` prints each program's serial output and exit byte.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::*;

/// A minimal board: COM1 output with THRE always set, debug exit at 0xf4, POST port echo.
#[derive(Default)]
struct Board {
    serial: Mutex<Vec<u8>>,
    exit: Mutex<Option<u8>>,
    post: AtomicU8,
}

impl IoHandler for Board {
    fn pio_read(&self, _: usize, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            0x3fd => data[0] = 0x60,
            0x80 => data[0] = self.post.load(Ordering::Relaxed),
            0xe9 => data[0] = 0xe9,
            _ => {}
        }
    }
    fn pio_write(&self, _: usize, port: u16, data: &[u8]) {
        match port {
            0x3f8 => self.serial.lock().unwrap().push(data[0]),
            0xf4 => *self.exit.lock().unwrap() = Some(data[0]),
            0x80 => self.post.store(data[0], Ordering::Relaxed),
            _ => {}
        }
    }
    fn mmio_read(&self, _: usize, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _: usize, _: u64, _: &[u8]) {}
}

fn run_rom(path: &std::path::Path) -> (Option<u8>, String, String) {
    let mut mem = GuestMemory::new();
    mem.add(0, 64 << 20, RegionKind::Ram).unwrap();
    mem.load(0x7c00, &std::fs::read(path).unwrap()).unwrap();
    let mut cpu = SoftAccel::new(mem, 1).create_vcpu(0).unwrap();
    let mut s = CpuState::boot_sector();
    s.gpr[4] = 0;
    cpu.set_state(&s).unwrap();
    let board = Board::default();
    let k = cpu.kicker();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let t = std::thread::spawn(move || {
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if d2.load(Ordering::Relaxed) {
                return;
            }
        }
        k.kick();
    });
    // The programs end with HLT after writing the exit port.
    let last = match cpu.run(&board).unwrap() {
        Exit::Halt => "halt".to_string(),
        Exit::Stopped => "timeout".to_string(),
        e => format!("{e:?}"),
    };
    done.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let out = String::from_utf8_lossy(&board.serial.lock().unwrap()).into_owned();
    let x = *board.exit.lock().unwrap();
    (x, out, last)
}

#[test]
#[ignore]
fn test_roms() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-roms");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    names.sort();
    for p in names {
        let (x, out, last) = run_rom(&p);
        println!("==== {} exit={x:?} {last}", p.display());
        println!("{out}");
    }
}
