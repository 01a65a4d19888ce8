//! CPU models and the CPUID table: `--cpu MODEL[,+feature,-feature...]` resolved once, when the
//! machine is built, into one [`Cpuid`] table that every vCPU of a backend reads (the software
//! CPU never runs the host's CPUID instruction at guest run time: inside a virtual machine that
//! traps, about 11 µs each).
//!
//! A model names a vendor, a family/model/stepping, a brand string, cache and topology leaves
//! and a feature set ([`FEATURES`], spelt as QEMU spells them). The backend then keeps only
//! what it can run: the software CPU what it executes (`soft::OFFER`), KVM what
//! KVM_GET_SUPPORTED_CPUID offers; each feature the model asked for and the backend lacks is
//! reported once, as QEMU reports "TCG doesn't support requested feature".
//!
//! Per-vCPU and state-dependent fields (the APIC ID in leaf 1 and leaf 0xB, OSXSAVE, OSPKE,
//! the APIC bit that follows IA32_APIC_BASE.EN, the TSC frequency leaves) are the backend's, at
//! run time, on top of the table.

use std::collections::BTreeMap;

/// Registers of a CPUID result, in the order [EAX, EBX, ECX, EDX].
pub type Regs = [u32; 4];

const EBX: u8 = 1;
const ECX: u8 = 2;
const EDX: u8 = 3;

/// One CPUID feature bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// QEMU's spelling (`sse4.1`, `lahf-lm`); `_` and `.` are accepted for `-` on input.
    pub name: &'static str,
    /// The leaf, sub-leaf, register (0 EAX .. 3 EDX) and bit that announce it.
    pub leaf: u32,
    /// The sub-leaf.
    pub sub: u32,
    /// The register: 0 EAX, 1 EBX, 2 ECX, 3 EDX.
    pub reg: u8,
    /// The bit.
    pub bit: u8,
}

const fn f(name: &'static str, leaf: u32, sub: u32, reg: u8, bit: u8) -> Feature {
    Feature {
        name,
        leaf,
        sub,
        reg,
        bit,
    }
}

/// Every feature a model or `+feature` may name.
pub const FEATURES: &[Feature] = &[
    f("fpu", 1, 0, EDX, 0),
    f("vme", 1, 0, EDX, 1),
    f("de", 1, 0, EDX, 2),
    f("pse", 1, 0, EDX, 3),
    f("tsc", 1, 0, EDX, 4),
    f("msr", 1, 0, EDX, 5),
    f("pae", 1, 0, EDX, 6),
    f("mce", 1, 0, EDX, 7),
    f("cx8", 1, 0, EDX, 8),
    f("apic", 1, 0, EDX, 9),
    f("sep", 1, 0, EDX, 11),
    f("mtrr", 1, 0, EDX, 12),
    f("pge", 1, 0, EDX, 13),
    f("mca", 1, 0, EDX, 14),
    f("cmov", 1, 0, EDX, 15),
    f("pat", 1, 0, EDX, 16),
    f("pse36", 1, 0, EDX, 17),
    f("clflush", 1, 0, EDX, 19),
    f("mmx", 1, 0, EDX, 23),
    f("fxsr", 1, 0, EDX, 24),
    f("sse", 1, 0, EDX, 25),
    f("sse2", 1, 0, EDX, 26),
    f("ss", 1, 0, EDX, 27),
    f("sse3", 1, 0, ECX, 0),
    f("pclmulqdq", 1, 0, ECX, 1),
    f("ssse3", 1, 0, ECX, 9),
    f("fma", 1, 0, ECX, 12),
    f("cx16", 1, 0, ECX, 13),
    f("pcid", 1, 0, ECX, 17),
    f("sse4.1", 1, 0, ECX, 19),
    f("sse4.2", 1, 0, ECX, 20),
    f("x2apic", 1, 0, ECX, 21),
    f("movbe", 1, 0, ECX, 22),
    f("popcnt", 1, 0, ECX, 23),
    f("tsc-deadline", 1, 0, ECX, 24),
    f("aes", 1, 0, ECX, 25),
    f("xsave", 1, 0, ECX, 26),
    f("avx", 1, 0, ECX, 28),
    f("f16c", 1, 0, ECX, 29),
    f("rdrand", 1, 0, ECX, 30),
    f("hypervisor", 1, 0, ECX, 31),
    f("fsgsbase", 7, 0, EBX, 0),
    f("tsc-adjust", 7, 0, EBX, 1),
    f("bmi1", 7, 0, EBX, 3),
    f("avx2", 7, 0, EBX, 5),
    f("smep", 7, 0, EBX, 7),
    f("bmi2", 7, 0, EBX, 8),
    f("erms", 7, 0, EBX, 9),
    f("invpcid", 7, 0, EBX, 10),
    f("avx512f", 7, 0, EBX, 16),
    f("avx512dq", 7, 0, EBX, 17),
    f("rdseed", 7, 0, EBX, 18),
    f("adx", 7, 0, EBX, 19),
    f("smap", 7, 0, EBX, 20),
    f("clflushopt", 7, 0, EBX, 23),
    f("clwb", 7, 0, EBX, 24),
    f("avx512cd", 7, 0, EBX, 28),
    f("sha-ni", 7, 0, EBX, 29),
    f("avx512bw", 7, 0, EBX, 30),
    f("avx512vl", 7, 0, EBX, 31),
    f("pku", 7, 0, ECX, 3),
    f("la57", 7, 0, ECX, 16),
    f("rdpid", 7, 0, ECX, 22),
    f("lahf-lm", 0x8000_0001, 0, ECX, 0),
    f("abm", 0x8000_0001, 0, ECX, 5),
    f("sse4a", 0x8000_0001, 0, ECX, 6),
    f("3dnowprefetch", 0x8000_0001, 0, ECX, 8),
    f("syscall", 0x8000_0001, 0, EDX, 11),
    f("nx", 0x8000_0001, 0, EDX, 20),
    f("pdpe1gb", 0x8000_0001, 0, EDX, 26),
    f("rdtscp", 0x8000_0001, 0, EDX, 27),
    f("lm", 0x8000_0001, 0, EDX, 29),
    f("invtsc", 0x8000_0007, 0, EDX, 8),
];

/// Other spellings of feature names (Linux's /proc/cpuinfo names, QEMU's aliases).
const ALIASES: &[(&str, &str)] = &[
    ("pni", "sse3"),
    ("lzcnt", "abm"),
    ("sha", "sha-ni"),
    ("pclmuldq", "pclmulqdq"),
    ("xd", "nx"),
    ("i64", "lm"),
    ("constant-tsc", "invtsc"),
];

/// What a backend can offer: the features it runs, those its `host` model offers, and its
/// XSAVE area (leaf 0xD).
#[derive(Clone, Copy, Debug)]
pub struct Offer {
    /// Every feature the backend runs; anything else is filtered out of a model.
    pub runs: &'static [&'static str],
    /// What the `host` model leaves out of `runs`.
    pub not_in_host: &'static [&'static str],
    /// What of `runs` the backend runs on the host's own execution units (the software CPU's
    /// SSE family): offered only where the host's CPUID has it.
    pub needs_host: &'static [&'static str],
    /// XCR0 bits supported (leaf 0xD EAX).
    pub xcr0: u32,
    /// The XSAVE area's size with every supported component.
    pub xsave_size: u32,
    /// Whether XSAVEOPT runs (CPUID.(0xD,1).EAX[0]).
    pub xsaveopt: bool,
}

impl Offer {
    /// What the `host` model offers: `runs` but `not_in_host`.
    pub fn host(&self) -> Vec<&'static str> {
        self.runs
            .iter()
            .copied()
            .filter(|n| !self.not_in_host.contains(n))
            .collect()
    }
}

/// The feature named `name` (any accepted spelling).
pub fn feature(name: &str) -> Option<&'static Feature> {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '.'], "-");
    let n = norm(name);
    let n = ALIASES
        .iter()
        .find(|(a, _)| norm(a) == n)
        .map_or(n.clone(), |(_, to)| norm(to));
    FEATURES.iter().find(|f| norm(f.name) == n)
}

/// A CPU vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD.
    Amd,
}

impl Vendor {
    /// The vendor string as CPUID leaf 0 returns it in EBX, EDX, ECX.
    fn regs(self) -> [u32; 3] {
        let s: &[u8; 12] = match self {
            Vendor::Intel => b"GenuineIntel",
            Vendor::Amd => b"AuthenticAMD",
        };
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        [w(0), w(4), w(8)]
    }

    fn from_regs(ebx: u32, edx: u32, ecx: u32) -> Option<Vendor> {
        [Vendor::Intel, Vendor::Amd]
            .into_iter()
            .find(|v| v.regs() == [ebx, edx, ecx])
    }
}

/// How a model identifies itself: the host's identity (`host`, `max`) or a fixed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    Host,
    Fixed {
        vendor: Vendor,
        family: u32,
        model: u32,
        stepping: u32,
        brand: &'static str,
    },
}

/// A CPU model `--cpu` can name.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// The name on the command line.
    pub name: &'static str,
    /// One line for `janus info`.
    pub about: &'static str,
    identity: Identity,
    /// The feature lists whose union the model has; None: every feature the backend has.
    features: Option<&'static [&'static [&'static str]]>,
}

/// The x86-64 baseline (x86-64-v1), which every fixed model starts from.
const V1: &[&str] = &[
    "fpu", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge", "mca",
    "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "syscall", "nx", "lm",
];
/// What x86-64-v2 adds to v1.
const V2_ADDS: &[&str] = &[
    "cx16", "lahf-lm", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3",
];
/// What x86-64-v3 adds to v2.
const V3_ADDS: &[&str] = &[
    "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave",
];
const QEMU64_ADDS: &[&str] = &["sse3", "cx16", "lahf-lm", "hypervisor"];
const NEHALEM_ADDS: &[&str] = &["rdtscp", "hypervisor"];
/// What Skylake-Client and EPYC both add to v3.
const ZEN_SKYLAKE_ADDS: &[&str] = &[
    "pclmulqdq",
    "x2apic",
    "tsc-deadline",
    "aes",
    "rdrand",
    "hypervisor",
    "fsgsbase",
    "smep",
    "rdseed",
    "adx",
    "smap",
    "clflushopt",
    "pdpe1gb",
    "rdtscp",
    "3dnowprefetch",
    "invtsc",
];
const SKYLAKE_ADDS: &[&str] = &["pcid", "erms", "invpcid"];
const EPYC_ADDS: &[&str] = &["sha-ni", "sse4a"];

/// Every model `--cpu` takes.
pub const MODELS: &[Model] = &[
    Model {
        name: "host",
        about: "the host's vendor, family and brand with every feature the backend runs (the default)",
        identity: Identity::Host,
        features: None,
    },
    Model {
        name: "max",
        about: "every feature the backend runs, the hypervisor bit too",
        // (`features: None` with the name "max": see `Cpuid::new`.)
        identity: Identity::Host,
        features: None,
    },
    Model {
        name: "qemu64",
        about: "QEMU's default model: AMD family 15, SSE3, CX16",
        identity: Identity::Fixed {
            vendor: Vendor::Amd,
            family: 15,
            model: 107,
            stepping: 1,
            brand: "QEMU Virtual CPU version 2.5+",
        },
        features: Some(&[V1, QEMU64_ADDS]),
    },
    Model {
        name: "x86-64-v1",
        about: "the x86-64 baseline (CMOV, CX8, FXSR, SSE2, SYSCALL, NX)",
        identity: Identity::Host,
        features: Some(&[V1]),
    },
    Model {
        name: "x86-64-v2",
        about: "v1 and CX16, LAHF, POPCNT, SSE3, SSSE3, SSE4.1, SSE4.2",
        identity: Identity::Host,
        features: Some(&[V1, V2_ADDS]),
    },
    Model {
        name: "x86-64-v3",
        about: "v2 and AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, XSAVE",
        identity: Identity::Host,
        features: Some(&[V1, V2_ADDS, V3_ADDS]),
    },
    Model {
        name: "Nehalem",
        about: "Intel Core i7 9xx (family 6 model 26)",
        identity: Identity::Fixed {
            vendor: Vendor::Intel,
            family: 6,
            model: 26,
            stepping: 3,
            brand: "Intel Core i7 9xx (Nehalem Class Core i7)",
        },
        features: Some(&[V1, V2_ADDS, NEHALEM_ADDS]),
    },
    Model {
        name: "Skylake-Client",
        about: "Intel Core (Skylake, family 6 model 94)",
        identity: Identity::Fixed {
            vendor: Vendor::Intel,
            family: 6,
            model: 94,
            stepping: 3,
            brand: "Intel Core Processor (Skylake)",
        },
        features: Some(&[V1, V2_ADDS, V3_ADDS, ZEN_SKYLAKE_ADDS, SKYLAKE_ADDS]),
    },
    Model {
        name: "EPYC",
        about: "AMD EPYC (Zen, family 0x17 model 1)",
        identity: Identity::Fixed {
            vendor: Vendor::Amd,
            family: 0x17,
            model: 1,
            stepping: 2,
            brand: "AMD EPYC Processor",
        },
        features: Some(&[V1, V2_ADDS, V3_ADDS, ZEN_SKYLAKE_ADDS, EPYC_ADDS]),
    },
];

/// What `--cpu` said: a model and features added or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSpec {
    /// The model's name (one of [`MODELS`]).
    pub model: &'static str,
    /// `+feature` (or `feature=on`).
    pub plus: Vec<&'static str>,
    /// `-feature` (or `feature=off`).
    pub minus: Vec<&'static str>,
}

impl Default for CpuSpec {
    fn default() -> Self {
        CpuSpec {
            model: "host",
            plus: Vec::new(),
            minus: Vec::new(),
        }
    }
}

/// A `--cpu` argument that names no model or feature janus knows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuSpecError {
    /// An unknown model.
    #[error("unknown CPU model {0:?} (janus info lists the models)")]
    Model(String),
    /// An unknown feature.
    #[error("unknown CPU feature {0:?}")]
    Feature(String),
    /// A part that is neither `+f`, `-f`, `f=on` nor `f=off`.
    #[error("{0:?}: expected +FEATURE, -FEATURE, FEATURE=on or FEATURE=off")]
    Syntax(String),
}

impl std::str::FromStr for CpuSpec {
    type Err = CpuSpecError;

    fn from_str(s: &str) -> Result<Self, CpuSpecError> {
        let mut parts = s.split(',');
        let name = parts.next().unwrap_or_default();
        let model = MODELS
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| CpuSpecError::Model(name.to_string()))?;
        let mut spec = CpuSpec {
            model: model.name,
            ..CpuSpec::default()
        };
        for p in parts.filter(|p| !p.is_empty()) {
            let (name, on) = if let Some(n) = p.strip_prefix('+') {
                (n, true)
            } else if let Some(n) = p.strip_prefix('-') {
                (n, false)
            } else if let Some(n) = p.strip_suffix("=on") {
                (n, true)
            } else if let Some(n) = p.strip_suffix("=off") {
                (n, false)
            } else {
                return Err(CpuSpecError::Syntax(p.to_string()));
            };
            let f = feature(name).ok_or_else(|| CpuSpecError::Feature(name.to_string()))?;
            let (add, remove) = if on {
                (&mut spec.plus, &mut spec.minus)
            } else {
                (&mut spec.minus, &mut spec.plus)
            };
            remove.retain(|n| *n != f.name);
            if !add.contains(&f.name) {
                add.push(f.name);
            }
        }
        Ok(spec)
    }
}

impl std::fmt::Display for CpuSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model)?;
        for p in &self.plus {
            write!(f, ",+{p}")?;
        }
        for m in &self.minus {
            write!(f, ",-{m}")?;
        }
        Ok(())
    }
}

/// Leaves kept in the flat arrays of [`Cpuid`], basic and extended.
const FLAT: usize = 0x20;

/// Leaves whose result depends on the sub-leaf in ECX.
fn indexed(leaf: u32) -> bool {
    matches!(leaf, 4 | 7 | 0xb | 0xd | 0x8000_001d)
}

/// The host's CPUID (identity leaves only: the vendor, family and brand a `host` model shows).
pub fn host(leaf: u32, sub: u32) -> Regs {
    let r = std::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// A CPUID table: every leaf a vCPU of this machine reads, computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpuid {
    spec: CpuSpec,
    vendor: Option<Vendor>,
    leaves: BTreeMap<(u32, u32), Regs>,
    /// The highest basic and extended leaves (leaf 0 and 0x8000_0000 EAX).
    max: (u32, u32),
    /// Sub-leaf 0 of basic leaves 0..FLAT and extended leaves 0x8000_0000.., copied from
    /// `leaves` (the hot path of [`Cpuid::get`]: no tree walk).
    flat: Box<[[Regs; FLAT]; 2]>,
    /// Features the model asked for that the backend does not run (reported once).
    missing: Vec<&'static str>,
}

impl Cpuid {
    /// The table for `spec` on a machine of `nr_vcpus` vCPUs whose backend offers `offer`.
    pub fn new(spec: &CpuSpec, nr_vcpus: usize, offer: &Offer) -> Cpuid {
        let model = MODELS
            .iter()
            .find(|m| m.name == spec.model)
            .unwrap_or(&MODELS[0]);
        let all: Vec<&'static str> = match model.features {
            Some(lists) => lists.concat(),
            None if model.name == "max" => offer.runs.to_vec(),
            None => offer.host(),
        };
        let wanted: Vec<&'static str> = all
            .into_iter()
            .chain(spec.plus.iter().copied())
            .filter(|n| !spec.minus.contains(n))
            .collect();
        let mut missing = Vec::new();
        let mut t = Cpuid {
            spec: spec.clone(),
            vendor: None,
            leaves: BTreeMap::new(),
            max: (0, 0),
            flat: Box::new([[[0; 4]; FLAT]; 2]),
            missing: Vec::new(),
        };
        // Identity: vendor, family/model/stepping, brand.
        let (vendor_regs, signature, brand) = match model.identity {
            Identity::Host => {
                let h = host(0, 0);
                let brand: Vec<Regs> = (0x8000_0002..=0x8000_0004).map(|l| host(l, 0)).collect();
                ([h[1], h[3], h[2]], host(1, 0)[0], BrandRegs::Host(brand))
            }
            Identity::Fixed {
                vendor,
                family,
                model,
                stepping,
                brand,
            } => (
                vendor.regs(),
                signature(family, model, stepping),
                BrandRegs::Text(brand),
            ),
        };
        t.vendor = Vendor::from_regs(vendor_regs[0], vendor_regs[1], vendor_regs[2]);
        t.leaves.insert(
            (0, 0),
            [0xd, vendor_regs[0], vendor_regs[2], vendor_regs[1]],
        );
        let count = nr_vcpus.clamp(1, 255) as u32;
        // CLFLUSH line size 8 (64 bytes), the logical-processor count; the APIC ID (bits
        // 31:24) is each vCPU's.
        t.leaves
            .insert((1, 0), [signature, count << 16 | 8 << 8, 0, 0]);
        t.leaves.insert((7, 0), [0; 4]);
        t.leaves.insert(
            (0xd, 0),
            [offer.xcr0, offer.xsave_size, offer.xsave_size, 0],
        );
        t.leaves.insert((0xd, 1), [0; 4]);
        t.leaves.insert(
            (0x8000_0000, 0),
            [0x8000_0008, vendor_regs[0], vendor_regs[2], vendor_regs[1]],
        );
        t.leaves.insert((0x8000_0001, 0), [signature, 0, 0, 0]);
        for (i, leaf) in (0x8000_0002..=0x8000_0004).enumerate() {
            t.leaves.insert((leaf, 0), brand.leaf(i));
        }
        t.leaves.insert((0x8000_0007, 0), [0; 4]);
        // Physical address bits as the host's (the software MMU's reserved bits follow them),
        // 48 linear; the core count (ECX[7:0]) for AMD's topology.
        t.leaves.insert(
            (0x8000_0008, 0),
            [
                (host(0x8000_0008, 0)[0] & 0xffff).max(0x3024),
                0,
                count - 1,
                0,
            ],
        );
        if matches!(model.identity, Identity::Fixed { .. }) {
            t.add_caches(count);
        }
        for name in wanted {
            let Some(f) = feature(name) else { continue };
            let on_host = || host(f.leaf, f.sub)[usize::from(f.reg)] >> f.bit & 1 != 0;
            if !offer.runs.contains(&f.name) || offer.needs_host.contains(&f.name) && !on_host() {
                if !missing.contains(&f.name) {
                    missing.push(f.name);
                }
                continue;
            }
            t.set(f);
        }
        // Leaf 0xD follows the features offered: AVX state (YMM_Hi128, 256 bytes at 576) only
        // with AVX; XSAVEOPT (sub-leaf 1 EAX bit 0) with XSAVE.
        if !t.has("avx") {
            let x87_sse = offer.xcr0 & 3;
            let size = offer.xsave_size.min(576);
            t.leaves.insert((0xd, 0), [x87_sse, size, size, 0]);
        } else if offer.xcr0 & 4 != 0 {
            t.leaves.insert((0xd, 2), [256, 576, 0, 0]);
        }
        if t.has("xsave") && offer.xsaveopt {
            t.leaves.insert((0xd, 1), [1, 0, 0, 0]);
        }
        // Hyper-threading: several logical processors in the package.
        if nr_vcpus > 1 {
            t.leaves.entry((1, 0)).or_default()[3] |= 1 << 28;
        }
        t.missing = missing;
        t.update_max();
        t
    }

    fn update_max(&mut self) {
        self.max = (
            self.leaves.get(&(0, 0)).map_or(0, |r| r[0]),
            self.leaves.get(&(0x8000_0000, 0)).map_or(0, |r| r[0]),
        );
        for (half, base) in [0u32, 0x8000_0000].into_iter().enumerate() {
            for i in 0..FLAT {
                self.flat[half][i] = self
                    .leaves
                    .get(&(base + i as u32, 0))
                    .copied()
                    .unwrap_or_default();
            }
        }
    }

    /// Cache and topology leaves of a named model: Intel's leaf 4 and 0xB, AMD's 0x8000_0005
    /// and 0x8000_0006; one core per vCPU, one thread per core.
    fn add_caches(&mut self, count: u32) {
        let cores = (count - 1).min(63) << 26;
        // Leaf 4: type (1 data, 2 code, 3 unified) | level << 5 | self-initialising;
        // EBX ways-1 << 22 | partitions-1 << 12 | line-1; ECX sets-1.
        let cache = |ty: u32, level: u32, ways: u32, size: u32, shared: u32| -> Regs {
            let sets = size / (ways * 64);
            [
                ty | level << 5 | 1 << 8 | cores | shared << 14,
                (ways - 1) << 22 | 63,
                sets - 1,
                0,
            ]
        };
        let threads_sharing_l3 = count.next_power_of_two() - 1;
        self.leaves.insert((4, 0), cache(1, 1, 8, 32 << 10, 0));
        self.leaves.insert((4, 1), cache(2, 1, 8, 32 << 10, 0));
        self.leaves.insert((4, 2), cache(3, 2, 4, 1 << 20, 0));
        self.leaves
            .insert((4, 3), cache(3, 3, 16, 16 << 20, threads_sharing_l3));
        self.leaves.insert((4, 4), [0; 4]);
        // Leaf 0xB: level 0 SMT (one thread), level 1 core (every vCPU); EDX is the x2APIC ID.
        let shift = 32 - (count - 1).leading_zeros();
        self.leaves.insert((0xb, 0), [0, 1, 1 << 8, 0]);
        self.leaves.insert((0xb, 1), [shift, count, 2 << 8 | 1, 0]);
        self.leaves.insert((0xb, 2), [0, 0, 2, 0]);
        // AMD: L1 data and code 32 KiB 8-way 64-byte lines; L2 1 MiB 8-way; L3 16 MiB 16-way.
        self.leaves.insert(
            (0x8000_0005, 0),
            [0, 0, 32 << 24 | 8 << 16 | 1 << 8 | 64, {
                32 << 24 | 8 << 16 | 1 << 8 | 64
            }],
        );
        self.leaves.insert(
            (0x8000_0006, 0),
            [
                0,
                0,
                1024 << 16 | 6 << 12 | 1 << 8 | 64,
                16 << 18 | 8 << 12 | 1 << 8 | 64,
            ],
        );
        let max_basic = self.leaves.get(&(0, 0)).map_or(0, |r| r[0]);
        if let Some(r) = self.leaves.get_mut(&(0, 0)) {
            r[0] = max_basic.max(0xd);
        }
    }

    /// The TSC runs at `hz`, and the table says so: the TSC/crystal ratio and crystal clock
    /// (leaf 0x15) and the base and bus frequencies (leaf 0x16), so that a kernel takes the
    /// TSC's and the local APIC timer's rates from CPUID instead of timing them against the PIT
    /// (about 85,000 port reads and 50 ms of a Linux boot).
    pub fn set_tsc_hz(&mut self, hz: u64) {
        let mhz = u32::try_from(hz / 1_000_000).unwrap_or(u32::MAX);
        self.leaves
            .insert((0x15, 0), [1, 1, u32::try_from(hz).unwrap_or(0), 0]);
        self.leaves.insert((0x16, 0), [mhz, mhz, mhz, 0]);
        if let Some(r) = self.leaves.get_mut(&(0, 0)) {
            r[0] = r[0].max(0x16);
        }
        self.update_max();
    }

    /// Applies `spec` to a backend's own table (KVM's supported CPUID, as `(leaf, sub, regs)`
    /// entries): the model's identity (vendor, signature, brand) for a named model, and each
    /// feature bit kept only if the model wants it and the table had it. `host` keeps every
    /// feature the table has, `+f`/`-f` apply on top. Returns the features wanted but absent.
    pub fn patch(spec: &CpuSpec, entries: &mut [(u32, u32, &mut Regs)]) -> Vec<&'static str> {
        let model = MODELS
            .iter()
            .find(|m| m.name == spec.model)
            .unwrap_or(&MODELS[0]);
        let find = |entries: &[(u32, u32, &mut Regs)], f: &Feature| {
            entries
                .iter()
                .find(|(l, s, _)| *l == f.leaf && *s == f.sub)
                .is_some_and(|(_, _, r)| r[usize::from(f.reg)] & 1 << f.bit != 0)
        };
        let present: Vec<&'static str> = FEATURES
            .iter()
            .filter(|f| find(entries, f))
            .map(|f| f.name)
            .collect();
        let base: Vec<&'static str> = match model.features {
            Some(lists) => lists.concat(),
            None => present.clone(),
        };
        let wanted: Vec<&'static str> = base
            .into_iter()
            .chain(spec.plus.iter().copied())
            .filter(|n| !spec.minus.contains(n))
            .collect();
        for (leaf, sub, regs) in entries.iter_mut() {
            for f in FEATURES.iter().filter(|f| f.leaf == *leaf && f.sub == *sub) {
                if !wanted.contains(&f.name) {
                    regs[usize::from(f.reg)] &= !(1 << f.bit);
                }
            }
        }
        if let Identity::Fixed {
            vendor,
            family,
            model,
            stepping,
            brand,
        } = model.identity
        {
            let v = vendor.regs();
            let b = BrandRegs::Text(brand);
            for (leaf, _, regs) in entries.iter_mut() {
                match *leaf {
                    0 | 0x8000_0000 => {
                        regs[1] = v[0];
                        regs[3] = v[1];
                        regs[2] = v[2];
                    }
                    1 => regs[0] = signature(family, model, stepping),
                    0x8000_0002..=0x8000_0004 => **regs = b.leaf((*leaf - 0x8000_0002) as usize),
                    _ => {}
                }
            }
        }
        let mut missing: Vec<&'static str> = wanted
            .into_iter()
            .filter(|n| !present.contains(n))
            .collect();
        missing.dedup();
        missing
    }

    fn set(&mut self, f: &Feature) {
        self.leaves.entry((f.leaf, f.sub)).or_default()[usize::from(f.reg)] |= 1 << f.bit;
    }

    /// Whether the table offers `name` (a [`FEATURES`] name).
    pub fn has(&self, name: &str) -> bool {
        feature(name).is_some_and(|f| {
            self.leaves
                .get(&(f.leaf, f.sub))
                .is_some_and(|r| r[usize::from(f.reg)] & 1 << f.bit != 0)
        })
    }

    /// The features the model asked for that this backend does not run (not offered).
    pub fn missing(&self) -> &[&'static str] {
        &self.missing
    }

    /// The `--cpu` this table was made from.
    pub fn spec(&self) -> &CpuSpec {
        &self.spec
    }

    /// The vendor the table reports, if Intel or AMD.
    pub fn vendor(&self) -> Option<Vendor> {
        self.vendor
    }

    /// The features offered, by name, in [`FEATURES`] order.
    pub fn features(&self) -> Vec<&'static str> {
        FEATURES
            .iter()
            .filter(|f| self.has(f.name))
            .map(|f| f.name)
            .collect()
    }

    /// CPUID leaf `leaf`, sub-leaf `sub`, before the per-vCPU fields. A leaf above the
    /// highest basic or extended leaf returns, as Intel CPUs do, the highest basic leaf's data
    /// (AMD CPUs return zeros).
    pub fn get(&self, leaf: u32, sub: u32) -> Regs {
        let (max_basic, max_ext) = self.max;
        let out_of_range = if leaf >= 0x8000_0000 {
            leaf > max_ext
        } else {
            leaf > max_basic
        };
        let (leaf, sub) = if out_of_range {
            if self.vendor == Some(Vendor::Amd) {
                return [0; 4];
            }
            (max_basic, sub)
        } else {
            (leaf, sub)
        };
        if indexed(leaf) {
            return self.leaves.get(&(leaf, sub)).copied().unwrap_or_default();
        }
        let (half, i) = (
            usize::from(leaf >= 0x8000_0000),
            (leaf & 0x7fff_ffff) as usize,
        );
        match self.flat[half].get(i) {
            Some(r) => *r,
            None => self.leaves.get(&(leaf, 0)).copied().unwrap_or_default(),
        }
    }
}

/// The brand string's three leaves: the host's, or a text.
enum BrandRegs {
    Host(Vec<Regs>),
    Text(&'static str),
}

impl BrandRegs {
    fn leaf(&self, i: usize) -> Regs {
        match self {
            BrandRegs::Host(v) => v.get(i).copied().unwrap_or_default(),
            BrandRegs::Text(s) => {
                let mut b = [0u8; 48];
                let n = s.len().min(47);
                b[..n].copy_from_slice(&s.as_bytes()[..n]);
                let w = |j: usize| {
                    let o = i * 16 + j * 4;
                    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
                };
                [w(0), w(1), w(2), w(3)]
            }
        }
    }
}

/// CPUID.1:EAX for a family, model and stepping (extended family above 15, extended model).
fn signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (fam, ext_fam) = if family > 15 {
        (15, family - 15)
    } else {
        (family, 0)
    };
    ext_fam << 20 | (model >> 4) << 16 | fam << 8 | (model & 0xf) << 4 | stepping
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soft::OFFER;

    fn soft(s: &CpuSpec, n: usize) -> Cpuid {
        Cpuid::new(s, n, &OFFER)
    }

    fn spec(s: &str) -> CpuSpec {
        s.parse().unwrap()
    }

    #[test]
    fn specs_parse_with_qemu_spellings() {
        let s = spec("qemu64,+popcnt,-sse3,sse4_1=on,lzcnt=off");
        assert_eq!(s.model, "qemu64");
        assert_eq!(s.plus, ["popcnt", "sse4.1"]);
        assert_eq!(s.minus, ["sse3", "abm"]);
        assert_eq!(s.to_string(), "qemu64,+popcnt,+sse4.1,-sse3,-abm");
        assert_eq!(
            "pentium9".parse::<CpuSpec>(),
            Err(CpuSpecError::Model("pentium9".into()))
        );
        assert_eq!(
            "host,+warp-drive".parse::<CpuSpec>(),
            Err(CpuSpecError::Feature("warp-drive".into()))
        );
        assert!(matches!(
            "host,avx".parse::<CpuSpec>(),
            Err(CpuSpecError::Syntax(_))
        ));
        // The last word on a feature wins.
        assert_eq!(spec("host,-pku,+pku").minus, Vec::<&str>::new());
    }

    #[test]
    fn host_model_matches_what_the_software_cpu_always_offered() {
        let t = soft(&CpuSpec::default(), 1);
        assert!(t.missing().is_empty());
        // The SSE and AVX families as far as the host has them (they run there:
        // soft::translate::sse).
        let sse = 1 | 1 << 1 | 1 << 9 | 1 << 19 | 1 << 20 | 1 << 25 | 1 << 12 | 1 << 28 | 1 << 29;
        assert_eq!(
            t.get(1, 0)[2],
            1 << 13
                | 1 << 21
                | 1 << 22
                | 1 << 23
                | 1 << 24
                | 1 << 26
                | 1 << 30
                | host(1, 0)[2] & sse
        );
        let sha = 1 << 29;
        assert_eq!(
            t.get(7, 0),
            [
                0,
                1 << 1
                    | 1 << 3
                    | 1 << 7
                    | 1 << 8
                    | 1 << 10
                    | 1 << 18
                    | 1 << 19
                    | 1 << 20
                    | 1 << 23
                    | 1 << 24
                    | host(7, 0)[1] & (sha | 1 << 5),
                1 << 3 | 1 << 22,
                0
            ]
        );
        assert_eq!(t.get(0x8000_0007, 0), [0, 0, 0, 1 << 8]);
        assert_eq!(t.get(0x8000_0001, 0)[2], 1 | 1 << 5);
        assert_eq!(t.get(0, 0)[1..], host(0, 0)[1..]);
        assert_eq!(t.get(1, 0)[0], host(1, 0)[0]);
        assert!(!t.has("hypervisor"));
    }

    #[test]
    fn x86_64_v2_is_whole_on_the_software_cpu() {
        // Where the host has the SSE family (the software CPU runs it there): nothing missing.
        if host(1, 0)[2] & (1 | 1 << 9 | 1 << 19 | 1 << 20) != (1 | 1 << 9 | 1 << 19 | 1 << 20) {
            return;
        }
        let t = soft(&spec("x86-64-v2"), 1);
        // DE only: I/O breakpoints never match (soft/debug.rs), so CR4.DE is not offered.
        assert_eq!(t.missing(), ["de"]);
        for f in V1.iter().chain(V2_ADDS).filter(|&&f| f != "de") {
            assert!(t.has(f), "{f}");
        }
    }

    #[test]
    fn models_keep_only_what_the_backend_runs_and_say_what_they_drop() {
        let t = soft(&spec("x86-64-v3,-popcnt,-avx2,+pku,+vme"), 4);
        for f in ["lm", "cx16", "lahf-lm", "xsave", "bmi1", "abm", "pku"] {
            assert!(t.has(f), "{f}");
        }
        assert!(!t.has("popcnt") && !t.has("avx2") && t.has("mmx"));
        assert!(t.missing().contains(&"vme"), "vme reported missing");
        assert!(t.has("movbe") && t.has("bmi2") && !t.missing().contains(&"movbe"));
        assert!(!t.missing().contains(&"popcnt"), "removed, not missing");
        assert_eq!(t.get(1, 0)[1] >> 16 & 0xff, 4);
        assert_ne!(t.get(1, 0)[3] & 1 << 28, 0, "HTT with 4 vCPUs");
    }

    #[test]
    fn named_models_have_their_identity_and_cache_leaves() {
        let t = soft(&spec("EPYC"), 2);
        assert_eq!(t.vendor(), Some(Vendor::Amd));
        let sig = t.get(1, 0)[0];
        assert_eq!(((sig >> 8) & 0xf) + ((sig >> 20) & 0xff), 0x17, "family");
        let brand: Vec<u8> = (0x8000_0002..=0x8000_0004)
            .flat_map(|l| t.get(l, 0))
            .flat_map(u32::to_le_bytes)
            .collect();
        assert!(brand.starts_with(b"AMD EPYC Processor\0"));
        assert_eq!(t.get(0x8000_0005, 0)[2] >> 24, 32, "32 KiB L1d");
        assert_eq!(t.get(0x8000_0008, 0)[2] & 0xff, 1, "two cores");
        assert_eq!(t.get(0x4000_0000, 0), [0; 4], "AMD: zeros out of range");

        let t = soft(&spec("Skylake-Client"), 2);
        assert_eq!(t.vendor(), Some(Vendor::Intel));
        assert_eq!(t.get(1, 0)[0], 0x506e3);
        let l1d = t.get(4, 0);
        assert_eq!(l1d[0] & 0x1f, 1, "data cache");
        let size = ((l1d[1] >> 22) + 1) * ((l1d[1] & 0xfff) + 1) * (l1d[2] + 1);
        assert_eq!(size, 32 << 10);
        assert_eq!(t.get(4, 4)[0] & 0x1f, 0, "no fifth cache");
        assert_eq!(
            t.get(0xb, 1)[1],
            2,
            "two logical processors at the core level"
        );
        // Intel: a leaf above the highest basic leaf reads as the highest basic leaf.
        assert_eq!(t.get(0x20, 0), t.get(0xd, 0));
        assert_eq!(t.get(0x8000_0009, 0), t.get(0xd, 0));
        assert!(t.has("hypervisor"));
        assert_eq!(t.has("avx"), host(1, 0)[2] & 1 << 28 != 0);
    }

    #[test]
    fn x86_64_v3_is_whole_on_the_software_cpu() {
        // Where the host has AVX2, FMA and F16C (run on its vector unit): nothing missing, and
        // leaf 0xD describes x87|SSE|AVX with YMM_Hi128 at 576, and XSAVEOPT.
        let c1 = host(1, 0)[2];
        if c1 & (1 << 12 | 1 << 28 | 1 << 29) != (1 << 12 | 1 << 28 | 1 << 29)
            || host(7, 0)[1] & 1 << 5 == 0
        {
            return;
        }
        let t = soft(&spec("x86-64-v3"), 1);
        assert_eq!(t.missing(), ["de"]);
        for f in V1
            .iter()
            .chain(V2_ADDS)
            .chain(V3_ADDS)
            .filter(|&&f| f != "de")
        {
            assert!(t.has(f), "{f}");
        }
        assert_eq!(t.get(0xd, 0), [7, 832, 832, 0]);
        assert_eq!(t.get(0xd, 1), [1, 0, 0, 0]);
        assert_eq!(t.get(0xd, 2), [256, 576, 0, 0]);
        // Without AVX: x87|SSE, 576 bytes, no sub-leaf 2.
        let t = soft(&spec("x86-64-v3,-avx"), 1);
        assert_eq!(t.get(0xd, 0), [3, 576, 576, 0]);
        assert_eq!(t.get(0xd, 2), [0; 4]);
    }

    #[test]
    fn a_backend_table_is_patched_to_the_model() {
        let mut l0 = [0xd, 0, 0, 0];
        let mut l1 = [
            0x906ea,
            0x800,
            1 << 0 | 1 << 23 | 1 << 28,
            1 << 0 | 1 << 23 | 1 << 25,
        ];
        let mut l7 = [0, 1 << 5 | 1 << 3, 0, 0];
        let mut entries = [(0, 0, &mut l0), (1, 0, &mut l1), (7, 0, &mut l7)];
        let missing = Cpuid::patch(&spec("qemu64,+avx2,-mmx"), &mut entries);
        assert_eq!([l0[1], l0[3], l0[2]], Vendor::Amd.regs());
        assert_eq!(l1[0], signature(15, 107, 1));
        assert_eq!(l1[2], 1, "sse3 kept; popcnt and avx not in qemu64");
        assert_eq!(l1[3], 1 | 1 << 25, "fpu, sse; mmx removed");
        assert_eq!(l7[1], 1 << 5, "avx2 added and present");
        assert!(missing.contains(&"cx16") && missing.contains(&"lm"));
        assert!(!missing.contains(&"avx2"));

        // host keeps what the table has, minus what is removed.
        let mut l1 = [0x906ea, 0x800, 1 << 0 | 1 << 23, 0];
        let mut entries = [(1, 0, &mut l1)];
        assert!(Cpuid::patch(&spec("host,-popcnt"), &mut entries).is_empty());
        assert_eq!(l1, [0x906ea, 0x800, 1, 0]);
    }

    #[test]
    fn every_model_feature_is_a_known_feature() {
        for m in MODELS {
            for n in m.features.unwrap_or(&[]).concat() {
                assert!(feature(n).is_some(), "{}: {n}", m.name);
            }
        }
        for n in OFFER.runs.iter().chain(&OFFER.host()) {
            assert!(feature(n).is_some(), "{n}");
            assert!(OFFER.runs.contains(n), "{n}");
        }
    }
}
