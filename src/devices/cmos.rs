//! CMOS RAM and the MC146818 real-time clock (ports 0x70 index, 0x71 data).
//!
//! Time and date registers read the host's time of day (UTC, as QEMU's default `-rtc base=utc`),
//! in BCD or binary and 24- or 12-hour form as status register B selects. The memory-size bytes
//! are filled the way PC firmware and QEMU fill them, so guests can size memory without a BIOS.
//! The periodic interrupt (status B PIE, rate in status A) raises IRQ 8 through
//! [`Cmos::attach_periodic`]; alarm and update interrupts are not modelled yet.

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use super::IrqLine;
use crate::bus::BusDevice;
use crate::clock::{Clock, Timer};

const REG_SECONDS: usize = 0x00;
const REG_MINUTES: usize = 0x02;
const REG_HOURS: usize = 0x04;
const REG_WEEKDAY: usize = 0x06;
const REG_DAY: usize = 0x07;
const REG_MONTH: usize = 0x08;
const REG_YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const REG_CENTURY: usize = 0x32;

const B_24H: u8 = 0x02;
const B_PIE: u8 = 0x40;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const B_BINARY: u8 = 0x04;

/// A calendar time, as the RTC shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-59.
    pub second: u32,
    /// 1 = Sunday ... 7 = Saturday, as the RTC counts.
    pub weekday: u32,
}

impl DateTime {
    /// The civil UTC date and time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Civil-from-days over 400-year eras (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday (RTC weekday 5).
            weekday: ((days + 4).rem_euclid(7) + 1) as u32,
        }
    }
}

/// The CMOS/RTC.
#[derive(Debug)]
pub struct Cmos {
    index: u8,
    nmi_disabled: bool,
    ram: [u8; 128],
    /// Seconds added to the host clock (the guest set the time).
    offset: i64,
    now: fn() -> u64,
    periodic: Option<Periodic>,
}

/// The periodic-interrupt machinery: a clock timer and the IRQ 8 line.
struct Periodic {
    timer: Timer,
    irq: Arc<dyn IrqLine>,
    next: Option<u64>,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("next", &self.next)
            .finish()
    }
}

fn host_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0xf)
}

impl Cmos {
    /// A CMOS for a machine with `low_ram` bytes of RAM below 4 GiB and `high_ram` above.
    pub fn new(low_ram: u64, high_ram: u64) -> Self {
        Self::with_clock(low_ram, high_ram, host_now)
    }

    /// As [`Cmos::new`] with a chosen clock (seconds since the epoch), for tests.
    pub fn with_clock(low_ram: u64, high_ram: u64, now: fn() -> u64) -> Self {
        let mut ram = [0u8; 128];
        ram[REG_A] = 0x26;
        ram[REG_B] = B_24H;
        ram[REG_D] = 0x80;
        // Base memory: 640 KiB.
        ram[0x15] = (640u16 & 0xff) as u8;
        ram[0x16] = (640u16 >> 8) as u8;
        let ext_kib = (low_ram.saturating_sub(1 << 20) / 1024).min(0xffff) as u16;
        for lo in [0x17, 0x30] {
            ram[lo] = ext_kib as u8;
            ram[lo + 1] = (ext_kib >> 8) as u8;
        }
        let above16 = (low_ram.saturating_sub(16 << 20) / 65_536).min(0xffff) as u16;
        ram[0x34] = above16 as u8;
        ram[0x35] = (above16 >> 8) as u8;
        let above4g = (high_ram / 65_536).min(0xff_ffff) as u32;
        ram[0x5b] = above4g as u8;
        ram[0x5c] = (above4g >> 8) as u8;
        ram[0x5d] = (above4g >> 16) as u8;
        // Equipment byte: no floppy, math coprocessor absent, no display adapter of note.
        ram[0x14] = 0x00;
        Cmos {
            index: 0,
            nmi_disabled: false,
            ram,
            offset: 0,
            now,
            periodic: None,
        }
    }

    /// Wires the periodic interrupt to `irq`, timed by `clock`.
    pub fn attach_periodic(&mut self, clock: &Clock, irq: Arc<dyn IrqLine>) {
        self.periodic = Some(Periodic {
            timer: clock.timer("rtc"),
            irq,
            next: None,
        });
        self.rearm();
    }

    /// The periodic rate from status A as a period in ns, if enabled.
    fn period_ns(&self) -> Option<u64> {
        // Only armed while interrupts are enabled, so an idle RTC costs no host wake-ups.
        if self.ram[REG_B] & B_PIE == 0 {
            return None;
        }
        let rate = u32::from(self.ram[REG_A] & 0x0f);
        match rate {
            0 => None,
            1 | 2 => Some((1u64 << (rate + 6)) * 1_000_000_000 / 32_768),
            r => Some((1u64 << (r - 1)) * 1_000_000_000 / 32_768),
        }
    }

    fn rearm(&mut self) {
        let period = self.period_ns();
        let Some(p) = self.periodic.as_mut() else {
            return;
        };
        match period {
            Some(ns) => {
                let next = p.timer.clock().now_ns() + ns;
                p.next = Some(next);
                p.timer.set_deadline(next);
            }
            None => {
                p.next = None;
                p.timer.clear();
            }
        }
    }

    /// Fires the periodic interrupt if its time has come (called by the machine's timer
    /// thread).
    pub fn poll(&mut self) {
        let Some(p) = self.periodic.as_ref() else {
            return;
        };
        let Some(next) = p.next else { return };
        if p.timer.clock().now_ns() < next {
            return;
        }
        self.ram[REG_C] |= C_PF | C_IRQF;
        if let Some(p) = &self.periodic {
            p.irq.set_level(true);
        }
        self.rearm();
    }

    fn now(&self) -> DateTime {
        DateTime::from_unix(((self.now)() as i64 + self.offset).max(0) as u64)
    }

    fn encode(&self, v: u32) -> u8 {
        if self.ram[REG_B] & B_BINARY != 0 {
            v as u8
        } else {
            bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.ram[REG_B] & B_BINARY != 0 {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, h: u32) -> u8 {
        if self.ram[REG_B] & B_24H != 0 {
            self.encode(h)
        } else {
            let pm = if h >= 12 { 0x80 } else { 0 };
            let h12 = match h % 12 {
                0 => 12,
                x => x,
            };
            self.encode(h12) | pm
        }
    }

    /// Reads a CMOS register.
    pub fn read_reg(&mut self, reg: usize) -> u8 {
        let t = self.now();
        match reg {
            REG_SECONDS => self.encode(t.second),
            REG_MINUTES => self.encode(t.minute),
            REG_HOURS => self.encode_hour(t.hour),
            REG_WEEKDAY => self.encode(t.weekday),
            REG_DAY => self.encode(t.day),
            REG_MONTH => self.encode(t.month),
            REG_YEAR => self.encode(t.year % 100),
            REG_CENTURY => self.encode(t.year / 100),
            REG_C => {
                let v = std::mem::take(&mut self.ram[REG_C]);
                if v & C_IRQF != 0
                    && let Some(p) = &self.periodic
                {
                    p.irq.set_level(false);
                }
                v
            }
            _ => self.ram[reg & 0x7f],
        }
    }

    /// Writes a CMOS register. Writes to the time registers move the guest's clock.
    pub fn write_reg(&mut self, reg: usize, v: u8) {
        let t = self.now();
        let set = |field: u32, new: u32, unit: i64| (i64::from(new) - i64::from(field)) * unit;
        match reg {
            REG_SECONDS => self.offset += set(t.second, self.decode(v), 1),
            REG_MINUTES => self.offset += set(t.minute, self.decode(v), 60),
            REG_HOURS => {
                let h = if self.ram[REG_B] & B_24H != 0 {
                    self.decode(v)
                } else {
                    self.decode(v & 0x7f) % 12 + if v & 0x80 != 0 { 12 } else { 0 }
                };
                self.offset += set(t.hour, h, 3600);
            }
            REG_DAY => self.offset += set(t.day, self.decode(v), 86_400),
            REG_C | REG_D => {} // read-only
            REG_B => {
                self.ram[REG_B] = v;
                self.rearm();
            }
            REG_A => {
                self.ram[REG_A] = v & 0x7f; // UIP is read-only
                self.rearm();
            }
            _ => self.ram[reg & 0x7f] = v,
        }
    }
}

impl BusDevice for Cmos {
    fn label(&self) -> &str {
        "cmos-rtc"
    }
    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        let v = if offset == 0 {
            0xff // the index port is write-only
        } else {
            self.read_reg(usize::from(self.index))
        };
        data.fill(0xff);
        data[0] = v;
    }
    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        if offset == 0 {
            self.index = data[0] & 0x7f;
            self.nmi_disabled = data[0] & 0x80 != 0;
        } else {
            self.write_reg(usize::from(self.index), data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-26 09:15:43 UTC, a Thursday.
    fn fixed() -> u64 {
        1_795_684_543
    }

    fn rd(c: &mut Cmos, reg: u8) -> u8 {
        c.write(0, 0, &[reg]);
        let mut b = [0];
        c.read(0, 1, &mut b);
        b[0]
    }

    #[test]
    fn civil_date_from_unix() {
        let t = DateTime::from_unix(fixed());
        assert_eq!((t.year, t.month, t.day), (2026, 11, 26));
        assert_eq!((t.hour, t.minute, t.second), (9, 15, 43));
        assert_eq!(t.weekday, 5);
        assert_eq!(DateTime::from_unix(951_782_400).month, 2); // 2000-02-29
        assert_eq!(DateTime::from_unix(951_782_400).day, 29);
    }

    #[test]
    fn time_registers_in_bcd_then_binary_then_12h() {
        let mut c = Cmos::with_clock(64 << 20, 0, fixed);
        assert_eq!(rd(&mut c, 0x00), 0x43);
        assert_eq!(rd(&mut c, 0x04), 0x09);
        assert_eq!(rd(&mut c, 0x09), 0x26);
        assert_eq!(rd(&mut c, 0x32), 0x20);
        assert_eq!(rd(&mut c, 0x08), 0x11);
        c.write(0, 0, &[0x0b]);
        c.write(0, 1, &[B_24H | B_BINARY]);
        assert_eq!(rd(&mut c, 0x00), 43);
        c.write(0, 0, &[0x0b]);
        c.write(0, 1, &[0]);
        assert_eq!(rd(&mut c, 0x04), 0x09); // 9 AM in 12-hour BCD
    }

    #[test]
    fn status_and_memory_registers() {
        let mut c = Cmos::with_clock(64 << 20, 1 << 30, fixed);
        assert_eq!(rd(&mut c, 0x0d), 0x80);
        assert_eq!(
            u16::from(rd(&mut c, 0x15)) | u16::from(rd(&mut c, 0x16)) << 8,
            640
        );
        let ext = u16::from(rd(&mut c, 0x30)) | u16::from(rd(&mut c, 0x31)) << 8;
        assert_eq!(ext, 63 * 1024);
        let above16 = u16::from(rd(&mut c, 0x34)) | u16::from(rd(&mut c, 0x35)) << 8;
        assert_eq!(u64::from(above16) * 65_536, 48 << 20);
        assert_eq!(rd(&mut c, 0x5c), 0x40); // 1 GiB / 64 KiB = 0x4000
    }

    #[test]
    fn nmi_bit_is_not_part_of_the_index_and_setting_time_moves_clock() {
        let mut c = Cmos::with_clock(64 << 20, 0, fixed);
        assert_eq!(rd(&mut c, 0x80 | 0x0d), 0x80);
        c.write(0, 0, &[0x02]);
        c.write(0, 1, &[0x30]); // minutes := 30
        assert_eq!(rd(&mut c, 0x02), 0x30);
        assert_eq!(rd(&mut c, 0x04), 0x09);
        // The index port reads as all ones; unused registers are plain RAM.
        let mut b = [0];
        c.read(0, 0, &mut b);
        assert_eq!(b[0], 0xff);
        c.write(0, 0, &[0x40]);
        c.write(0, 1, &[0x99]);
        assert_eq!(rd(&mut c, 0x40), 0x99);
    }
}
