//! Boot milestones for `--stats`, measured from the launch of janus: the first vCPU entering
//! guest code, the first byte the guest writes to the serial port, and the first appearance of
//! a marker string in the serial output (by default `JANUS-INIT-OK`, which the Linux test
//! initramfs prints from /init). Also janus's memory use: peak RSS and the guest memory the
//! guest touched.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use janus_accel::GuestMemory;

use crate::sink::Sink;

/// The marker watched for by default: the first line of the Linux test initramfs's /init.
pub const DEFAULT_MARKER: &str = "JANUS-INIT-OK";

/// When each milestone was reached, from launch (`None`: not reached).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootTimes {
    /// The boot vCPU's thread entered the guest for the first time.
    pub first_entry: Option<Duration>,
    /// The guest wrote its first byte to the serial port.
    pub first_serial: Option<Duration>,
    /// The marker appeared in the serial output.
    pub marker: Option<Duration>,
    /// The marker watched for (empty: none).
    pub marker_text: String,
}

/// The milestones of one machine, shared by the vCPU threads and the serial output.
#[derive(Debug)]
pub struct Milestones {
    launch: Instant,
    first_entry: OnceLock<Duration>,
    first_serial: OnceLock<Duration>,
    marker_seen: OnceLock<Duration>,
    matcher: Mutex<Matcher>,
}

impl Milestones {
    /// Milestones counted from `launch`, watching the serial output for `marker`.
    pub fn new(launch: Instant, marker: &str) -> Self {
        Milestones {
            launch,
            first_entry: OnceLock::new(),
            first_serial: OnceLock::new(),
            marker_seen: OnceLock::new(),
            matcher: Mutex::new(Matcher::new(marker.as_bytes())),
        }
    }

    /// The boot vCPU is about to enter the guest (only the first call counts).
    pub fn entered(&self) {
        let _ = self.first_entry.set(self.launch.elapsed());
    }

    /// The guest wrote `bytes` to the serial port.
    pub fn serial(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let now = self.launch.elapsed();
        let _ = self.first_serial.set(now);
        if self.marker_seen.get().is_some() {
            return;
        }
        let mut m = self.matcher.lock().unwrap_or_else(|p| p.into_inner());
        if m.feed(bytes) {
            let _ = self.marker_seen.set(now);
        }
    }

    /// The times reached so far.
    pub fn times(&self) -> BootTimes {
        let m = self.matcher.lock().unwrap_or_else(|p| p.into_inner());
        BootTimes {
            first_entry: self.first_entry.get().copied(),
            first_serial: self.first_serial.get().copied(),
            marker: self.marker_seen.get().copied(),
            marker_text: String::from_utf8_lossy(&m.pattern).into_owned(),
        }
    }
}

/// Streaming substring search (Knuth-Morris-Pratt): finds the pattern however the output is
/// split into writes.
#[derive(Debug)]
struct Matcher {
    pattern: Vec<u8>,
    /// `fail[i]`: length of the longest proper prefix of `pattern[..=i]` that is also a suffix.
    fail: Vec<usize>,
    /// Bytes of the pattern matched so far.
    matched: usize,
}

impl Matcher {
    fn new(pattern: &[u8]) -> Self {
        let mut fail = vec![0; pattern.len()];
        let mut k = 0;
        for i in 1..pattern.len() {
            while k > 0 && pattern[i] != pattern[k] {
                k = fail[k - 1];
            }
            if pattern[i] == pattern[k] {
                k += 1;
            }
            fail[i] = k;
        }
        Matcher {
            pattern: pattern.to_vec(),
            fail,
            matched: 0,
        }
    }

    /// Feeds output; true once the pattern has been seen (never for an empty pattern).
    fn feed(&mut self, bytes: &[u8]) -> bool {
        if self.pattern.is_empty() {
            return false;
        }
        for &b in bytes {
            while self.matched > 0 && b != self.pattern[self.matched] {
                self.matched = self.fail[self.matched - 1];
            }
            if b == self.pattern[self.matched] {
                self.matched += 1;
                if self.matched == self.pattern.len() {
                    self.matched = self.fail[self.matched - 1];
                    return true;
                }
            }
        }
        false
    }
}

/// A sink that reports what passes through it to the milestones.
struct Watched {
    inner: Sink,
    milestones: std::sync::Arc<Milestones>,
}

impl Write for Watched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.milestones.serial(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `sink`, reporting the bytes written to it to `milestones`.
pub fn watch(sink: Sink, milestones: std::sync::Arc<Milestones>) -> Sink {
    Box::new(Watched {
        inner: sink,
        milestones,
    })
}

/// janus's memory use at the end of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Peak resident set of the process (VmHWM), bytes.
    pub peak_rss: u64,
    /// Guest RAM and ROM pages resident (touched by the guest or the loaders), bytes.
    pub guest_touched: u64,
    /// Of the current resident set: pages mapped from files (janus's and the libraries' code
    /// and read-only data, shared with the page cache), bytes.
    pub rss_file: u64,
    /// Of the current resident set: anonymous pages (heap, stacks, guest memory), bytes.
    pub rss_anon: u64,
    /// Of the current resident set: shared memory pages (the JIT's code, a memfd), bytes.
    pub rss_shmem: u64,
}

impl MemoryUse {
    /// What janus itself uses: peak RSS minus the guest memory touched.
    pub fn overhead(&self) -> u64 {
        self.peak_rss.saturating_sub(self.guest_touched)
    }

    /// Measures the process's peak RSS and the resident pages of `memory` (`None` where
    /// /proc/self/status cannot be read).
    pub fn measure(memory: &GuestMemory) -> Option<MemoryUse> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(MemoryUse {
            peak_rss: status_kib(&status, "VmHWM:")? * 1024,
            guest_touched: resident_bytes(memory),
            rss_file: status_kib(&status, "RssFile:").unwrap_or(0) * 1024,
            rss_anon: status_kib(&status, "RssAnon:").unwrap_or(0) * 1024,
            rss_shmem: status_kib(&status, "RssShmem:").unwrap_or(0) * 1024,
        })
    }
}

/// A "Name:   123 kB" field of /proc/self/status, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix(field))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Bytes of `memory`'s mappings that are resident (mincore), aliases counted once.
fn resident_bytes(memory: &GuestMemory) -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for r in memory.regions() {
        if !seen.insert(r.host_addr()) {
            continue;
        }
        let pages = r.size().div_ceil(page) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: the region's host mapping is `size` bytes long from `host_addr` (page
        // aligned) and stays mapped while `memory` lives; `vec` has one byte per page.
        let rc = unsafe {
            libc::mincore(
                r.host_addr() as *mut libc::c_void,
                r.size() as usize,
                vec.as_mut_ptr(),
            )
        };
        if rc == 0 {
            total += vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * page;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn marker_is_found_across_split_writes_and_after_false_starts() {
        let mut m = Matcher::new(b"JANUS-INIT-OK");
        assert!(!m.feed(b"JANUS-JANUS-IN"));
        assert!(m.feed(b"IT-OK\n"));
        let mut m = Matcher::new(b"aab");
        assert!(m.feed(b"aaab"));
        assert!(!Matcher::new(b"").feed(b"anything"));
    }

    #[test]
    fn milestones_record_first_serial_byte_and_marker() {
        let ms = Arc::new(Milestones::new(Instant::now(), DEFAULT_MARKER));
        let mut sink = watch(Box::new(Vec::new()), ms.clone());
        assert_eq!(ms.times().first_serial, None);
        ms.entered();
        sink.write_all(b"Linux version 6.1\n").unwrap();
        let t = ms.times();
        assert!(t.first_entry.is_some() && t.first_serial.is_some());
        assert_eq!(t.marker, None);
        sink.write_all(b"JANUS-INIT").unwrap();
        sink.write_all(b"-OK\n").unwrap();
        let t = ms.times();
        assert!(t.marker.is_some());
        assert!(t.first_serial <= t.marker);
        assert_eq!(t.marker_text, DEFAULT_MARKER);
    }

    #[test]
    fn memory_use_counts_touched_guest_pages() {
        let mut mem = GuestMemory::new();
        mem.add(0, 16 << 20, janus_accel::RegionKind::Ram).unwrap();
        let before = MemoryUse::measure(&mem).unwrap();
        mem.write(0x10_0000, &[1u8; 0x3000]).unwrap();
        let after = MemoryUse::measure(&mem).unwrap();
        assert_eq!(after.guest_touched - before.guest_touched, 0x3000);
        assert!(after.peak_rss >= after.guest_touched);
        assert_eq!(
            status_kib("VmPeak:\t 10 kB\nVmHWM:\t  2048 kB\n", "VmHWM:"),
            Some(2048)
        );
    }
}
