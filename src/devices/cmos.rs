//! CMOS RAM and the MC146818 real-time clock (ports 0x70 index, 0x71 data).
//!
//! Time and date registers read the host's time of day (UTC, as QEMU's default `-rtc base=utc`),
//! in BCD or binary and 24- or 12-hour form as status register B selects. The memory-size bytes
//! are filled the way PC firmware and QEMU fill them, so guests can size memory without a BIOS.
//! Interrupts on IRQ 8, once [`Cmos::attach_periodic`] has wired the line and the machine clock:
//! the periodic interrupt (status B PIE, rate in status A), the update-ended interrupt (UIE,
//! once a second as the time registers advance) and the alarm (AIE, when seconds, minutes and
//! hours match the alarm registers 0x01/0x03/0x05, a value 0xC0-0xFF matching anything). Status
//! C holds the flags (IRQF, PF, AF, UF) until read. Status A's UIP reads 1 during the 244 us
//! before each update.
//!
//! Once attached, the clock runs from its base at attach time (whole seconds) plus the machine
//! clock, so under `--icount` seconds tick with retired instructions. The base ([`RtcBase`],
//! `--rtc base=`) is the host's time of day in UTC (the default, as QEMU's), in the host's
//! local time, or a fixed date; a fixed date makes an `--icount` run repeat exactly, so the
//! machine gives `--icount` runs [`RtcBase::DETERMINISTIC`] unless told otherwise.
//!
//! Simplified: PF, AF and UF are set only while their interrupt is enabled (a real MC146818
//! sets them regardless; keeping timers for disabled sources would cost host wake-ups); the
//! divider chain bits of status A other than the rate are ignored; SET (status B bit 7) stops
//! update and alarm interrupts but not the time itself.

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

const REG_SECONDS_ALARM: usize = 0x01;
const REG_MINUTES_ALARM: usize = 0x03;
const REG_HOURS_ALARM: usize = 0x05;

const A_UIP: u8 = 0x80;
const B_24H: u8 = 0x02;
const B_BINARY: u8 = 0x04;
const B_UIE: u8 = 0x10;
const B_AIE: u8 = 0x20;
const B_PIE: u8 = 0x40;
const B_SET: u8 = 0x80;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
/// How long before an update UIP reads 1 (244 us, as the MC146818 with a 32.768 kHz base).
const UIP_NS: u64 = 244_000;
const NS: u64 = 1_000_000_000;

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
    /// Seconds added to the base (the guest set the time).
    offset: i64,
    /// The time of day before the machine clock is attached (seconds since the epoch).
    now: fn() -> u64,
    /// A fixed base, which `now` does not give.
    fixed: Option<u64>,
    periodic: Option<Periodic>,
}

/// The interrupt machinery: clock timers for the periodic interrupt and for the once-a-second
/// update (which also checks the alarm), and the IRQ 8 line.
struct Periodic {
    timer: Timer,
    irq: Arc<dyn IrqLine>,
    next: Option<u64>,
    update_timer: Timer,
    next_update: Option<u64>,
    /// Host time of day (seconds since the epoch) when the clock read 0.
    base_secs: u64,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("next", &self.next)
            .field("next_update", &self.next_update)
            .finish()
    }
}

fn host_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The host's time of day in its local time zone, as seconds since the epoch would read if
/// local time were UTC (what an RTC kept in local time holds).
fn host_local_now() -> u64 {
    let now = host_now();
    let t = libc::time_t::try_from(now).unwrap_or(0);
    // SAFETY: an all-zero `tm` is a valid value of that plain C struct (integers and a
    // nullable pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `localtime_r` reads `t` and writes only `tm`, both ours and live for the call.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    let offset = if ok { tm.tm_gmtoff } else { 0 };
    now.saturating_add_signed(offset)
}

/// Where the RTC's time of day starts (`--rtc base=`, QEMU's spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcBase {
    /// The host's time of day in UTC.
    Utc,
    /// The host's time of day in its local time zone (as Windows guests expect).
    LocalTime,
    /// A fixed start, in seconds since 1970-01-01 00:00:00.
    At(u64),
}

impl RtcBase {
    /// The start of `--icount` runs that name no base: 2026-01-01 00:00:00, so that two runs
    /// read the same time of day.
    pub const DETERMINISTIC: RtcBase = RtcBase::At(1_767_225_600);

    /// Parses `utc`, `localtime`, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`.
    pub fn parse(s: &str) -> Result<RtcBase, String> {
        match s {
            "utc" => return Ok(RtcBase::Utc),
            "localtime" => return Ok(RtcBase::LocalTime),
            _ => {}
        }
        let bad = || {
            format!(
                "bad RTC base `{s}`: expected utc, localtime, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"
            )
        };
        let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
        let num = |v: &str, lo: i64, hi: i64| -> Result<i64, String> {
            let n: i64 = v.parse().map_err(|_| bad())?;
            if v.starts_with(['+', '-']) || !(lo..=hi).contains(&n) {
                return Err(bad());
            }
            Ok(n)
        };
        let d: Vec<&str> = date.split('-').collect();
        let t: Vec<&str> = time.split(':').collect();
        let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
            return Err(bad());
        };
        let (y, m, day) = (num(y, 1970, 9999)?, num(m, 1, 12)?, num(day, 1, 31)?);
        let (hh, mm, ss) = (num(hh, 0, 23)?, num(mm, 0, 59)?, num(ss, 0, 59)?);
        let days = days_from_civil(y, m, day);
        if DateTime::from_unix((days * 86_400) as u64).day != day as u32 {
            return Err(bad()); // 2026-02-30 and the like
        }
        Ok(RtcBase::At(
            (days * 86_400 + hh * 3600 + mm * 60 + ss) as u64,
        ))
    }
}

impl std::str::FromStr for RtcBase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RtcBase::parse(s)
    }
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d` (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
            fixed: None,
            periodic: None,
        }
    }

    /// As [`Cmos::new`], its time of day starting at `base`.
    pub fn with_base(low_ram: u64, high_ram: u64, base: RtcBase) -> Self {
        let mut c = match base {
            RtcBase::LocalTime => Self::with_clock(low_ram, high_ram, host_local_now),
            _ => Self::new(low_ram, high_ram),
        };
        if let RtcBase::At(t) = base {
            c.fixed = Some(t);
        }
        c
    }

    /// The base's time of day now (seconds since the epoch).
    fn wall(&self) -> u64 {
        self.fixed.unwrap_or_else(self.now)
    }

    /// Wires the RTC's interrupts to `irq`, timed by `clock`; from now on the time of day runs
    /// on `clock` too.
    pub fn attach_periodic(&mut self, clock: &Clock, irq: Arc<dyn IrqLine>) {
        self.periodic = Some(Periodic {
            timer: clock.timer("rtc"),
            irq,
            next: None,
            update_timer: clock.timer("rtc"),
            next_update: None,
            base_secs: self.wall().saturating_sub(clock.now_ns() / NS),
        });
        self.rearm();
    }

    /// The RTC's time in ns since the epoch.
    fn epoch_ns(&self) -> u64 {
        let (secs, frac) = match &self.periodic {
            Some(p) => {
                let t = p.timer.clock().now_ns();
                (p.base_secs + t / NS, t % NS)
            }
            None => (self.wall(), 0),
        };
        ((secs as i64 + self.offset).max(0) as u64) * NS + frac
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
        // The next update, while update or alarm interrupts are enabled.
        let b = self.ram[REG_B];
        let to_update =
            (b & (B_UIE | B_AIE) != 0 && b & B_SET == 0).then(|| NS - self.epoch_ns() % NS);
        let Some(p) = self.periodic.as_mut() else {
            return;
        };
        match to_update {
            Some(ns) => {
                let next = p.timer.clock().now_ns() + ns;
                p.next_update = Some(next);
                p.update_timer.set_deadline(next);
            }
            None => {
                p.next_update = None;
                p.update_timer.clear();
            }
        }
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

    /// Fires the periodic, update-ended and alarm interrupts whose time has come (called by the
    /// machine when the RTC's clock timers expire).
    pub fn poll(&mut self) {
        let Some(p) = self.periodic.as_ref() else {
            return;
        };
        let now = p.timer.clock().now_ns();
        let periodic_due = p.next.is_some_and(|n| now >= n);
        let update_due = p.next_update.is_some_and(|n| now >= n);
        if !periodic_due && !update_due {
            return;
        }
        let b = self.ram[REG_B];
        let mut flags = 0;
        if periodic_due {
            flags |= C_PF;
        }
        if update_due {
            if b & B_UIE != 0 {
                flags |= C_UF;
            }
            if b & B_AIE != 0 && self.alarm_matches() {
                flags |= C_AF;
            }
        }
        if flags != 0 {
            self.ram[REG_C] |= flags | C_IRQF;
            if let Some(p) = &self.periodic {
                p.irq.set_level(true);
            }
        }
        self.rearm();
    }

    /// Whether the time now matches the alarm registers (0xC0-0xFF: any value).
    fn alarm_matches(&self) -> bool {
        let t = self.now();
        let field = |reg: usize, now: u8| {
            let a = self.ram[reg];
            a >= 0xc0 || a == now
        };
        field(REG_SECONDS_ALARM, self.encode(t.second))
            && field(REG_MINUTES_ALARM, self.encode(t.minute))
            && field(REG_HOURS_ALARM, self.encode_hour(t.hour))
    }

    fn now(&self) -> DateTime {
        DateTime::from_unix(self.epoch_ns() / NS)
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
            REG_A if self.periodic.is_some() && self.epoch_ns() % NS >= NS - UIP_NS => {
                self.ram[REG_A] | A_UIP
            }
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

    #[test]
    fn rtc_bases_parse_as_qemu_spells_them() {
        assert_eq!(RtcBase::parse("utc"), Ok(RtcBase::Utc));
        assert_eq!(RtcBase::parse("localtime"), Ok(RtcBase::LocalTime));
        assert_eq!(
            RtcBase::parse("2026-11-26T09:15:43"),
            Ok(RtcBase::At(fixed()))
        );
        assert_eq!(RtcBase::parse("1970-01-01"), Ok(RtcBase::At(0)));
        assert_eq!(RtcBase::parse("2000-02-29"), Ok(RtcBase::At(951_782_400)));
        assert_eq!(
            RtcBase::DETERMINISTIC,
            RtcBase::parse("2026-01-01").unwrap()
        );
        for bad in [
            "",
            "now",
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "2026-1-1T25:00:00",
            "2026-01-01T00:00",
            "1969-12-31",
            "+2026-01-01",
            "2026-01-01T00:00:60",
        ] {
            assert!(RtcBase::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_fixed_base_starts_the_rtc_there_and_runs_on_the_machine_clock() {
        let clock = Clock::deterministic(1);
        let mut c = Cmos::with_base(64 << 20, 0, RtcBase::parse("2026-11-26T09:15:43").unwrap());
        c.attach_periodic(&clock, Arc::new(Line::default()));
        assert_eq!(
            (rd(&mut c, 0x04), rd(&mut c, 0x02), rd(&mut c, 0x00)),
            (0x09, 0x15, 0x43)
        );
        clock.advance_ns(61 * NS);
        assert_eq!((rd(&mut c, 0x02), rd(&mut c, 0x00)), (0x16, 0x44));
        // Two machines with the same base read the same time, whatever the host's.
        let mut d = Cmos::with_base(64 << 20, 0, RtcBase::DETERMINISTIC);
        d.attach_periodic(&Clock::deterministic(1), Arc::new(Line::default()));
        assert_eq!(
            (rd(&mut d, 0x09), rd(&mut d, 0x08), rd(&mut d, 0x07)),
            (0x26, 0x01, 0x01)
        );
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

    /// Records IRQ 8's level changes.
    #[derive(Default)]
    struct Line(std::sync::Mutex<Vec<bool>>);

    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.lock().unwrap().push(high);
        }
    }

    fn wr(c: &mut Cmos, reg: u8, v: u8) {
        c.write(0, 0, &[reg]);
        c.write(0, 1, &[v]);
    }

    fn attached() -> (Cmos, Clock, Arc<Line>) {
        let clock = Clock::deterministic(1);
        let line = Arc::new(Line::default());
        let mut c = Cmos::with_clock(64 << 20, 0, fixed);
        c.attach_periodic(&clock, line.clone());
        (c, clock, line)
    }

    #[test]
    fn update_ended_interrupt_once_a_second_with_uip_before_it() {
        let (mut c, clock, line) = attached();
        assert_eq!(clock.next_deadline(), None, "nothing armed while disabled");
        wr(&mut c, 0x0b, B_24H | B_UIE);
        assert_eq!(clock.next_deadline(), Some(NS));
        clock.advance_to(NS - 100_000);
        assert_eq!(rd(&mut c, 0x0a) & A_UIP, A_UIP);
        c.poll();
        assert!(line.0.lock().unwrap().is_empty(), "not yet");
        clock.advance_to(NS);
        assert_eq!(rd(&mut c, 0x0a) & A_UIP, 0);
        c.poll();
        assert_eq!(
            rd(&mut c, 0x00),
            0x44,
            "the seconds advanced with the clock"
        );
        assert_eq!(*line.0.lock().unwrap(), vec![true]);
        assert_eq!(rd(&mut c, 0x0c), C_IRQF | C_UF);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
        assert_eq!(rd(&mut c, 0x0c), 0, "reading C cleared it");
        assert_eq!(clock.next_deadline(), Some(2 * NS));
        // SET stops updates.
        wr(&mut c, 0x0b, B_24H | B_UIE | B_SET);
        assert_eq!(clock.next_deadline(), None);
    }

    #[test]
    fn alarm_fires_when_the_time_matches_with_dont_care_fields() {
        let (mut c, clock, line) = attached();
        // 09:15:43 now: alarm at 09:15:45 (BCD, 24-hour).
        wr(&mut c, 0x01, 0x45);
        wr(&mut c, 0x03, 0x15);
        wr(&mut c, 0x05, 0x09);
        wr(&mut c, 0x0b, B_24H | B_AIE);
        clock.advance_to(NS);
        c.poll();
        assert_eq!(rd(&mut c, 0x0c), 0, "09:15:44 does not match");
        assert!(line.0.lock().unwrap().is_empty());
        clock.advance_to(2 * NS);
        c.poll();
        assert_eq!(rd(&mut c, 0x0c), C_IRQF | C_AF);
        // Any hour and minute, second 50: five seconds later.
        wr(&mut c, 0x05, 0xc0);
        wr(&mut c, 0x03, 0xff);
        wr(&mut c, 0x01, 0x50);
        for s in 3..=7 {
            clock.advance_to(s * NS);
            c.poll();
            let want = if s == 7 { C_IRQF | C_AF } else { 0 };
            assert_eq!(rd(&mut c, 0x0c), want, "second {s}");
        }
        // With the update interrupt on as well, both flags come together.
        wr(&mut c, 0x0b, B_24H | B_AIE | B_UIE);
        wr(&mut c, 0x01, 0x51);
        clock.advance_to(8 * NS);
        c.poll();
        assert_eq!(rd(&mut c, 0x0c), C_IRQF | C_AF | C_UF);
    }

    #[test]
    fn periodic_interrupt_sets_pf_at_the_programmed_rate() {
        let (mut c, clock, line) = attached();
        wr(&mut c, 0x0a, 0x26); // 1024 Hz
        wr(&mut c, 0x0b, B_24H | B_PIE);
        let period = 976_562; // 1e9 / 1024, rounded down
        assert_eq!(clock.next_deadline(), Some(period));
        clock.advance_to(period);
        c.poll();
        assert_eq!(rd(&mut c, 0x0c), C_IRQF | C_PF);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
    }
}
