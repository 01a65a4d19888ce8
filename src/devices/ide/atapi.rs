//! ATAPI: the PACKET command and the SCSI (MMC) commands a CD-ROM answers, enough for SeaBIOS's
//! El Torito boot and Linux's sr driver: TEST UNIT READY, REQUEST SENSE, INQUIRY, MODE SENSE,
//! READ CAPACITY, READ(10)/(12), READ TOC, GET CONFIGURATION, GET EVENT STATUS NOTIFICATION,
//! and the ones with nothing to do (PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT, SEEK, SET
//! CD SPEED). Anything else ends with CHECK CONDITION, sense ILLEGAL REQUEST / invalid opcode.
//!
//! Data goes to the host in chunks of at most the byte count the driver wrote to LBA mid/high
//! with the PACKET command; each chunk raises an interrupt with the interrupt reason (sector
//! count register) I/O=1 C/D=0, and the end of the command one with I/O=1 C/D=1.

use super::ata::{CD_BLOCK, Drive, Transfer, ata_string, id_bytes};
use super::{ERROR_ABRT, TaskFile, status};

/// The packet's size.
pub const PACKET_LEN: usize = 12;
/// Interrupt reason: command/data (1 = command).
const IREASON_COD: u8 = 1;
/// Interrupt reason: direction (1 = to the host).
const IREASON_IO: u8 = 2;
/// Sense key: illegal request.
const ILLEGAL_REQUEST: u8 = 5;
/// ASC: invalid command operation code.
const ASC_INVALID_OPCODE: u8 = 0x20;
/// ASC: logical block address out of range.
const ASC_LBA_OUT_OF_RANGE: u8 = 0x21;
/// ASC: invalid field in CDB.
const ASC_INVALID_FIELD: u8 = 0x24;
/// The most blocks read into memory at once.
const MAX_BLOCKS_AT_ONCE: usize = 32;

/// What a SCSI command produced.
enum Reply {
    /// Done, nothing to send.
    Done,
    /// Bytes to send (already cut to the allocation length).
    Data(Vec<u8>),
    /// Blocks of the disc to send.
    Blocks { lba: u64, count: u32 },
}

fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// An LBA as MSF (minutes, seconds, frames; 150 frames of lead-in), in 4 bytes.
fn msf(lba: u64) -> [u8; 4] {
    let f = lba + 150;
    [0, (f / 75 / 60) as u8, (f / 75 % 60) as u8, (f % 75) as u8]
}

/// Cuts `v` to the allocation length `alloc`.
fn cut(mut v: Vec<u8>, alloc: usize) -> Reply {
    v.truncate(alloc);
    Reply::Data(v)
}

impl Drive {
    /// ATA commands of a packet device: whether to interrupt.
    pub(super) fn packet_command(&mut self, tf: &mut TaskFile, cmd: u8) -> bool {
        match cmd {
            0xa1 => {
                self.buf = identify_packet();
                self.start_in(Transfer::Buffer)
            }
            0xa0 if tf.feature[0] & 1 == 0 => {
                self.buf = vec![0; PACKET_LEN];
                self.pos = 0;
                self.error = 0;
                self.xfer = Transfer::Packet;
                tf.nsector[0] = IREASON_COD;
                self.status = status::DRDY | status::DRQ;
                false
            }
            // IDENTIFY DEVICE: aborted, with the packet signature for the driver to see.
            0xec => {
                tf.signature(true);
                self.fail(ERROR_ABRT)
            }
            0x08 | 0x90 => {
                tf.signature(true);
                self.reset();
                cmd == 0x90
            }
            0xef | 0xe0..=0xe5 => self.ok(),
            _ => self.fail(ERROR_ABRT),
        }
    }

    /// Runs the packet in the buffer: whether to interrupt.
    pub(super) fn run_packet(&mut self, tf: &mut TaskFile) -> bool {
        let cdb: [u8; PACKET_LEN] = self.buf[..PACKET_LEN].try_into().unwrap_or([0; 12]);
        let limit = match usize::from(tf.lba_high[0]) << 8 | usize::from(tf.lba_mid[0]) {
            0 | 0xffff => 0xfffe,
            n => n & !1,
        }
        .max(2);
        match self.scsi(&cdb) {
            Ok(reply) => {
                self.sense = [0; 3];
                let (rest, lba, blocks) = match reply {
                    Reply::Done => (Vec::new(), 0, 0),
                    Reply::Data(v) => (v, 0, 0),
                    Reply::Blocks { lba, count } => (Vec::new(), lba, count),
                };
                self.next_packet_chunk(tf, rest, lba, blocks, limit)
            }
            Err(sense) => {
                self.sense = sense;
                tf.nsector[0] = IREASON_IO | IREASON_COD;
                self.fail(sense[0] << 4 | ERROR_ABRT)
            }
        }
    }

    /// Sends the next chunk (up to `limit` bytes of `rest`, then of `blocks` blocks from
    /// `lba`), or ends the command: whether to interrupt (always).
    pub(super) fn next_packet_chunk(
        &mut self,
        tf: &mut TaskFile,
        mut rest: Vec<u8>,
        lba: u64,
        blocks: u32,
        limit: usize,
    ) -> bool {
        let (mut lba, mut blocks) = (lba, blocks);
        if rest.is_empty() && blocks > 0 {
            let n = (limit / CD_BLOCK)
                .clamp(1, MAX_BLOCKS_AT_ONCE)
                .min(blocks as usize);
            match self.read_units(lba, n as u64, CD_BLOCK) {
                Ok(b) => rest = b,
                Err(_) => {
                    self.sense = [3, 0x11, 0]; // medium error, unrecovered read error
                    tf.nsector[0] = IREASON_IO | IREASON_COD;
                    return self.fail(3 << 4 | ERROR_ABRT);
                }
            }
            lba += n as u64;
            blocks -= n as u32;
        }
        if rest.is_empty() {
            tf.nsector[0] = IREASON_IO | IREASON_COD;
            return self.ok();
        }
        let n = limit.min(rest.len());
        let tail = rest.split_off(n);
        self.buf = rest;
        tf.lba_mid[0] = n as u8;
        tf.lba_high[0] = (n >> 8) as u8;
        tf.nsector[0] = IREASON_IO;
        self.start_in(Transfer::PacketIn {
            rest: tail,
            lba,
            blocks,
            limit,
        })
    }

    /// One SCSI command: its reply, or the sense of its CHECK CONDITION.
    fn scsi(&self, cdb: &[u8; PACKET_LEN]) -> Result<Reply, [u8; 3]> {
        let blocks = self.blocks;
        let illegal = |asc| [ILLEGAL_REQUEST, asc, 0];
        Ok(match cdb[0] {
            // TEST UNIT READY, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, SEEK, SET CD SPEED.
            0x00 | 0x1b | 0x1e | 0x2b | 0xbb => Reply::Done,
            0x03 => {
                let mut s = vec![0u8; 18];
                s[0] = 0x70;
                s[2] = self.sense[0];
                s[7] = 10;
                s[12] = self.sense[1];
                s[13] = self.sense[2];
                cut(s, usize::from(cdb[4]))
            }
            0x12 => {
                let mut q = vec![0u8; 36];
                q[0] = 0x05; // CD/DVD
                q[1] = 0x80; // removable
                q[2] = 0x05; // SPC-3
                q[3] = 0x32; // response format 2
                q[4] = 31;
                q[8..16].copy_from_slice(b"JANUS   ");
                q[16..32].copy_from_slice(b"CD-ROM          ");
                q[32..36].copy_from_slice(b"1.0 ");
                cut(q, be16(&cdb[3..5]))
            }
            0x25 => {
                let mut r = (blocks.saturating_sub(1).min(u64::from(u32::MAX)) as u32)
                    .to_be_bytes()
                    .to_vec();
                r.extend_from_slice(&(CD_BLOCK as u32).to_be_bytes());
                Reply::Data(r)
            }
            0x28 | 0xa8 => {
                let lba = u64::from(be32(&cdb[2..6]));
                let count = if cdb[0] == 0x28 {
                    be16(&cdb[7..9]) as u32
                } else {
                    be32(&cdb[6..10])
                };
                if lba + u64::from(count) > blocks {
                    return Err(illegal(ASC_LBA_OUT_OF_RANGE));
                }
                Reply::Blocks { lba, count }
            }
            0x43 => {
                let time = cdb[1] & 2 != 0;
                let addr = |lba: u64| {
                    if time {
                        msf(lba)
                    } else {
                        (lba as u32).to_be_bytes()
                    }
                };
                let alloc = be16(&cdb[7..9]);
                match cdb[2] & 0x0f {
                    0 => {
                        let mut t = vec![0, 18, 1, 1];
                        t.extend_from_slice(&[0, 0x14, 1, 0]);
                        t.extend_from_slice(&addr(0));
                        t.extend_from_slice(&[0, 0x14, 0xaa, 0]);
                        t.extend_from_slice(&addr(blocks));
                        cut(t, alloc)
                    }
                    1 => {
                        let mut t = vec![0, 10, 1, 1, 0, 0x14, 1, 0];
                        t.extend_from_slice(&addr(0));
                        cut(t, alloc)
                    }
                    _ => return Err(illegal(ASC_INVALID_FIELD)),
                }
            }
            // MODE SENSE (6) and (10): the capabilities page (0x2A) or all pages.
            0x1a | 0x5a => {
                let page = cdb[2] & 0x3f;
                if page != 0x2a && page != 0x3f {
                    return Err(illegal(ASC_INVALID_FIELD));
                }
                let mut p = vec![0u8; 22];
                p[0] = 0x2a;
                p[1] = 20;
                p[2] = 0x01; // reads CD-R
                p[4] = 0x71; // audio play, multisession, mode 2 forms
                p[6] = 0x29; // tray, eject, lock
                p[8..10].copy_from_slice(&706u16.to_be_bytes()); // 4x, in kB/s
                if cdb[0] == 0x5a {
                    let len = (6 + p.len()) as u16;
                    let mut h = vec![0u8; 8];
                    h[..2].copy_from_slice(&len.to_be_bytes());
                    h.extend_from_slice(&p);
                    cut(h, be16(&cdb[7..9]))
                } else {
                    let mut h = vec![(3 + p.len()) as u8, 0, 0, 0];
                    h.extend_from_slice(&p);
                    cut(h, usize::from(cdb[4]))
                }
            }
            0x46 => {
                // GET CONFIGURATION: the header only, current profile CD-ROM (0x0008).
                cut(vec![0, 0, 0, 4, 0, 0, 0, 0x08], be16(&cdb[7..9]))
            }
            0x4a => {
                if cdb[1] & 1 == 0 {
                    return Err(illegal(ASC_INVALID_FIELD));
                }
                // No event available; media events supported.
                cut(vec![0, 2, 0x80, 0x10], be16(&cdb[7..9]))
            }
            _ => return Err(illegal(ASC_INVALID_OPCODE)),
        })
    }
}

/// IDENTIFY PACKET DEVICE of the CD-ROM: ATAPI, CD/DVD, removable, 12-byte packets, PIO only.
fn identify_packet() -> Vec<u8> {
    let mut id = [0u16; 256];
    id[0] = 0x85c0;
    ata_string(&mut id, 10..20, "JANUS-CD0");
    ata_string(&mut id, 23..27, "1.0");
    ata_string(&mut id, 27..47, "JANUS DVD-ROM");
    id[49] = 1 << 9; // LBA
    id[53] = 0x0002;
    id[64] = 0x0003;
    id[65..=68].fill(120);
    id[80] = 0x001e;
    id[93] = 1 | 1 << 14 | 1 << 13;
    id_bytes(&id)
}
