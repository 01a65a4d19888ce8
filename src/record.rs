//! Record and replay (`janus run --record FILE` / `--replay FILE`) on the software backends
//! under deterministic time (`--icount`). There a run is a function of its inputs (see
//! docs/architecture.md, "Virtual time"), so a recording holds only what comes from outside:
//! the bytes typed on the serial console, each with the point where the vCPU took it, and how
//! the run ended (a stop from outside, such as Ctrl-A x or `--timeout`, at its point; the
//! instruction count and a hash of the final registers and RAM). virtio devices run
//! synchronously here (see [`crate::virtio::worker`]), so a disk read completes at the
//! instruction that asked for it.
//!
//! A *point* is where the vCPU polls for input: after each block's time report, and in each
//! round of its wait in HLT. It is named by the instructions retired so far, the virtual time,
//! the site and how many polls before it had the same three (a block of no instructions).
//! The same run polls at the same points, so a replay delivers each input at its point.
//!
//! The file: the header (magic `JANUSRR\0`, a format version, a hash of the machine's
//! configuration), then records, each a tag byte and fixed little-endian fields:
//! input (`1`: point, length, bytes) and the end (`2`: point, how it stopped, instructions,
//! final hash), which must come last. One vCPU only: with several, the interleaving of their
//! accesses to shared memory is the host scheduler's, and recording it would need every
//! vCPU's shared-memory accesses ordered (QEMU's record/replay is single-threaded for the same
//! reason).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use janus_accel::{CpuState, GuestMemory};

use crate::clock::Clock;
use crate::control::{Control, StopReason};
use crate::devices::serial::{InputQueue, Serial};

/// The first bytes of a recording.
pub const MAGIC: [u8; 8] = *b"JANUSRR\0";
/// The format this janus writes and reads.
pub const VERSION: u32 = 1;
/// Most bytes one input record may carry (a larger length is a corrupt file).
const MAX_INPUT: u32 = 1 << 20;

/// `--record FILE` or `--replay FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordSpec {
    /// Write a recording.
    Record(PathBuf),
    /// Replay one.
    Replay(PathBuf),
}

/// Why a recording cannot be written or replayed; one line each.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file cannot be opened, read or written.
    #[error("recording {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a janus recording.
    #[error("{path} is not a janus recording (no JANUSRR header)")]
    Magic {
        /// The file.
        path: String,
    },
    /// Another format version.
    #[error("{path} is a recording of format version {found}; this janus reads version {VERSION}")]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: u32,
    },
    /// Recorded with another machine.
    #[error(
        "{path} was recorded on another machine (kernel, initrd, --append, --mem, --icount, \
         --rtc, --cpu, drives or devices differ): replay with the options of the recording"
    )]
    Config {
        /// The file.
        path: String,
    },
    /// The file ends inside a record or before the end record.
    #[error("{path} is truncated at byte {offset} (the recording did not finish)")]
    Truncated {
        /// The file.
        path: String,
        /// Where it ends.
        offset: usize,
    },
    /// A record that makes no sense.
    #[error("{path} is corrupt at byte {offset}: {what}")]
    Corrupt {
        /// The file.
        path: String,
        /// Where.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A machine that cannot be recorded.
    #[error("--record/--replay: {0}")]
    Unsupported(&'static str),
}

/// Where a poll happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// After a block's time report.
    Block,
    /// In a round of the wait in HLT.
    Halt,
}

/// A point of the run where input may be delivered (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// The site.
    pub site: Site,
    /// Instructions retired so far.
    pub retired: u64,
    /// Virtual time, ns.
    pub ns: u64,
    /// Polls before this one at the same site, count and time (always 0 in HLT, where
    /// nothing changes between rounds at one time).
    pub nth: u32,
}

/// How a recorded run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// By itself (power-off, reset, exit port, a fault...): the replay ends the same way.
    Guest,
    /// Ctrl-A x.
    ConsoleQuit,
    /// `--timeout`.
    Timeout,
    /// Ctrl-C.
    Interrupted,
    /// SIGTERM or SIGHUP.
    Signal(i32),
    /// Stop at the first block boundary at or after the end's instruction count, with no final
    /// state to compare: a divergence `janus diff` saved ([`write_stop_at`]).
    StopAt,
}

impl EndKind {
    fn of(reason: &StopReason) -> Self {
        match reason {
            StopReason::ConsoleQuit => EndKind::ConsoleQuit,
            StopReason::Timeout => EndKind::Timeout,
            StopReason::Interrupted => EndKind::Interrupted,
            StopReason::Signal(s) => EndKind::Signal(*s),
            _ => EndKind::Guest,
        }
    }
    fn reason(self) -> Option<StopReason> {
        match self {
            EndKind::Guest => None,
            EndKind::ConsoleQuit => Some(StopReason::ConsoleQuit),
            EndKind::Timeout => Some(StopReason::Timeout),
            EndKind::Interrupted => Some(StopReason::Interrupted),
            EndKind::Signal(s) => Some(StopReason::Signal(s)),
            EndKind::StopAt => None,
        }
    }
}

/// One record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes typed on the serial console, delivered at `at`.
    Serial {
        /// Where.
        at: Point,
        /// What.
        bytes: Vec<u8>,
    },
    /// The end of the run: its last point, how it stopped, the instructions retired and the
    /// hash of the final registers and RAM ([`final_hash`]).
    End {
        /// The last point polled.
        at: Point,
        /// How it stopped.
        kind: EndKind,
        /// Instructions retired.
        instructions: u64,
        /// [`final_hash`].
        hash: u64,
    },
}

const TAG_SERIAL: u8 = 1;
const TAG_END: u8 = 2;

fn put_point(out: &mut Vec<u8>, p: &Point) {
    out.push(match p.site {
        Site::Block => 0,
        Site::Halt => 1,
    });
    out.extend(p.retired.to_le_bytes());
    out.extend(p.ns.to_le_bytes());
    out.extend(p.nth.to_le_bytes());
}

/// The header of a recording of a machine whose configuration hashes to `config`.
pub fn header(config: u64) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend(VERSION.to_le_bytes());
    v.extend(config.to_le_bytes());
    v
}

/// One record's bytes.
pub fn encode(e: &Event) -> Vec<u8> {
    let mut v = Vec::new();
    match e {
        Event::Serial { at, bytes } => {
            v.push(TAG_SERIAL);
            put_point(&mut v, at);
            v.extend((bytes.len() as u32).to_le_bytes());
            v.extend(bytes);
        }
        Event::End {
            at,
            kind,
            instructions,
            hash,
        } => {
            v.push(TAG_END);
            put_point(&mut v, at);
            let (k, sig) = match kind {
                EndKind::Guest => (0u8, 0i32),
                EndKind::ConsoleQuit => (1, 0),
                EndKind::Timeout => (2, 0),
                EndKind::Interrupted => (3, 0),
                EndKind::Signal(s) => (4, *s),
                EndKind::StopAt => (5, 0),
            };
            v.push(k);
            v.extend(sig.to_le_bytes());
            v.extend(instructions.to_le_bytes());
            v.extend(hash.to_le_bytes());
        }
    }
    v
}

/// A cursor over a recording's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(RecordError::Truncated {
                path: self.path.into(),
                offset: self.bytes.len(),
            });
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn corrupt(&self, what: &'static str) -> RecordError {
        RecordError::Corrupt {
            path: self.path.into(),
            offset: self.at,
            what,
        }
    }
    fn point(&mut self) -> Result<Point, RecordError> {
        let site = match self.u8()? {
            0 => Site::Block,
            1 => Site::Halt,
            _ => return Err(self.corrupt("unknown poll site")),
        };
        Ok(Point {
            site,
            retired: self.u64()?,
            ns: self.u64()?,
            nth: self.u32()?,
        })
    }
}

/// Reads a recording (`path` names it in errors): its records, the last of which is the end,
/// after checking the header against the configuration hash `config`.
///
/// # Errors
/// Not a recording, another version, another machine, a truncated or corrupt file.
pub fn decode(bytes: &[u8], config: u64, path: &str) -> Result<Vec<Event>, RecordError> {
    let mut r = Reader { bytes, at: 0, path };
    let magic_len = MAGIC.len().min(bytes.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(RecordError::Magic { path: path.into() });
    }
    r.take(MAGIC.len())?;
    let found = r.u32()?;
    if found != VERSION {
        return Err(RecordError::Version {
            path: path.into(),
            found,
        });
    }
    if r.u64()? != config {
        return Err(RecordError::Config { path: path.into() });
    }
    let mut events = Vec::new();
    loop {
        if r.at == bytes.len() {
            return Err(RecordError::Truncated {
                path: path.into(),
                offset: r.at,
            });
        }
        match r.u8()? {
            TAG_SERIAL => {
                let at = r.point()?;
                let len = r.u32()?;
                if len == 0 || len > MAX_INPUT {
                    return Err(r.corrupt("input record of a bad length"));
                }
                let bytes = r.take(len as usize)?.to_vec();
                events.push(Event::Serial { at, bytes });
            }
            TAG_END => {
                let at = r.point()?;
                let kind = match (r.u8()?, r.u32()? as i32) {
                    (0, _) => EndKind::Guest,
                    (1, _) => EndKind::ConsoleQuit,
                    (2, _) => EndKind::Timeout,
                    (3, _) => EndKind::Interrupted,
                    (4, s) => EndKind::Signal(s),
                    (5, _) => EndKind::StopAt,
                    _ => return Err(r.corrupt("unknown end kind")),
                };
                let instructions = r.u64()?;
                let hash = r.u64()?;
                events.push(Event::End {
                    at,
                    kind,
                    instructions,
                    hash,
                });
                if r.at != bytes.len() {
                    return Err(r.corrupt("records after the end record"));
                }
                return Ok(events);
            }
            _ => {
                r.at -= 1;
                return Err(r.corrupt("unknown record tag"));
            }
        }
    }
}

/// A 64-bit hash, word at a time (FxHash's mixing): equal inputs, equal hashes; nothing
/// cryptographic.
#[derive(Clone, Copy, Debug)]
pub struct Hasher(u64);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher {
    /// Mixes in one word.
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    /// Mixes in bytes (a length first, then words, the last padded with zeroes).
    pub fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(w));
        }
    }
    /// The hash.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// A hash of a vCPU's architectural state (general, segment, control and FPU/SSE registers,
/// the MSRs it keeps) and of every byte of guest memory.
pub fn final_hash(s: &CpuState, mem: &GuestMemory) -> u64 {
    let mut h = Hasher::default();
    for w in s.gpr {
        h.word(w);
    }
    for w in [s.rip, s.rflags, s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer] {
        h.word(w);
    }
    for seg in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.ldt, &s.tr] {
        h.word(u64::from(seg.selector));
        h.word(seg.base);
        h.word(u64::from(seg.limit));
        h.word(u64::from(seg.typ) | u64::from(seg.dpl) << 8 | u64::from(seg.present) << 16);
    }
    for t in [&s.gdt, &s.idt] {
        h.word(t.base);
        h.word(u64::from(t.limit));
    }
    for w in [
        s.apic_base,
        s.star,
        s.lstar,
        s.cstar,
        s.sfmask,
        s.kernel_gs_base,
        s.sysenter_cs,
        s.sysenter_esp,
        s.sysenter_eip,
        s.tsc_aux,
        s.pat,
        s.tsc,
    ] {
        h.word(w);
    }
    let f = &s.fpu;
    h.word(u64::from(f.fcw) | u64::from(f.fsw) << 16 | u64::from(f.ftw) << 32);
    h.word(u64::from(f.mxcsr) | f.xcr0 << 32);
    for v in f.st.iter().chain(&f.xmm) {
        h.word(*v as u64);
        h.word((*v >> 64) as u64);
    }
    let mut buf = vec![0u8; 1 << 20];
    for r in mem.regions() {
        let mut off = 0;
        while off < r.size() {
            let n = buf.len().min((r.size() - off) as usize);
            if mem.read(r.base() + off, &mut buf[..n]).is_err() {
                break;
            }
            h.bytes(&buf[..n]);
            off += n as u64;
        }
    }
    h.finish()
}

/// What the journal does.
enum Mode {
    /// Writes every input taken from `staging` (filled by the console reader).
    Record {
        path: String,
        out: Mutex<std::io::BufWriter<std::fs::File>>,
        /// The console reader's queue; `waiting` says it has bytes.
        staging: InputQueue,
        waiting: AtomicBool,
        /// The first write error (the run goes on; the end reports it).
        failed: Mutex<Option<std::io::Error>>,
    },
    /// Serves `events` at their points.
    Replay {
        path: String,
        events: Mutex<VecDeque<Event>>,
        /// The end record's fields.
        end: (Point, EndKind, u64, u64),
        /// The first point where something is due (input, or an outside stop): polls before
        /// it return at once.
        due: AtomicU64,
        /// The first divergence found.
        diverged: Mutex<Option<String>>,
    },
}

/// The record or replay of one machine's run: polled by vCPU 0 at every point.
pub struct Journal {
    mode: Mode,
    serial: Arc<Mutex<Serial>>,
    /// The UART's input queue.
    input: InputQueue,
    clock: Clock,
    control: Arc<Control>,
    retired: AtomicU64,
    /// The last point polled: site (0, 1; `u64::MAX` before the first), retired, ns, nth.
    last_site: AtomicU64,
    last_retired: AtomicU64,
    last_ns: AtomicU64,
    last_nth: AtomicU32,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.mode {
            Mode::Record { path, .. } => format!("record to {path}"),
            Mode::Replay { path, .. } => format!("replay of {path}"),
        };
        f.debug_struct("Journal")
            .field("mode", &what)
            .finish_non_exhaustive()
    }
}

/// The recording file, opened (record: created, header written; replay: read and checked)
/// before the machine is built, so that a bad file is an error before anything runs.
#[derive(Debug)]
pub struct Opened {
    spec: RecordSpec,
    file: Option<std::fs::File>,
    events: Vec<Event>,
}

impl Opened {
    /// Opens `spec`'s file for a machine whose configuration hashes to `config`.
    ///
    /// # Errors
    /// The file cannot be created or read, or is no recording of this machine.
    pub fn open(spec: &RecordSpec, config: u64) -> Result<Self, RecordError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| RecordError::Io { path, source }
        };
        match spec {
            RecordSpec::Record(p) => {
                let mut f = std::fs::File::create(p).map_err(io(p))?;
                f.write_all(&header(config)).map_err(io(p))?;
                Ok(Opened {
                    spec: spec.clone(),
                    file: Some(f),
                    events: Vec::new(),
                })
            }
            RecordSpec::Replay(p) => {
                let bytes = std::fs::read(p).map_err(io(p))?;
                let events = decode(&bytes, config, &p.display().to_string())?;
                Ok(Opened {
                    spec: spec.clone(),
                    file: None,
                    events,
                })
            }
        }
    }

    /// Whether this is a recording (not a replay).
    pub fn records(&self) -> bool {
        matches!(self.spec, RecordSpec::Record(_))
    }
}

impl Journal {
    /// The journal of a machine whose UART is `serial` (reading `input`), on `clock`.
    pub fn new(
        opened: Opened,
        serial: Arc<Mutex<Serial>>,
        input: InputQueue,
        clock: Clock,
        control: Arc<Control>,
    ) -> Self {
        let mode = match (opened.spec, opened.file) {
            (RecordSpec::Record(p), Some(f)) => Mode::Record {
                path: p.display().to_string(),
                out: Mutex::new(std::io::BufWriter::new(f)),
                staging: InputQueue::default(),
                waiting: AtomicBool::new(false),
                failed: Mutex::new(None),
            },
            (spec, _) => {
                let path = match spec {
                    RecordSpec::Record(p) | RecordSpec::Replay(p) => p.display().to_string(),
                };
                let mut events: VecDeque<Event> = opened.events.into();
                let end = match events.pop_back() {
                    Some(Event::End {
                        at,
                        kind,
                        instructions,
                        hash,
                    }) => (at, kind, instructions, hash),
                    // decode() ends every list with the end record.
                    _ => (
                        Point {
                            site: Site::Block,
                            retired: u64::MAX,
                            ns: 0,
                            nth: 0,
                        },
                        EndKind::Guest,
                        0,
                        0,
                    ),
                };
                let j = Mode::Replay {
                    path,
                    events: Mutex::new(events),
                    end,
                    due: AtomicU64::new(0),
                    diverged: Mutex::new(None),
                };
                if let Mode::Replay { events, due, .. } = &j {
                    due.store(
                        next_due(&events.lock().unwrap_or_else(|p| p.into_inner()), &end),
                        Ordering::Relaxed,
                    );
                }
                j
            }
        };
        Journal {
            mode,
            serial,
            input,
            clock,
            control,
            retired: AtomicU64::new(0),
            last_site: AtomicU64::new(u64::MAX),
            last_retired: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            last_nth: AtomicU32::new(0),
        }
    }

    /// Whether this journal records (the console reader feeds [`Journal::staging`]).
    pub fn records(&self) -> bool {
        matches!(self.mode, Mode::Record { .. })
    }

    /// The queue the console reader fills while recording, and the flag to raise after it
    /// did (see [`Journal::input_arrived`]).
    pub fn staging(&self) -> Option<InputQueue> {
        match &self.mode {
            Mode::Record { staging, .. } => Some(staging.clone()),
            Mode::Replay { .. } => None,
        }
    }

    /// The console reader put bytes in the staging queue.
    pub fn input_arrived(&self) {
        if let Mode::Record { waiting, .. } = &self.mode {
            waiting.store(true, Ordering::Release);
        }
    }

    /// vCPU 0 reported `n` retired instructions (after the clock moved): a point.
    pub fn retired(&self, n: u64) {
        let total = self.retired.fetch_add(n, Ordering::Relaxed) + n;
        self.poll(Site::Block, total);
    }

    /// vCPU 0 waits in HLT: a point.
    pub fn halted(&self) {
        self.poll(Site::Halt, self.retired.load(Ordering::Relaxed));
    }

    fn poll(&self, site: Site, retired: u64) {
        let ns = self.clock.now_ns();
        let code = site as u64;
        let same = self.last_site.load(Ordering::Relaxed) == code
            && self.last_retired.load(Ordering::Relaxed) == retired
            && self.last_ns.load(Ordering::Relaxed) == ns;
        let nth = match (same, site) {
            (true, Site::Block) => self.last_nth.load(Ordering::Relaxed) + 1,
            _ => 0,
        };
        if !same {
            self.last_site.store(code, Ordering::Relaxed);
            self.last_retired.store(retired, Ordering::Relaxed);
            self.last_ns.store(ns, Ordering::Relaxed);
        }
        self.last_nth.store(nth, Ordering::Relaxed);
        match &self.mode {
            Mode::Record { waiting, .. } => {
                if waiting.load(Ordering::Acquire) {
                    self.take_input(Point {
                        site,
                        retired,
                        ns,
                        nth,
                    });
                }
            }
            Mode::Replay { due, .. } => {
                if retired >= due.load(Ordering::Relaxed) {
                    self.serve(Point {
                        site,
                        retired,
                        ns,
                        nth,
                    });
                }
            }
        }
    }

    /// Record: moves what the console reader staged to the UART and writes it down.
    fn take_input(&self, at: Point) {
        let Mode::Record {
            out,
            staging,
            waiting,
            failed,
            ..
        } = &self.mode
        else {
            return;
        };
        let bytes: Vec<u8> = {
            let mut s = staging.lock().unwrap_or_else(|p| p.into_inner());
            waiting.store(false, Ordering::Release);
            s.drain(..).collect()
        };
        if bytes.is_empty() {
            return;
        }
        let rec = encode(&Event::Serial {
            at,
            bytes: bytes.clone(),
        });
        if let Err(e) = out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&rec)
        {
            failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
        self.deliver(&bytes);
    }

    /// Gives typed bytes to the UART (as the console reader does outside a recording).
    fn deliver(&self, bytes: &[u8]) {
        self.input
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(bytes);
        self.serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .poll_input();
    }

    /// Replay: delivers what is due at `at`, stops where the recording was stopped from
    /// outside, and stops the machine at the first input it passed without reaching its point.
    fn serve(&self, at: Point) {
        let Mode::Replay {
            events,
            end,
            due,
            diverged,
            ..
        } = &self.mode
        else {
            return;
        };
        let mut q = events.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Event::Serial { at: p, bytes }) = q.front() {
            if *p == at {
                self.deliver(bytes);
                q.pop_front();
                continue;
            }
            if (p.retired, p.ns) < (at.retired, at.ns) {
                let msg = format!(
                    "replay diverged: input due after {} instructions at {} ns was not taken \
                     there (now {} instructions, {} ns)",
                    p.retired, p.ns, at.retired, at.ns
                );
                diverged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(msg.clone());
                q.clear();
                self.control.request_stop(StopReason::HostError(msg));
            }
            break;
        }
        if end.0 == at
            && let Some(r) = end.1.reason()
        {
            self.control.request_stop(r);
        }
        if end.1 == EndKind::StopAt && at.retired >= end.0.retired && q.is_empty() {
            self.control
                .request_stop(StopReason::ReplayStop(at.retired));
        }
        due.store(next_due(&q, end), Ordering::Relaxed);
    }

    /// After the run: writes the end record (record) or compares the run with it (replay).
    /// `state` is vCPU 0's final state. Returns the line to print, or why the replay was not
    /// exact (or the recording could not be written).
    ///
    /// # Errors
    /// A replay that differs from its recording, or a recording that could not be written.
    pub fn finish(
        &self,
        reason: &StopReason,
        state: Option<&CpuState>,
        mem: &GuestMemory,
    ) -> Result<String, String> {
        let instructions = self.retired.load(Ordering::Relaxed);
        let hash = state.map_or(0, |s| final_hash(s, mem));
        let site = match self.last_site.load(Ordering::Relaxed) {
            1 => Site::Halt,
            _ => Site::Block,
        };
        let at = Point {
            site,
            retired: self.last_retired.load(Ordering::Relaxed),
            ns: self.last_ns.load(Ordering::Relaxed),
            nth: self.last_nth.load(Ordering::Relaxed),
        };
        match &self.mode {
            Mode::Record {
                path, out, failed, ..
            } => {
                let rec = encode(&Event::End {
                    at,
                    kind: EndKind::of(reason),
                    instructions,
                    hash,
                });
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                let written = out.write_all(&rec).and_then(|()| out.flush());
                if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    return Err(format!("recording {path}: {e}"));
                }
                written.map_err(|e| format!("recording {path}: {e}"))?;
                Ok(format!(
                    "recorded {instructions} instructions to {path}, final state hash \
                     {hash:016x}"
                ))
            }
            Mode::Replay {
                path,
                events,
                end,
                diverged,
                ..
            } => {
                if let Some(d) = diverged.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    return Err(d);
                }
                let left = events.lock().unwrap_or_else(|p| p.into_inner()).len();
                if left > 0 {
                    return Err(format!(
                        "replay of {path} ended after {instructions} instructions with {left} \
                         inputs not delivered"
                    ));
                }
                if end.1 == EndKind::StopAt {
                    return Ok(format!(
                        "replayed {instructions} instructions from {path} to its stop at \
                         instruction {}: final state hash {hash:016x}",
                        end.2
                    ));
                }
                if (instructions, hash) != (end.2, end.3) {
                    return Err(format!(
                        "replay of {path} diverged: {instructions} instructions, final state \
                         hash {hash:016x}; the recording has {} instructions, hash {:016x}",
                        end.2, end.3
                    ));
                }
                Ok(format!(
                    "replayed {instructions} instructions from {path} exactly: final state \
                     hash {hash:016x}"
                ))
            }
        }
    }
}

/// The retired count at which a replay must look next: the next input's, or the end's when
/// the recording was stopped from outside.
fn next_due(q: &VecDeque<Event>, end: &(Point, EndKind, u64, u64)) -> u64 {
    let input = match q.front() {
        Some(Event::Serial { at, .. }) => at.retired,
        _ => u64::MAX,
    };
    let stop = if end.1 == EndKind::Guest {
        u64::MAX
    } else {
        end.0.retired
    };
    input.min(stop)
}

/// Writes a recording of no input that stops at the first block boundary at or after
/// `instructions` retired, for the machine `config` (`janus diff`'s divergence: replayed on
/// backend B, it takes B there alone).
///
/// # Errors
/// The file cannot be written.
pub fn write_stop_at(
    path: &Path,
    config: &crate::MachineConfig,
    instructions: u64,
) -> Result<(), RecordError> {
    let mut v = header(config_hash(config));
    v.extend(encode(&Event::End {
        at: Point {
            site: Site::Block,
            retired: instructions,
            ns: 0,
            nth: 0,
        },
        kind: EndKind::StopAt,
        instructions,
        hash: 0,
    }));
    std::fs::write(path, v).map_err(|source| RecordError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Refuses what a recording cannot hold: several vCPUs, network cards, virtio-rng (host
/// entropy), and drives the guest may write (a replay must read the same image).
///
/// # Errors
/// The first thing refused.
pub fn check(config: &crate::MachineConfig) -> Result<(), RecordError> {
    if config.icount.is_none() {
        return Err(RecordError::Unsupported(
            "needs deterministic time (--icount SHIFT)",
        ));
    }
    if config.smp != 1 {
        return Err(RecordError::Unsupported(
            "one vCPU only (--smp 1): several vCPUs interleave as the host schedules them, \
             which is not recorded",
        ));
    }
    if !config.netdevs.is_empty() {
        return Err(RecordError::Unsupported(
            "network cards are not recorded (no --netdev/--nic)",
        ));
    }
    if config
        .virtio
        .devices
        .iter()
        .any(|d| d.kind == crate::virtio::board::DeviceKind::Rng)
    {
        return Err(RecordError::Unsupported(
            "virtio-rng hands out the host's entropy, which is not recorded",
        ));
    }
    if config
        .virtio
        .drives
        .iter()
        .any(|d| !d.readonly && !d.snapshot)
        || config.ide.iter().any(|d| !d.readonly)
    {
        return Err(RecordError::Unsupported(
            "drives must be readonly=on or snapshot=on, so that the replay reads the same image",
        ));
    }
    Ok(())
}

/// A hash of what makes a machine (everything but the backend): a replay must be of the
/// machine recorded.
pub fn config_hash(c: &crate::MachineConfig) -> u64 {
    let mut h = Hasher::default();
    h.word(c.mem);
    h.word(c.smp as u64);
    for blob in [&c.image, &c.bios, &c.kernel, &c.initrd] {
        match blob {
            Some(b) => h.bytes(b),
            None => h.word(u64::MAX),
        }
    }
    h.bytes(c.cmdline.as_bytes());
    h.word(c.icount.map_or(u64::MAX, u64::from));
    h.bytes(format!("{:?}", c.rtc).as_bytes());
    h.bytes(c.cpu.to_string().as_bytes());
    for d in &c.virtio.drives {
        h.bytes(d.file.display().to_string().as_bytes());
        h.word(std::fs::metadata(&d.file).map_or(0, |m| m.len()));
        h.word(u64::from(d.mmio));
    }
    for d in &c.virtio.devices {
        h.bytes(format!("{:?}{}", d.kind, d.mmio).as_bytes());
    }
    for d in &c.ide {
        h.bytes(d.path.display().to_string().as_bytes());
    }
    h.word(u64::from(c.post_port));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(retired: u64) -> Point {
        Point {
            site: Site::Block,
            retired,
            ns: retired * 8,
            nth: 0,
        }
    }

    fn file() -> Vec<u8> {
        let mut v = header(42);
        v.extend(encode(&Event::Serial {
            at: point(100),
            bytes: b"ls\n".to_vec(),
        }));
        v.extend(encode(&Event::End {
            at: Point {
                site: Site::Halt,
                nth: 0,
                ..point(200)
            },
            kind: EndKind::Signal(15),
            instructions: 200,
            hash: 0xdead_beef,
        }));
        v
    }

    #[test]
    fn a_recording_round_trips() {
        let e = decode(&file(), 42, "r").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            Event::Serial {
                at: point(100),
                bytes: b"ls\n".to_vec()
            }
        );
        assert!(matches!(
            e[1],
            Event::End {
                kind: EndKind::Signal(15),
                instructions: 200,
                hash: 0xdead_beef,
                ..
            }
        ));
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let f = file();
        for len in 0..f.len() {
            let e = decode(&f[..len], 42, "rec.jrr").unwrap_err();
            assert!(
                matches!(e, RecordError::Truncated { .. } | RecordError::Magic { .. }),
                "{len}: {e}"
            );
            assert!(e.to_string().contains("rec.jrr"), "{e}");
        }
        let e = decode(&f[..f.len() - 1], 42, "rec.jrr").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "rec.jrr is truncated at byte {} (the recording did not finish)",
                f.len() - 1
            )
        );
    }

    #[test]
    fn another_version_magic_or_machine_is_refused() {
        let mut f = file();
        f[8] = 9;
        let e = decode(&f, 42, "r").unwrap_err();
        assert!(matches!(e, RecordError::Version { found: 9, .. }), "{e}");
        assert!(e.to_string().contains("version 9"), "{e}");
        let e = decode(b"#!/bin/sh\n", 42, "r").unwrap_err();
        assert!(matches!(e, RecordError::Magic { .. }), "{e}");
        let e = decode(&file(), 43, "r").unwrap_err();
        assert!(matches!(e, RecordError::Config { .. }), "{e}");
    }

    #[test]
    fn corrupt_records_are_refused() {
        let mut f = file();
        f.push(0);
        assert!(matches!(
            decode(&f, 42, "r"),
            Err(RecordError::Corrupt { what, .. }) if what.contains("after the end")
        ));
        let mut f = header(42);
        f.push(7);
        assert!(matches!(
            decode(&f, 42, "r"),
            Err(RecordError::Corrupt { offset: 20, .. })
        ));
        // A length beyond the file's end is truncation, a huge one corruption.
        let mut f = header(42);
        let mut rec = encode(&Event::Serial {
            at: point(1),
            bytes: vec![1],
        });
        let len_at = rec.len() - 5;
        rec[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        f.extend(rec);
        assert!(matches!(
            decode(&f, 42, "r"),
            Err(RecordError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_hash_sees_every_byte() {
        let mut a = Hasher::default();
        a.bytes(&[1, 2, 3]);
        let mut b = Hasher::default();
        b.bytes(&[1, 2, 3, 0]);
        let mut c = Hasher::default();
        c.bytes(&[1, 2, 4]);
        assert_ne!(a.finish(), b.finish());
        assert_ne!(a.finish(), c.finish());
    }
}
