//! MSI-X (PCI Local Bus 3.0, 6.8.2): a capability in config space naming a table of vectors
//! (address, data, mask per vector) and a pending-bit array, both in a memory BAR of the
//! function.
//!
//! A function owning an [`Msix`] passes its BAR accesses inside the table and the PBA to
//! [`Msix::read`]/[`Msix::write`] and signals with [`Msix::raise`]. A vector masked (by its own
//! mask bit or the function mask) when raised is remembered in the PBA and sent once unmasked.
//! Messages need MSI-X enabled and bus mastering on.

use super::config::{ConfigSpace, command};
use super::irq::PciInterrupts;

/// MSI-X's capability id.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Message control: MSI-X enable.
const ENABLE: u16 = 1 << 15;
/// Message control: function mask.
const FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: masked.
const VECTOR_MASKED: u32 = 1;

/// Most vectors a table holds (the table size field is 11 bits).
pub const MAX_VECTORS: u16 = 2048;

/// One function's MSI-X state.
#[derive(Clone, Debug)]
pub struct Msix {
    cap: usize,
    table_offset: u64,
    pba_offset: u64,
    /// Per vector: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
    pending: Vec<bool>,
}

impl Msix {
    /// Adds an MSI-X capability at `cap` (linked after the capabilities already in `config`)
    /// for `vectors` vectors (1 to [`MAX_VECTORS`]), its table at `table_offset` and its PBA
    /// at `pba_offset` of BAR `bar` (offsets 8-byte aligned; the BAR must hold both). Every
    /// vector starts masked.
    pub fn new(
        config: &mut ConfigSpace,
        cap: usize,
        vectors: u16,
        bar: u8,
        table_offset: u32,
        pba_offset: u32,
    ) -> Self {
        let vectors = vectors.clamp(1, MAX_VECTORS);
        config.link_capability(cap);
        config.set(cap, &[CAP_ID_MSIX, 0]);
        config.set(cap + 2, &(vectors - 1).to_le_bytes());
        config.set_wmask(cap + 2, &(ENABLE | FUNCTION_MASK).to_le_bytes());
        config.set(
            cap + 4,
            &((table_offset & !7) | u32::from(bar & 7)).to_le_bytes(),
        );
        config.set(
            cap + 8,
            &((pba_offset & !7) | u32::from(bar & 7)).to_le_bytes(),
        );
        Msix {
            cap,
            table_offset: u64::from(table_offset & !7),
            pba_offset: u64::from(pba_offset & !7),
            table: vec![[0, 0, 0, VECTOR_MASKED]; usize::from(vectors)],
            pending: vec![false; usize::from(vectors)],
        }
    }

    fn control(&self, config: &ConfigSpace) -> u16 {
        config.u16_at(self.cap + 2)
    }

    /// Whether MSI-X is enabled (the function then uses neither MSI nor INTx).
    pub fn enabled(&self, config: &ConfigSpace) -> bool {
        self.control(config) & ENABLE != 0
    }

    fn masked(&self, config: &ConfigSpace, v: usize) -> bool {
        self.control(config) & FUNCTION_MASK != 0 || self.table[v][3] & VECTOR_MASKED != 0
    }

    /// Signals vector `v`: sent now if enabled and unmasked (and bus mastering is on), else
    /// pending while masked. Returns false when MSI-X is disabled (the function falls back to
    /// its INTx pin) or `v` does not exist.
    pub fn raise(&mut self, config: &ConfigSpace, irq: &PciInterrupts, v: usize) -> bool {
        if !self.enabled(config) || v >= self.table.len() {
            return false;
        }
        if self.masked(config, v) {
            self.pending[v] = true;
        } else {
            self.send(config, irq, v);
        }
        true
    }

    fn send(&mut self, config: &ConfigSpace, irq: &PciInterrupts, v: usize) {
        self.pending[v] = false;
        if config.command() & command::BUS_MASTER != 0 {
            let e = self.table[v];
            irq.send_msi(u64::from(e[0]) | u64::from(e[1]) << 32, e[2]);
        }
    }

    /// After a config write (the function mask may have been cleared) or a table write (a
    /// vector unmasked): sends what is pending and no longer masked.
    pub fn deliver_pending(&mut self, config: &ConfigSpace, irq: &PciInterrupts) {
        if !self.enabled(config) {
            return;
        }
        for v in 0..self.table.len() {
            if self.pending[v] && !self.masked(config, v) {
                self.send(config, irq, v);
            }
        }
    }

    /// A read at `offset` of the BAR: the table or the PBA. Returns false when `offset` is in
    /// neither (the function's own registers).
    pub fn read(&self, offset: u64, data: &mut [u8]) -> bool {
        let table_len = self.table.len() as u64 * ENTRY_SIZE;
        let pba_len = (self.table.len() as u64).div_ceil(64) * 8;
        if (self.table_offset..self.table_offset + table_len).contains(&offset) {
            for (i, d) in data.iter_mut().enumerate() {
                let o = offset - self.table_offset + i as u64;
                let (v, word, byte) = ((o / 16) as usize, (o % 16 / 4) as usize, o % 4);
                *d = self
                    .table
                    .get(v)
                    .map_or(0, |e| (e[word] >> (8 * byte)) as u8);
            }
            return true;
        }
        if (self.pba_offset..self.pba_offset + pba_len).contains(&offset) {
            for (i, d) in data.iter_mut().enumerate() {
                let bit0 = (offset - self.pba_offset + i as u64) * 8;
                *d = (0..8u64)
                    .filter(|b| {
                        self.pending
                            .get((bit0 + b) as usize)
                            .copied()
                            .unwrap_or(false)
                    })
                    .fold(0, |a, b| a | 1 << b);
            }
            return true;
        }
        false
    }

    /// A write at `offset` of the BAR: a table entry (the PBA is read-only). Returns false
    /// when `offset` is in neither.
    pub fn write(
        &mut self,
        config: &ConfigSpace,
        irq: &PciInterrupts,
        offset: u64,
        data: &[u8],
    ) -> bool {
        let table_len = self.table.len() as u64 * ENTRY_SIZE;
        let pba_len = (self.table.len() as u64).div_ceil(64) * 8;
        if (self.table_offset..self.table_offset + table_len).contains(&offset) {
            for (i, &d) in data.iter().enumerate() {
                let o = offset - self.table_offset + i as u64;
                let (v, word, byte) = ((o / 16) as usize, (o % 16 / 4) as usize, o % 4);
                if let Some(e) = self.table.get_mut(v) {
                    let shift = 8 * byte;
                    e[word] = (e[word] & !(0xff << shift)) | u32::from(d) << shift;
                    if word == 3 {
                        e[3] &= VECTOR_MASKED;
                    }
                }
            }
            self.deliver_pending(config, irq);
            return true;
        }
        (self.pba_offset..self.pba_offset + pba_len).contains(&offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::reg;
    use crate::pci::irq::{MsiSink, add_msi_capability};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Msis(Mutex<Vec<(u64, u32)>>);
    impl MsiSink for Msis {
        fn send(&self, address: u64, data: u32) {
            self.0.lock().unwrap().push((address, data));
        }
    }

    fn entry(m: &mut Msix, c: &ConfigSpace, irq: &PciInterrupts, v: u64, e: [u32; 4]) {
        for (i, w) in e.iter().enumerate() {
            m.write(c, irq, 0x2000 + v * 16 + 4 * i as u64, &w.to_le_bytes());
        }
    }

    #[test]
    fn vectors_are_sent_when_unmasked_and_pend_while_masked() {
        let msis = Arc::new(Msis::default());
        let irq = PciInterrupts::new(1, None, Some(msis.clone()));
        let mut c = ConfigSpace::new(0x1af4, 0x1041, 0x01_0000, 1);
        add_msi_capability(&mut c);
        let mut m = Msix::new(&mut c, 0x50, 3, 2, 0x2000, 0x3000);
        // Linked after the MSI capability; table size 3 (field 2); table and PBA in BAR 2.
        assert_eq!(c.u16_at(0x40) >> 8, 0x50);
        assert_eq!(c.u16_at(0x50), 0x0011);
        assert_eq!(c.u16_at(0x52), 2);
        assert_eq!(c.u32_at(0x54), 0x2002);
        assert_eq!(c.u32_at(0x58), 0x3002);
        // Disabled: the function falls back to INTx.
        assert!(!m.raise(&c, &irq, 0));
        c.write(0x52, &(ENABLE | 0x7ff).to_le_bytes());
        assert_eq!(
            c.u16_at(0x52),
            ENABLE | 2,
            "only enable and mask are writable"
        );
        c.write(reg::COMMAND, &command::BUS_MASTER.to_le_bytes());
        // Vectors start masked: raising pends.
        assert!(m.raise(&c, &irq, 1));
        let mut pba = [0u8; 8];
        assert!(m.read(0x3000, &mut pba));
        assert_eq!(pba[0], 0b010);
        assert!(msis.0.lock().unwrap().is_empty());
        // Programming vector 1 unmasked sends the pending message.
        entry(&mut m, &c, &irq, 1, [0xfee0_0000, 0, 0x41, 0]);
        assert_eq!(*msis.0.lock().unwrap(), vec![(0xfee0_0000, 0x41)]);
        m.read(0x3000, &mut pba);
        assert_eq!(pba[0], 0);
        let mut e = [0u8; 4];
        assert!(m.read(0x2018, &mut e));
        assert_eq!(u32::from_le_bytes(e), 0x41);
        // Function mask: pend, then deliver when cleared.
        c.write(0x52, &(ENABLE | FUNCTION_MASK).to_le_bytes());
        assert!(m.raise(&c, &irq, 1));
        assert_eq!(msis.0.lock().unwrap().len(), 1);
        c.write(0x52, &ENABLE.to_le_bytes());
        m.deliver_pending(&c, &irq);
        assert_eq!(msis.0.lock().unwrap().len(), 2);
        // Outside the table and PBA, and a vector that does not exist.
        assert!(!m.read(0x1000, &mut e));
        assert!(!m.raise(&c, &irq, 3));
    }
}
