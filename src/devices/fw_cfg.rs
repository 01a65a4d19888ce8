//! QEMU's firmware configuration interface (fw_cfg), as SeaBIOS, OVMF and Linux's
//! `qemu_fw_cfg` driver read it: items selected by a 16-bit key, read byte by byte or by DMA.
//!
//! ```text
//! 0x510  selector (16-bit write): the item; its read cursor goes back to 0
//! 0x511  data (8-bit read): the selected item's next byte, 0 past its end; writes are ignored
//! 0x514  DMA address, high 32 bits, big-endian; reads give "QEMU CFG"
//! 0x518  DMA address, low 32 bits, big-endian: writing it runs the transfer
//! ```
//!
//! A DMA transfer is described by 16 big-endian bytes in guest memory (`FwCfgDmaAccess`:
//! control u32, length u32, address u64). Control bits: ERROR 1, READ 2, SKIP 4, SELECT 8
//! (the key in bits 16-31), WRITE 0x10. janus has no writable item: WRITE sets ERROR, as does
//! any guest address outside RAM. A read past the item's end fills zeros. On completion the
//! control word is written back as 0 (or ERROR). All writes into guest memory go through
//! [`GuestMemory::write_dma`], so translated code over them is dropped.
//!
//! Named items ("files") are listed in the directory at key 0x19 (big-endian count, then
//! 64-byte entries: size u32 BE, select u16 BE, reserved u16, name[56]); they get keys from
//! 0x20 in the order added. [`FwCfg::add_file`] keeps the directory sorted by name, as QEMU does.

use std::collections::BTreeMap;

use janus_accel::GuestMemory;

use crate::bus::BusDevice;

/// The selector port (the data port is one above it).
pub const FW_CFG_PORT: u16 = 0x510;
/// The DMA address registers (high half, then low half at +4).
pub const FW_CFG_DMA_PORT: u16 = 0x514;
/// Ports from the selector to the end of the DMA address.
pub const FW_CFG_PORT_LEN: u64 = 12;

/// The standard keys.
pub mod key {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Interface features: bit 0 the port interface, bit 1 DMA.
    pub const ID: u16 = 0x01;
    /// The machine's UUID (16 bytes).
    pub const UUID: u16 = 0x02;
    /// RAM size, u64 LE.
    pub const RAM_SIZE: u16 = 0x03;
    /// No graphics: u16 LE.
    pub const NOGRAPHIC: u16 = 0x04;
    /// vCPUs present at boot, u16 LE.
    pub const NB_CPUS: u16 = 0x05;
    /// Where a firmware-loaded kernel goes (u32 LE).
    pub const KERNEL_ADDR: u16 = 0x07;
    /// The kernel's size without its setup part (u32 LE).
    pub const KERNEL_SIZE: u16 = 0x08;
    /// Where the initrd goes (u32 LE).
    pub const INITRD_ADDR: u16 = 0x0a;
    /// The initrd's size (u32 LE).
    pub const INITRD_SIZE: u16 = 0x0b;
    /// The boot device (u16 LE, 'c' for disk).
    pub const BOOT_DEVICE: u16 = 0x0c;
    /// NUMA: node count u64 LE, then a u64 per possible CPU, then a u64 per node.
    pub const NUMA: u16 = 0x0d;
    /// Show the boot menu (u16 LE).
    pub const BOOT_MENU: u16 = 0x0e;
    /// vCPUs possible, u16 LE.
    pub const MAX_CPUS: u16 = 0x0f;
    /// The kernel's protected-mode part.
    pub const KERNEL_DATA: u16 = 0x11;
    /// The initrd.
    pub const INITRD_DATA: u16 = 0x12;
    /// Where the command line goes (u32 LE).
    pub const CMDLINE_ADDR: u16 = 0x13;
    /// The command line's size with its NUL (u32 LE).
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// The command line, NUL-terminated.
    pub const CMDLINE_DATA: u16 = 0x15;
    /// Where the kernel's setup (real-mode) part goes (u32 LE).
    pub const SETUP_ADDR: u16 = 0x16;
    /// The setup part's size (u32 LE).
    pub const SETUP_SIZE: u16 = 0x17;
    /// The kernel's setup part (boot sector and real-mode code).
    pub const SETUP_DATA: u16 = 0x18;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// The first key given to a file.
    pub const FILE_FIRST: u16 = 0x20;
    /// Legacy ACPI tables: u16 LE count (janus: 0, the tables are files).
    pub const ACPI_TABLES: u16 = 0x8000;
    /// Legacy SMBIOS entries: u16 LE count.
    pub const SMBIOS_ENTRIES: u16 = 0x8001;
    /// Whether ISA IRQ 0 is overridden to GSI 2 (u32 LE).
    pub const IRQ0_OVERRIDE: u16 = 0x8002;
    /// Legacy e820 reservations: u32 LE count.
    pub const E820_TABLE: u16 = 0x8003;
}

/// ID bits: the traditional port interface and the DMA interface.
pub const ID_TRADITIONAL: u32 = 1;
/// The DMA interface is present.
pub const ID_DMA: u32 = 2;

/// DMA control bits.
pub mod dma {
    /// The transfer failed.
    pub const ERROR: u32 = 1;
    /// Copy from the item to guest memory.
    pub const READ: u32 = 2;
    /// Advance the item's cursor.
    pub const SKIP: u32 = 4;
    /// Select the item in bits 16-31 first.
    pub const SELECT: u32 = 8;
    /// Copy from guest memory to the item.
    pub const WRITE: u32 = 0x10;
}

/// Length of a directory entry's name field (with its NUL).
pub const FILE_NAME_LEN: usize = 56;
/// What a read of the DMA address registers returns (big-endian "QEMU CFG").
pub const DMA_SIGNATURE: &[u8; 8] = b"QEMU CFG";

/// Counters of what the guest did wrong (never an error on the host side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwCfgCounters {
    /// DMA transfers completed.
    pub dma_ok: u64,
    /// DMA transfers that set ERROR (bad address, WRITE, unknown bits).
    pub dma_errors: u64,
}

/// The fw_cfg device.
pub struct FwCfg {
    memory: GuestMemory,
    items: BTreeMap<u16, Vec<u8>>,
    /// Files by name: their keys.
    files: BTreeMap<String, u16>,
    next_file_key: u16,
    selected: u16,
    cursor: usize,
    /// The DMA address's high half, as last written.
    dma_high: u32,
    /// What went wrong, and how often.
    pub counters: FwCfgCounters,
}

impl std::fmt::Debug for FwCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FwCfg")
            .field("files", &self.files)
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

/// Why an item could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// A file name longer than the directory holds.
    #[error("fw_cfg file name {0:?} is longer than {max} bytes", max = FILE_NAME_LEN - 1)]
    NameTooLong(String),
    /// Two files with one name.
    #[error("fw_cfg file {0:?} added twice")]
    Duplicate(String),
    /// The file keys ran out.
    #[error("fw_cfg has no key left for file {0:?}")]
    Full(String),
}

impl FwCfg {
    /// A device over `memory` with the signature, the ID (DMA included), an empty directory
    /// and the legacy counts at zero; the machine adds the rest.
    pub fn new(memory: GuestMemory) -> Self {
        let mut f = FwCfg {
            memory,
            items: BTreeMap::new(),
            files: BTreeMap::new(),
            next_file_key: key::FILE_FIRST,
            selected: 0,
            cursor: 0,
            dma_high: 0,
            counters: FwCfgCounters::default(),
        };
        f.set(key::SIGNATURE, b"QEMU".to_vec());
        f.set_u32(key::ID, ID_TRADITIONAL | ID_DMA);
        f.set(key::UUID, vec![0; 16]);
        f.set_u16(key::NOGRAPHIC, 0);
        f.set_u16(key::BOOT_MENU, 0);
        f.set(key::ACPI_TABLES, vec![0; 2]);
        f.set(key::SMBIOS_ENTRIES, vec![0; 2]);
        f.set_u32(key::E820_TABLE, 0);
        f.rebuild_dir();
        f
    }

    /// Sets item `key` to `bytes`.
    pub fn set(&mut self, key: u16, bytes: Vec<u8>) {
        self.items.insert(key, bytes);
    }
    /// Sets item `key` to a u16, little-endian.
    pub fn set_u16(&mut self, key: u16, v: u16) {
        self.set(key, v.to_le_bytes().to_vec());
    }
    /// Sets item `key` to a u32, little-endian.
    pub fn set_u32(&mut self, key: u16, v: u32) {
        self.set(key, v.to_le_bytes().to_vec());
    }
    /// Sets item `key` to a u64, little-endian.
    pub fn set_u64(&mut self, key: u16, v: u64) {
        self.set(key, v.to_le_bytes().to_vec());
    }

    /// Adds the file `name` holding `bytes`; returns its key.
    ///
    /// # Errors
    /// A name too long, a name already present, or no key left.
    pub fn add_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<u16, FwCfgError> {
        if name.len() >= FILE_NAME_LEN {
            return Err(FwCfgError::NameTooLong(name.into()));
        }
        if self.files.contains_key(name) {
            return Err(FwCfgError::Duplicate(name.into()));
        }
        if self.next_file_key >= key::ACPI_TABLES {
            return Err(FwCfgError::Full(name.into()));
        }
        let k = self.next_file_key;
        self.next_file_key += 1;
        self.files.insert(name.into(), k);
        self.set(k, bytes);
        self.rebuild_dir();
        Ok(k)
    }

    /// The key of file `name`.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        self.files.get(name).copied()
    }

    /// Item `key`'s bytes.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items.get(&key).map(Vec::as_slice)
    }

    fn rebuild_dir(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, &k) in &self.files {
            let size = self.items.get(&k).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&k.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; FILE_NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.items.insert(key::FILE_DIR, dir);
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.cursor = 0;
    }

    /// The selected item's bytes from the cursor (empty past its end or for an unknown key).
    fn remaining(&self) -> &[u8] {
        self.items
            .get(&self.selected)
            .and_then(|b| b.get(self.cursor..))
            .unwrap_or(&[])
    }

    fn read_byte(&mut self) -> u8 {
        match self.remaining().first().copied() {
            Some(b) => {
                self.cursor += 1;
                b
            }
            None => 0,
        }
    }

    /// Runs the DMA transfer described at guest physical `addr`.
    fn dma(&mut self, addr: u64) {
        let mut desc = [0u8; 16];
        if self.memory.read(addr, &mut desc).is_err() {
            self.counters.dma_errors += 1;
            return;
        }
        let control = u32::from_be_bytes([desc[0], desc[1], desc[2], desc[3]]);
        let length = u32::from_be_bytes([desc[4], desc[5], desc[6], desc[7]]);
        let target = u64::from_be_bytes([
            desc[8], desc[9], desc[10], desc[11], desc[12], desc[13], desc[14], desc[15],
        ]);
        if control & dma::SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & dma::WRITE != 0 {
            false
        } else if control & dma::READ != 0 {
            self.dma_read(target, length)
        } else {
            // SKIP (or nothing): advance the cursor.
            if control & dma::SKIP != 0 {
                self.cursor = self.cursor.saturating_add(length as usize);
            }
            true
        };
        let status: u32 = if ok {
            self.counters.dma_ok += 1;
            0
        } else {
            self.counters.dma_errors += 1;
            dma::ERROR
        };
        // The control word is the descriptor's first field.
        let _ = self.memory.write_dma(addr, &status.to_be_bytes());
    }

    /// Copies `length` bytes of the selected item into guest memory at `target`, zeros past
    /// its end; page by page, so a range over two regions fails cleanly.
    fn dma_read(&mut self, target: u64, length: u32) -> bool {
        let mut done = 0u64;
        let length = u64::from(length);
        let mut chunk = Vec::with_capacity(4096);
        while done < length {
            let at = target.wrapping_add(done);
            let n = ((at | 0xfff) + 1 - at).min(length - done) as usize;
            chunk.clear();
            let rem = self.remaining();
            let from_item = rem.len().min(n);
            chunk.extend_from_slice(&rem[..from_item]);
            chunk.resize(n, 0);
            if self.memory.write_dma(at, &chunk).is_err() {
                return false;
            }
            self.cursor = self.cursor.saturating_add(n);
            done += n as u64;
        }
        true
    }
}

impl BusDevice for FwCfg {
    fn label(&self) -> &str {
        "fw-cfg"
    }

    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        match offset {
            1 => {
                for b in data.iter_mut() {
                    *b = self.read_byte();
                }
            }
            4..=11 => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = DMA_SIGNATURE
                        .get(offset as usize - 4 + i)
                        .copied()
                        .unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (0, 1) => self.select(u16::from(data[0])),
            (4, 4) => self.dma_high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
            (8, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let addr = u64::from(self.dma_high) << 32 | u64::from(low);
                self.dma_high = 0;
                self.dma(addr);
            }
            // The data port is read-only; other widths and offsets are dropped.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_accel::RegionKind;

    fn dev() -> (FwCfg, GuestMemory) {
        let mut m = GuestMemory::new();
        m.add(0, 0x10000, RegionKind::Ram).unwrap();
        (FwCfg::new(m.clone()), m)
    }

    fn port_read(f: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
        f.write(0, 0, &key.to_le_bytes());
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                f.read(0, 1, &mut b);
                b[0]
            })
            .collect()
    }

    fn dma_at(f: &mut FwCfg, m: &GuestMemory, desc_at: u64, control: u32, len: u32, to: u64) {
        let mut d = control.to_be_bytes().to_vec();
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&to.to_be_bytes());
        m.write(desc_at, &d).unwrap();
        f.write(0, 4, &((desc_at >> 32) as u32).to_be_bytes());
        f.write(0, 8, &(desc_at as u32).to_be_bytes());
    }

    #[test]
    fn signature_and_id_through_the_ports() {
        let (mut f, _) = dev();
        assert_eq!(port_read(&mut f, key::SIGNATURE, 5), b"QEMU\0");
        assert_eq!(port_read(&mut f, key::ID, 4), [3, 0, 0, 0]);
        // An unknown key reads zeros; the DMA registers read "QEMU CFG".
        assert_eq!(port_read(&mut f, 0x7777, 2), [0, 0]);
        let mut sig = [0u8; 4];
        f.read(0, 4, &mut sig);
        assert_eq!(&sig, b"QEMU");
        f.read(0, 8, &mut sig);
        assert_eq!(&sig, b" CFG");
    }

    #[test]
    fn files_are_listed_sorted_with_their_keys() {
        let (mut f, _) = dev();
        let b = f.add_file("etc/zz", vec![1, 2, 3]).unwrap();
        let a = f.add_file("etc/aa", vec![9]).unwrap();
        assert_eq!((b, a), (0x20, 0x21));
        assert_eq!(
            f.add_file("etc/aa", vec![]),
            Err(FwCfgError::Duplicate("etc/aa".into()))
        );
        assert!(matches!(
            f.add_file(&"x".repeat(56), vec![]),
            Err(FwCfgError::NameTooLong(_))
        ));
        let dir = port_read(&mut f, key::FILE_DIR, 4 + 2 * 64);
        assert_eq!(&dir[..4], &[0, 0, 0, 2]);
        // First entry: etc/aa, size 1, key 0x21.
        assert_eq!(&dir[4..8], &[0, 0, 0, 1]);
        assert_eq!(&dir[8..10], &[0, 0x21]);
        assert_eq!(&dir[12..18], b"etc/aa");
        assert_eq!(&dir[68 + 4..68 + 6], &[0, 0x20]);
        assert_eq!(port_read(&mut f, a, 1), [9]);
    }

    #[test]
    fn dma_selects_reads_skips_and_zero_fills() {
        let (mut f, m) = dev();
        f.set_u16(key::NB_CPUS, 3);
        // SELECT | READ of 4 bytes: 2 of the item, 2 zeros.
        m.write(0x2000, &[0xaa; 4]).unwrap();
        dma_at(
            &mut f,
            &m,
            0x1000,
            u32::from(key::NB_CPUS) << 16 | dma::SELECT | dma::READ,
            4,
            0x2000,
        );
        assert_eq!(m.read_le(0x2000, 4).unwrap(), 3);
        assert_eq!(m.read_le(0x1000, 4).unwrap(), 0, "control cleared");
        // SKIP 1 then READ 3 of the signature.
        dma_at(
            &mut f,
            &m,
            0x1000,
            u32::from(key::SIGNATURE) << 16 | dma::SELECT | dma::SKIP,
            1,
            0,
        );
        dma_at(&mut f, &m, 0x1000, dma::READ, 3, 0x3000);
        let mut b = [0u8; 3];
        m.read(0x3000, &mut b).unwrap();
        assert_eq!(&b, b"EMU");
        assert_eq!(f.counters.dma_ok, 3);
    }

    #[test]
    fn bad_dma_sets_error_and_never_panics() {
        let (mut f, m) = dev();
        // A target outside RAM.
        let control = |m: &GuestMemory| {
            let mut b = [0u8; 4];
            m.read(0x1000, &mut b).unwrap();
            u32::from_be_bytes(b)
        };
        dma_at(&mut f, &m, 0x1000, dma::READ, 16, 0xffff_fff8);
        assert_eq!(control(&m), dma::ERROR);
        // WRITE is refused.
        dma_at(&mut f, &m, 0x1000, dma::WRITE, 4, 0x2000);
        assert_eq!(control(&m), dma::ERROR);
        // A descriptor outside RAM: nothing to write back, counted.
        f.write(0, 8, &0xfff0_0000u32.to_be_bytes());
        // A read straddling the end of RAM writes what fits, then fails.
        dma_at(&mut f, &m, 0x1000, dma::READ, 0x2000, 0xf000);
        assert_eq!(f.counters.dma_errors, 4);
        assert_eq!(f.counters.dma_ok, 0);
    }
}
