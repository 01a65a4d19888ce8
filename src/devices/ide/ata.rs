//! An IDE drive: its image, its status and error registers, its PIO data buffer, and the ATA
//! commands (IDENTIFY, READ/WRITE SECTORS with their EXT forms, FLUSH, and the housekeeping
//! ones a driver sends). ATAPI's PACKET command and the SCSI commands it carries are in
//! [`super::atapi`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{ERROR_ABRT, TaskFile, status};

/// A hard disk's sector.
pub const SECTOR: usize = 512;
/// A CD's block.
pub const CD_BLOCK: usize = 2048;
/// Error register: ID not found (an LBA past the end).
const ERROR_IDNF: u8 = 0x10;

/// What a drive holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// An ATA hard disk (512-byte sectors).
    Disk,
    /// An ATAPI CD-ROM (2048-byte blocks, read-only).
    Cdrom,
}

/// Why a drive's image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The image.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An image too small to hold one sector or block.
    #[error("{path} is {size} bytes: a {what} image needs at least {min}")]
    TooSmall {
        /// The image.
        path: String,
        /// Its size.
        size: u64,
        /// "disk" or "CD".
        what: &'static str,
        /// The least size.
        min: usize,
    },
}

/// What the data register is doing.
#[derive(Debug)]
pub(super) enum Transfer {
    /// Nothing.
    None,
    /// One buffer to the host, then done (IDENTIFY).
    Buffer,
    /// Sectors to the host: the next LBA and how many after the one in the buffer.
    Read { lba: u64, left: u32 },
    /// Sectors from the host: the LBA the buffer goes to and how many with it.
    Write { lba: u64, left: u32 },
    /// An ATAPI command packet from the host.
    Packet,
    /// ATAPI data to the host: bytes not yet sent, blocks still to read, the byte count limit.
    PacketIn {
        rest: Vec<u8>,
        lba: u64,
        blocks: u32,
        limit: usize,
    },
}

/// One drive.
pub struct Drive {
    pub(super) media: Media,
    file: File,
    /// Sectors (disk) or blocks (CD).
    pub(super) blocks: u64,
    readonly: bool,
    pub(super) status: u8,
    pub(super) error: u8,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) xfer: Transfer,
    /// SCSI sense of the last ATAPI command: key, ASC, ASCQ.
    pub(super) sense: [u8; 3],
}

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive")
            .field("media", &self.media)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl Drive {
    /// Opens `path` as `media` (a CD is always read-only).
    ///
    /// # Errors
    /// The file cannot be opened, or is smaller than one sector (disk) or block (CD).
    pub fn open(path: &Path, media: Media, readonly: bool) -> Result<Self, DriveError> {
        let readonly = readonly || media == Media::Cdrom;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|source| DriveError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let size = file
            .metadata()
            .map_err(|source| DriveError::Open {
                path: path.display().to_string(),
                source,
            })?
            .len();
        Self::from_file(file, size, media, readonly).map_err(|(what, min)| DriveError::TooSmall {
            path: path.display().to_string(),
            size,
            what,
            min,
        })
    }

    /// A drive over an open file of `size` bytes; the error names the media and least size.
    pub(super) fn from_file(
        file: File,
        size: u64,
        media: Media,
        readonly: bool,
    ) -> Result<Self, (&'static str, usize)> {
        let (unit, what) = match media {
            Media::Disk => (SECTOR, "disk"),
            Media::Cdrom => (CD_BLOCK, "CD"),
        };
        if size < unit as u64 {
            return Err((what, unit));
        }
        let mut d = Drive {
            media,
            file,
            blocks: size / unit as u64,
            readonly,
            status: 0,
            error: 0,
            buf: Vec::new(),
            pos: 0,
            xfer: Transfer::None,
            sense: [0; 3],
        };
        d.reset();
        Ok(d)
    }

    /// Whether it is an ATAPI (packet) device.
    pub fn is_packet(&self) -> bool {
        self.media == Media::Cdrom
    }

    /// After a reset or EXECUTE DEVICE DIAGNOSTIC: no transfer, diagnostics passed (error 1);
    /// a disk is ready, a packet device shows status 0 until its first command.
    pub(super) fn reset(&mut self) {
        self.xfer = Transfer::None;
        self.buf.clear();
        self.pos = 0;
        self.error = 1;
        self.status = if self.is_packet() {
            0
        } else {
            status::DRDY | status::DSC
        };
    }

    /// Ends a command successfully (interrupt).
    pub(super) fn ok(&mut self) -> bool {
        self.error = 0;
        self.status = status::DRDY | status::DSC;
        self.xfer = Transfer::None;
        true
    }

    /// Ends a command with ERR and `error` (interrupt).
    pub(super) fn fail(&mut self, error: u8) -> bool {
        self.error = error;
        self.status = status::DRDY | status::ERR;
        self.xfer = Transfer::None;
        true
    }

    /// Reads `n` units at `lba` into a new buffer.
    pub(super) fn read_units(&self, lba: u64, n: u64, unit: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n as usize * unit];
        self.file.read_exact_at(&mut b, lba * unit as u64)?;
        Ok(b)
    }

    /// Runs ATA command `cmd` with the task file `tf`: whether to interrupt.
    pub(super) fn command(&mut self, tf: &mut TaskFile, cmd: u8) -> bool {
        if self.is_packet() {
            return self.packet_command(tf, cmd);
        }
        match cmd {
            0xec => {
                self.buf = identify_disk(self.blocks);
                self.start_in(Transfer::Buffer)
            }
            0x20 | 0x21 => self.start_read(tf.lba28(), tf.count28()),
            0x24 => self.start_read(tf.lba48(), tf.count48()),
            0x30 | 0x31 => self.start_write(tf.lba28(), tf.count28()),
            0x34 => self.start_write(tf.lba48(), tf.count48()),
            0xe7 | 0xea => {
                if self.readonly || self.file.sync_data().is_ok() {
                    self.ok()
                } else {
                    self.fail(ERROR_ABRT)
                }
            }
            0xe5 => {
                tf.nsector[0] = 0xff; // CHECK POWER MODE: active
                self.ok()
            }
            0x90 => {
                tf.signature(false);
                self.reset();
                true
            }
            // Verify, initialize device parameters, set features, recalibrate, idle/standby.
            0x40..=0x42 | 0x91 | 0xef | 0x10..=0x1f | 0xe0..=0xe3 => self.ok(),
            _ => self.fail(ERROR_ABRT),
        }
    }

    /// Starts a transfer to the host from `self.buf` (interrupt).
    pub(super) fn start_in(&mut self, xfer: Transfer) -> bool {
        self.pos = 0;
        self.error = 0;
        self.xfer = xfer;
        self.status = status::DRDY | status::DSC | status::DRQ;
        true
    }

    fn in_range(&self, lba: u64, count: u32) -> bool {
        lba.checked_add(u64::from(count))
            .is_some_and(|end| end <= self.blocks)
    }

    fn start_read(&mut self, lba: u64, count: u32) -> bool {
        if !self.in_range(lba, count) {
            return self.fail(ERROR_IDNF | ERROR_ABRT);
        }
        match self.read_units(lba, 1, SECTOR) {
            Ok(b) => {
                self.buf = b;
                self.start_in(Transfer::Read {
                    lba: lba + 1,
                    left: count - 1,
                })
            }
            Err(_) => self.fail(ERROR_ABRT),
        }
    }

    fn start_write(&mut self, lba: u64, count: u32) -> bool {
        if self.readonly {
            return self.fail(ERROR_ABRT);
        }
        if !self.in_range(lba, count) {
            return self.fail(ERROR_IDNF | ERROR_ABRT);
        }
        self.buf = vec![0; SECTOR];
        self.pos = 0;
        self.error = 0;
        self.xfer = Transfer::Write { lba, left: count };
        // PIO out: the first block is asked for without an interrupt.
        self.status = status::DRDY | status::DSC | status::DRQ;
        false
    }

    /// A read of the data register: whether to interrupt (the next block is ready).
    pub(super) fn read_data(&mut self, tf: &mut TaskFile, data: &mut [u8]) -> bool {
        if self.status & status::DRQ == 0 || matches!(self.xfer, Transfer::Write { .. }) {
            data.fill(0xff);
            return false;
        }
        for b in data.iter_mut() {
            *b = self.buf.get(self.pos).copied().unwrap_or(0xff);
            self.pos += 1;
        }
        if self.pos < self.buf.len() {
            return false;
        }
        match std::mem::replace(&mut self.xfer, Transfer::None) {
            Transfer::Read { lba, left } if left > 0 => match self.read_units(lba, 1, SECTOR) {
                Ok(b) => {
                    self.buf = b;
                    self.start_in(Transfer::Read {
                        lba: lba + 1,
                        left: left - 1,
                    })
                }
                Err(_) => self.fail(ERROR_ABRT),
            },
            Transfer::PacketIn {
                rest,
                lba,
                blocks,
                limit,
            } => self.next_packet_chunk(tf, rest, lba, blocks, limit),
            _ => {
                self.status = status::DRDY | status::DSC;
                false
            }
        }
    }

    /// A write of the data register: whether to interrupt.
    pub(super) fn write_data(&mut self, tf: &mut TaskFile, data: &[u8]) -> bool {
        if self.status & status::DRQ == 0 {
            return false;
        }
        if !matches!(self.xfer, Transfer::Write { .. } | Transfer::Packet) {
            return false;
        }
        for &b in data {
            if let Some(slot) = self.buf.get_mut(self.pos) {
                *slot = b;
            }
            self.pos += 1;
        }
        if self.pos < self.buf.len() {
            return false;
        }
        match std::mem::replace(&mut self.xfer, Transfer::None) {
            Transfer::Write { lba, left } => {
                if self
                    .file
                    .write_all_at(&self.buf, lba * SECTOR as u64)
                    .is_err()
                {
                    return self.fail(ERROR_ABRT);
                }
                if left > 1 {
                    self.pos = 0;
                    self.xfer = Transfer::Write {
                        lba: lba + 1,
                        left: left - 1,
                    };
                    self.status = status::DRDY | status::DSC | status::DRQ;
                    true
                } else {
                    self.ok()
                }
            }
            Transfer::Packet => self.run_packet(tf),
            _ => false,
        }
    }
}

/// Puts `s` in IDENTIFY words `words` as ATA strings (two characters a word, first one in the
/// high byte), padded with spaces.
pub(super) fn ata_string(id: &mut [u16], words: std::ops::Range<usize>, s: &str) {
    let mut bytes = s.as_bytes().to_vec();
    bytes.resize(words.len() * 2, b' ');
    for (i, w) in words.enumerate() {
        let k = i * 2;
        id[w] = u16::from(bytes[k]) << 8 | u16::from(bytes[k + 1]);
    }
}

/// IDENTIFY words as 512 bytes, little-endian.
pub(super) fn id_bytes(id: &[u16; 256]) -> Vec<u8> {
    id.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// IDENTIFY DEVICE of a disk of `sectors` sectors: LBA and LBA48, PIO modes 3-4, no DMA, no
/// READ/WRITE MULTIPLE, FLUSH CACHE (EXT).
fn identify_disk(sectors: u64) -> Vec<u8> {
    let mut id = [0u16; 256];
    let cyls = (sectors / (16 * 63)).clamp(1, 16383) as u16;
    id[0] = 0x0040;
    id[1] = cyls;
    id[3] = 16;
    id[6] = 63;
    ata_string(&mut id, 10..20, "JANUS-HD0");
    ata_string(&mut id, 23..27, "1.0");
    ata_string(&mut id, 27..47, "JANUS HARDDISK");
    id[49] = 1 << 9; // LBA
    id[50] = 0x4000;
    id[51] = 0x0200;
    id[53] = 0x0003; // words 54-58 and 64-70 valid
    id[54] = cyls;
    id[55] = 16;
    id[56] = 63;
    let chs = u32::from(cyls) * 16 * 63;
    id[57] = chs as u16;
    id[58] = (chs >> 16) as u16;
    let lba28 = sectors.min(0x0fff_ffff) as u32;
    id[60] = lba28 as u16;
    id[61] = (lba28 >> 16) as u16;
    id[64] = 0x0003; // PIO 3 and 4
    id[65..=68].fill(120);
    id[80] = 0x00f0; // ATA/ATAPI-4 to -7
    id[82] = 1 << 14;
    id[83] = 1 << 14 | 1 << 13 | 1 << 12 | 1 << 10; // FLUSH EXT, FLUSH, LBA48
    id[84] = 1 << 14;
    id[85] = 1 << 14;
    id[86] = 1 << 13 | 1 << 12 | 1 << 10;
    id[87] = 1 << 14;
    id[93] = 1 | 1 << 14 | 1 << 13;
    for (i, w) in (100..104).enumerate() {
        id[w] = (sectors >> (16 * i)) as u16;
    }
    id_bytes(&id)
}
