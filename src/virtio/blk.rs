//! virtio-blk (virtio 1.2, 5.2) on a raw image file, and the `--drive` option that names one.
//!
//! Requests: read, write, flush (fdatasync before the used-ring update), get-id, discard and
//! write-zeroes (a hole punched in the file, or zeroes written). `snapshot=on` keeps every
//! write in memory ([`Disk`]'s overlay), so the image is never written. A request the device
//! cannot parse (a bad chain, no status byte, a short header) or that reaches past the end of
//! the disk gets VIRTIO_BLK_S_IOERR (an unknown type VIRTIO_BLK_S_UNSUPP), never a panic; a
//! host I/O error is VIRTIO_BLK_S_IOERR for the guest and one line on stderr per drive.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::{Chain, DeviceContext, Queue, QueueError, VirtioDevice, id};

/// Bytes per sector, as virtio-blk counts.
pub const SECTOR: u64 = 512;
/// The queue's size.
const QUEUE_SIZE: u16 = 256;
/// Most data bytes one request may carry (a hostile chain may claim gigabytes).
const MAX_REQUEST: u64 = 4 << 20;
/// Most segments of one discard or write-zeroes request.
const MAX_DISCARD_SEG: u32 = 32;

/// Feature bits.
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

/// Request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

/// Status bytes.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// How writes reach the host disk (`cache=`, QEMU's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Writes go to the host's page cache; a guest flush is an fdatasync (the default).
    #[default]
    Writeback,
    /// Every write is followed by an fdatasync.
    Writethrough,
    /// Guest flushes are ignored (fast, unsafe across a host crash).
    Unsafe,
}

/// One `--drive`: `file=PATH[,if=virtio][,readonly=on][,snapshot=on][,cache=...][,format=raw]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveSpec {
    /// The raw image.
    pub file: PathBuf,
    /// The guest may not write.
    pub readonly: bool,
    /// Writes stay in memory.
    pub snapshot: bool,
    /// How writes reach the disk.
    pub cache: CacheMode,
    /// virtio-mmio instead of PCI (`if=mmio`, direct kernel boots).
    pub mmio: bool,
}

/// A `--drive` that cannot be used; one line each.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// A malformed option list.
    #[error("--drive {0}")]
    Syntax(String),
    /// The image cannot be opened.
    #[error("--drive file={path}: {source}")]
    Open {
        /// The image.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The image is a directory (or not a regular file or block device).
    #[error("--drive file={0}: not a regular file")]
    NotAFile(String),
    /// A read-only image without readonly=on.
    #[error("--drive file={0}: the file is read-only; add readonly=on (or snapshot=on)")]
    ReadOnly(String),
}

fn on_off(key: &str, v: &str) -> Result<bool, DriveError> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(DriveError::Syntax(format!("{key}={v}: expected on or off"))),
    }
}

impl std::str::FromStr for DriveSpec {
    type Err = DriveError;
    fn from_str(s: &str) -> Result<Self, DriveError> {
        let mut spec = DriveSpec {
            file: PathBuf::new(),
            readonly: false,
            snapshot: false,
            cache: CacheMode::default(),
            mmio: false,
        };
        let mut file = None;
        for part in s.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(DriveError::Syntax(format!(
                    "{part:?}: expected KEY=VALUE (file=PATH, if=, readonly=, snapshot=, \
                     cache=, format=)"
                )));
            };
            match k {
                "file" if !v.is_empty() => file = Some(PathBuf::from(v)),
                "if" => match v {
                    "virtio" => spec.mmio = false,
                    "mmio" | "virtio-mmio" => spec.mmio = true,
                    _ => {
                        return Err(DriveError::Syntax(format!(
                            "if={v}: janus has if=virtio (PCI) and if=mmio"
                        )));
                    }
                },
                "readonly" => spec.readonly = on_off(k, v)?,
                "snapshot" => spec.snapshot = on_off(k, v)?,
                "format" if v == "raw" => {}
                "format" => {
                    return Err(DriveError::Syntax(format!(
                        "format={v}: janus reads raw images only"
                    )));
                }
                "cache" => {
                    spec.cache = match v {
                        "writeback" | "none" => CacheMode::Writeback,
                        "writethrough" | "directsync" => CacheMode::Writethrough,
                        "unsafe" => CacheMode::Unsafe,
                        _ => {
                            return Err(DriveError::Syntax(format!(
                                "cache={v}: expected writeback, none, writethrough, \
                                 directsync or unsafe"
                            )));
                        }
                    }
                }
                _ => return Err(DriveError::Syntax(format!("{part}: unknown option"))),
            }
        }
        spec.file = file.ok_or_else(|| DriveError::Syntax(format!("{s}: file=PATH is missing")))?;
        Ok(spec)
    }
}

impl DriveSpec {
    /// Opens the image.
    ///
    /// # Errors
    /// A missing file, a directory, a read-only file without `readonly=on` or `snapshot=on`.
    pub fn open(&self) -> Result<Disk, DriveError> {
        let path = self.file.display().to_string();
        let meta = std::fs::metadata(&self.file).map_err(|source| DriveError::Open {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            return Err(DriveError::NotAFile(path));
        }
        let write = !self.readonly && !self.snapshot;
        // (Checked by its mode too: root may open a read-only file for writing.)
        if write && meta.permissions().readonly() {
            return Err(DriveError::ReadOnly(path));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&self.file)
            .map_err(|source| {
                if write && source.kind() == std::io::ErrorKind::PermissionDenied {
                    DriveError::ReadOnly(path.clone())
                } else {
                    DriveError::Open {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        let size = file
            .metadata()
            .map_err(|source| DriveError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(Disk {
            file,
            path,
            size,
            readonly: self.readonly,
            overlay: self.snapshot.then(HashMap::new),
            cache: self.cache,
        })
    }
}

/// A raw image, with an in-memory overlay under `snapshot=on`.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: String,
    size: u64,
    readonly: bool,
    /// Sectors written under snapshot=on.
    overlay: Option<HashMap<u64, Box<[u8; SECTOR as usize]>>>,
    cache: CacheMode,
}

impl Disk {
    /// Sectors of the disk (a partial last sector is not visible).
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)?;
        if let Some(o) = &self.overlay {
            for (i, chunk) in buf.chunks_mut(SECTOR as usize).enumerate() {
                if let Some(s) = o.get(&(offset / SECTOR + i as u64)) {
                    chunk.copy_from_slice(&s[..chunk.len()]);
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match &mut self.overlay {
            Some(o) => {
                for (i, chunk) in data.chunks(SECTOR as usize).enumerate() {
                    let mut s = Box::new([0u8; SECTOR as usize]);
                    s[..chunk.len()].copy_from_slice(chunk);
                    o.insert(offset / SECTOR + i as u64, s);
                }
                Ok(())
            }
            None => {
                self.file.write_all_at(data, offset)?;
                if self.cache == CacheMode::Writethrough {
                    self.file.sync_data()?;
                }
                Ok(())
            }
        }
    }

    fn flush(&self) -> std::io::Result<()> {
        if self.overlay.is_some() || self.cache == CacheMode::Unsafe {
            return Ok(());
        }
        self.file.sync_data()
    }

    /// Zeroes (and, for a discard, deallocates) `len` bytes at `offset`.
    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        if self.overlay.is_none() {
            // SAFETY: fallocate on a descriptor this Disk owns, with a range it checked to lie
            // inside the file; it touches no memory of ours.
            let r = unsafe {
                libc::fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&self.file),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                )
            };
            if r == 0 {
                return Ok(());
            }
        }
        // No hole punching here (or a snapshot): write zeroes, a sector at a time.
        let zeroes = vec![0u8; (64 << 10).min(len as usize)];
        let mut at = offset;
        while at < offset + len {
            let n = zeroes.len().min((offset + len - at) as usize);
            self.write(at, &zeroes[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

/// The block device.
#[derive(Debug)]
pub struct Blk {
    disk: Disk,
    serial: String,
    /// The first host I/O error was reported on stderr.
    reported: bool,
    /// Requests that failed (bad request or I/O error).
    pub errors: u64,
}

impl Blk {
    /// A block device on `disk`, answering GET_ID with `serial` (at most 20 bytes).
    pub fn new(disk: Disk, serial: &str) -> Self {
        Blk {
            disk,
            serial: serial.chars().take(20).collect(),
            reported: false,
            errors: 0,
        }
    }

    fn io_error(&mut self, what: &str, e: &std::io::Error) -> u8 {
        if !self.reported {
            self.reported = true;
            crate::ewriteln!(
                "janus: virtio-blk {}: host I/O error on {what}: {e} (the guest sees I/O errors)",
                self.disk.path
            );
        }
        S_IOERR
    }

    /// Serves one request; returns the status and the bytes written into the chain before
    /// the status byte.
    fn serve(&mut self, mem: &janus_accel::GuestMemory, chain: &Chain) -> (u8, u32) {
        let mut hdr = [0u8; 16];
        if chain.read_at(mem, 0, &mut hdr) < 16 {
            return (S_IOERR, 0);
        }
        let kind = u32::from_le_bytes(hdr[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
        // The data: readable bytes after the header, writable bytes before the status byte.
        let out_len = chain.readable_len().saturating_sub(16);
        let in_len = chain.writable_len().saturating_sub(1);
        let range = |len: u64| {
            let ok = len % SECTOR == 0
                && len <= MAX_REQUEST
                && sector
                    .checked_add(len / SECTOR)
                    .is_some_and(|end| end <= self.disk.sectors());
            ok.then_some(sector * SECTOR)
        };
        match kind {
            T_IN => {
                let Some(offset) = range(in_len) else {
                    return (S_IOERR, 0);
                };
                let mut buf = vec![0u8; in_len as usize];
                if let Err(e) = self.disk.read(offset, &mut buf) {
                    return (self.io_error("read", &e), 0);
                }
                let n = chain.write_at(mem, 0, &buf);
                (S_OK, n as u32)
            }
            T_OUT => {
                if self.disk.readonly {
                    return (S_IOERR, 0);
                }
                let Some(offset) = range(out_len) else {
                    return (S_IOERR, 0);
                };
                let mut buf = vec![0u8; out_len as usize];
                if chain.read_at(mem, 16, &mut buf) < buf.len() {
                    return (S_IOERR, 0);
                }
                match self.disk.write(offset, &buf) {
                    Ok(()) => (S_OK, 0),
                    Err(e) => (self.io_error("write", &e), 0),
                }
            }
            T_FLUSH => match self.disk.flush() {
                Ok(()) => (S_OK, 0),
                Err(e) => (self.io_error("flush", &e), 0),
            },
            T_GET_ID => {
                let mut id = [0u8; 20];
                id[..self.serial.len()].copy_from_slice(self.serial.as_bytes());
                let n = chain.write_at(mem, 0, &id[..(in_len as usize).min(20)]);
                (S_OK, n as u32)
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if self.disk.readonly {
                    return (S_IOERR, 0);
                }
                // Segments of 16 bytes: sector, num_sectors, flags.
                if out_len == 0 || out_len % 16 != 0 || out_len / 16 > u64::from(MAX_DISCARD_SEG) {
                    return (S_IOERR, 0);
                }
                let mut segs = vec![0u8; out_len as usize];
                if chain.read_at(mem, 16, &mut segs) < segs.len() {
                    return (S_IOERR, 0);
                }
                for s in segs.chunks(16) {
                    let start = u64::from_le_bytes(s[0..8].try_into().unwrap_or_default());
                    let n = u64::from(u32::from_le_bytes(s[8..12].try_into().unwrap_or_default()));
                    if start.checked_add(n).is_none_or(|e| e > self.disk.sectors()) {
                        return (S_IOERR, 0);
                    }
                    if let Err(e) = self.disk.zero(start * SECTOR, n * SECTOR) {
                        return (self.io_error("discard", &e), 0);
                    }
                }
                (S_OK, 0)
            }
            _ => (S_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Blk {
    fn label(&self) -> &str {
        "blk"
    }
    fn device_type(&self) -> u32 {
        id::BLOCK
    }
    fn features(&self) -> u64 {
        let mut f = F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if self.disk.readonly {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        f
    }
    fn queue_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 60];
        let mut put = |at: usize, b: &[u8]| c[at..at + b.len()].copy_from_slice(b);
        put(0, &self.disk.sectors().to_le_bytes());
        // seg_max: a chain holds the header and the status besides its data.
        put(12, &u32::from(QUEUE_SIZE - 2).to_le_bytes());
        put(20, &(SECTOR as u32).to_le_bytes());
        let max = (MAX_REQUEST / SECTOR) as u32;
        put(36, &max.to_le_bytes());
        put(40, &MAX_DISCARD_SEG.to_le_bytes());
        put(44, &1u32.to_le_bytes());
        put(48, &max.to_le_bytes());
        put(52, &MAX_DISCARD_SEG.to_le_bytes());
        put(56, &[1]);
        c
    }
    fn notify(
        &mut self,
        ctx: &DeviceContext,
        _index: usize,
        queue: &mut Queue,
    ) -> Result<bool, QueueError> {
        queue.serve_batch(&ctx.mem, |chain| {
            let (status, len) = if chain.bad.is_some() {
                (S_IOERR, 0)
            } else {
                self.serve(&ctx.mem, chain)
            };
            if status != S_OK {
                self.errors += 1;
            }
            // The status byte is the last writable byte.
            let total = chain.writable_len();
            let written = if total > 0 {
                chain.write_at(&ctx.mem, total - 1, &[status])
            } else {
                0
            };
            len + written as u32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::tests::{DESC, USED, config, desc, mem, offer};
    use crate::virtio::queue::{DESC_F_NEXT, DESC_F_WRITE};

    fn image(bytes: usize) -> (tempdir::Dir, PathBuf) {
        let d = tempdir::Dir::new();
        let p = d.0.join("disk.img");
        let data: Vec<u8> = (0..bytes).map(|i| (i / 512) as u8).collect();
        std::fs::write(&p, data).unwrap();
        (d, p)
    }

    mod tempdir {
        /// A directory removed when dropped.
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "janus-blk-{}-{}",
                    std::process::id(),
                    fastrand::u64(..)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// Runs one request: header (type, sector), `data` (readable, or `in_len` writable bytes),
    /// a status byte. Returns (status, used length, the bytes read in).
    fn request(
        blk: &mut Blk,
        q: &mut Queue,
        m: &janus_accel::GuestMemory,
        kind: u32,
        sector: u64,
        data: &[u8],
        in_len: u32,
    ) -> (u8, u32, Vec<u8>) {
        m.write_le(0x8000, 4, kind.into()).unwrap();
        m.write_le(0x8008, 8, sector).unwrap();
        desc(m, DESC, 0, 0x8000, 16, DESC_F_NEXT, 1);
        if in_len > 0 {
            desc(m, DESC, 1, 0x1_0000, in_len, DESC_F_NEXT | DESC_F_WRITE, 2);
        } else {
            m.write(0x1_0000, data).unwrap();
            desc(m, DESC, 1, 0x1_0000, data.len() as u32, DESC_F_NEXT, 2);
        }
        desc(m, DESC, 2, 0x9000, 1, DESC_F_WRITE, 0);
        m.write(0x9000, &[0xee]).unwrap();
        offer(m, 8, &[0]);
        let ctx = DeviceContext {
            mem: m.clone(),
            features: 0,
            waker: crate::virtio::worker::Waker::detached(),
        };
        assert!(blk.notify(&ctx, 0, q).unwrap());
        let used = m.read_le(USED + 2, 2).unwrap() - 1;
        let len = m.read_le(USED + 8 + 8 * (used % 8), 4).unwrap() as u32;
        let mut buf = vec![0u8; in_len as usize];
        m.read(0x1_0000, &mut buf).unwrap();
        (m.read_le(0x9000, 1).unwrap() as u8, len, buf)
    }

    #[test]
    fn reads_writes_flushes_and_refuses_what_it_cannot_serve() {
        let (_d, p) = image(8 * 512);
        let m = mem();
        let mut q = Queue::new(&m, &config(8), false).unwrap();
        let spec: DriveSpec = format!("file={}", p.display()).parse().unwrap();
        let mut blk = Blk::new(spec.open().unwrap(), "janus-vda");
        assert_eq!(blk.config()[0], 8, "capacity");
        let (s, len, data) = request(&mut blk, &mut q, &m, T_IN, 2, &[], 1024);
        assert_eq!((s, len), (S_OK, 1025));
        assert_eq!((data[0], data[600]), (2, 3));
        let (s, _, _) = request(&mut blk, &mut q, &m, T_OUT, 7, &[0xab; 512], 0);
        assert_eq!(s, S_OK);
        assert_eq!(request(&mut blk, &mut q, &m, T_FLUSH, 0, &[], 0).0, S_OK);
        assert_eq!(std::fs::read(&p).unwrap()[7 * 512], 0xab);
        // Past the end, not a whole sector, an unknown type.
        assert_eq!(request(&mut blk, &mut q, &m, T_IN, 7, &[], 1024).0, S_IOERR);
        assert_eq!(
            request(&mut blk, &mut q, &m, T_OUT, 0, &[1; 100], 0).0,
            S_IOERR
        );
        assert_eq!(request(&mut blk, &mut q, &m, 99, 0, &[], 0).0, S_UNSUPP);
        let (s, len, id) = request(&mut blk, &mut q, &m, T_GET_ID, 0, &[], 20);
        assert_eq!((s, len), (S_OK, 21));
        assert_eq!(&id[..9], b"janus-vda");
        // Write zeroes over sector 1.
        let mut seg = [0u8; 16];
        seg[0] = 1;
        seg[8] = 1;
        assert_eq!(
            request(&mut blk, &mut q, &m, T_WRITE_ZEROES, 0, &seg, 0).0,
            S_OK
        );
        let (_, _, data) = request(&mut blk, &mut q, &m, T_IN, 1, &[], 512);
        assert_eq!(data, [0; 512]);
        assert_eq!(blk.errors, 3);
    }

    #[test]
    fn snapshot_keeps_writes_in_memory_and_readonly_refuses_them() {
        let (_d, p) = image(4 * 512);
        let before = std::fs::read(&p).unwrap();
        let m = mem();
        let mut q = Queue::new(&m, &config(8), false).unwrap();
        let spec: DriveSpec = format!("file={},snapshot=on", p.display()).parse().unwrap();
        let mut blk = Blk::new(spec.open().unwrap(), "s");
        assert_eq!(
            request(&mut blk, &mut q, &m, T_OUT, 1, &[0x5a; 512], 0).0,
            S_OK
        );
        let (_, _, data) = request(&mut blk, &mut q, &m, T_IN, 1, &[], 1024);
        assert_eq!((data[0], data[511], data[512]), (0x5a, 0x5a, 2));
        assert_eq!(request(&mut blk, &mut q, &m, T_FLUSH, 0, &[], 0).0, S_OK);
        assert_eq!(std::fs::read(&p).unwrap(), before);
        let spec: DriveSpec = format!("file={},readonly=on", p.display()).parse().unwrap();
        let mut blk = Blk::new(spec.open().unwrap(), "r");
        assert_ne!(blk.features() & F_RO, 0);
        let mut q = Queue::new(&m, &config(8), false).unwrap();
        m.write(USED, &[0; 8]).unwrap();
        m.write(crate::virtio::queue::tests::AVAIL, &[0; 8])
            .unwrap();
        assert_eq!(
            request(&mut blk, &mut q, &m, T_OUT, 1, &[1; 512], 0).0,
            S_IOERR
        );
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn drive_options_parse_as_qemu_spells_them_and_bad_ones_are_one_line() {
        let d: DriveSpec = "file=/x.img,if=virtio,readonly=on,cache=unsafe,format=raw"
            .parse()
            .unwrap();
        assert_eq!(
            d,
            DriveSpec {
                file: "/x.img".into(),
                readonly: true,
                snapshot: false,
                cache: CacheMode::Unsafe,
                mmio: false,
            }
        );
        for bad in [
            "if=virtio",
            "file=a,if=ide",
            "file=a,format=qcow2",
            "file=a,cache=fast",
            "file=a,readonly=maybe",
            "file=a,bogus=1",
            "file=a,x",
        ] {
            let e = bad.parse::<DriveSpec>().unwrap_err().to_string();
            assert!(e.starts_with("--drive ") && !e.contains('\n'), "{bad}: {e}");
        }
        let dir = tempdir::Dir::new();
        let e = DriveSpec::from_str_for_test(&format!("file={}", dir.0.display()));
        assert!(matches!(e, Err(DriveError::NotAFile(_))));
        let e = DriveSpec::from_str_for_test(&format!("file={}/missing", dir.0.display()));
        assert!(matches!(e, Err(DriveError::Open { .. })));
        let ro = dir.0.join("ro.img");
        std::fs::write(&ro, [0u8; 512]).unwrap();
        let mut perm = std::fs::metadata(&ro).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&ro, perm).unwrap();
        let e = DriveSpec::from_str_for_test(&format!("file={}", ro.display()));
        assert!(matches!(e, Err(DriveError::ReadOnly(_))));
        assert!(
            DriveSpec::from_str_for_test(&format!("file={},readonly=on", ro.display())).is_ok()
        );
    }

    impl DriveSpec {
        fn from_str_for_test(s: &str) -> Result<Disk, DriveError> {
            s.parse::<DriveSpec>()?.open()
        }
    }
}
