//! The `--stats` report printed when a run ends.

use std::fmt::Write;

use janus_accel::ExitReasonKind;

use crate::machine::RunOutcome;
use std::time::Duration;

/// Formats the statistics of a run as lines for stderr.
pub fn format(o: &RunOutcome) -> String {
    format_parts(o, true)
}

/// Formats the statistics of a run that is still going (Ctrl-A s).
pub fn format_so_far(o: &RunOutcome) -> String {
    format_parts(o, false)
}

fn format_parts(o: &RunOutcome, ended: bool) -> String {
    let mut s = String::new();
    let secs = o.wall.as_secs_f64().max(1e-9);
    let total = o.counters.total();
    let so_far = if ended { "" } else { " so far" };
    let _ = writeln!(s, "janus stats{so_far} ({} backend)", o.backend);
    let _ = writeln!(s, "  wall time           {:.3} s", o.wall.as_secs_f64());
    let _ = writeln!(
        s,
        "  to first entry      {:.3} ms",
        o.to_first_entry.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        s,
        "  exits               {total} ({:.0} per second)",
        total as f64 / secs
    );
    for kind in ExitReasonKind::ALL {
        let n = o.counters.get(kind);
        if n > 0 {
            let _ = writeln!(s, "    {:<18}{n}", kind.name());
        }
    }
    if let Some(n) = o.counters.instructions {
        let _ = writeln!(
            s,
            "  instructions        {n} ({:.1} MIPS)",
            n as f64 / secs / 1e6
        );
    }
    for (k, v) in &o.counters.extra {
        let _ = writeln!(s, "  {k}: {v}");
    }
    format_machine(s, o)
}

/// The devices', milestones' and memory's part of the statistics.
fn format_machine(mut s: String, o: &RunOutcome) -> String {
    let _ = writeln!(
        s,
        "  unassigned          pio {} reads, {} writes; mmio {} reads, {} writes",
        o.pio_unassigned.0, o.pio_unassigned.1, o.mmio_unassigned.0, o.mmio_unassigned.1
    );
    let _ = writeln!(s, "  serial bytes out    {}", o.serial_bytes);
    let ms = |d: Option<Duration>| {
        d.map_or("never".into(), |d| {
            format!("{:.3} ms", d.as_secs_f64() * 1e3)
        })
    };
    let _ = writeln!(s, "  launch to entry     {}", ms(o.boot.first_entry));
    let _ = writeln!(s, "  launch to serial    {}", ms(o.boot.first_serial));
    if !o.boot.marker_text.is_empty() {
        let _ = writeln!(
            s,
            "  launch to marker    {} ({:?})",
            ms(o.boot.marker),
            o.boot.marker_text
        );
    }
    if let Some(m) = o.memory_use {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let _ = writeln!(
            s,
            "  peak RSS            {:.1} MiB (guest memory touched {:.1} MiB, janus {:.1} MiB)",
            mib(m.peak_rss),
            mib(m.guest_touched),
            mib(m.overhead())
        );
        let _ = writeln!(
            s,
            "  RSS at the end      {:.1} MiB mapped from files (code), {:.1} MiB anonymous, {:.1} MiB shared (JIT code)",
            mib(m.rss_file),
            mib(m.rss_anon),
            mib(m.rss_shmem)
        );
    }
    let post = format!("POST port {:#x}", o.post_port);
    let _ = write!(s, "  {post:<20}{} writes", o.post_writes);
    if let Some(c) = o.post_last {
        let _ = write!(s, ", last code {c:#04x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::StopReason;
    use crate::milestones::{BootTimes, MemoryUse};
    use janus_accel::ExitCounters;

    #[test]
    fn lists_exits_by_reason_and_rate() {
        let mut c = ExitCounters::default();
        c.add(ExitReasonKind::IoOut, 1000);
        c.bump(ExitReasonKind::Halt);
        let o = RunOutcome {
            reason: StopReason::GuestExit(0),
            backend: "kvm",
            wall: Duration::from_secs(1),
            to_first_entry: Duration::from_millis(2),
            counters: c,
            vcpus: Vec::new(),
            pio_unassigned: (1, 2),
            mmio_unassigned: (0, 0),
            serial_bytes: 10,
            post_writes: 3,
            post_last: Some(0x2a),
            post_port: 0x80,
            boot: BootTimes {
                first_entry: Some(Duration::from_micros(1500)),
                first_serial: Some(Duration::from_millis(40)),
                marker: None,
                marker_text: "JANUS-INIT-OK".into(),
            },
            memory_use: Some(MemoryUse {
                peak_rss: 10 << 20,
                guest_touched: 6 << 20,
                rss_file: 3 << 20,
                rss_anon: 7 << 20,
                rss_shmem: 1 << 19,
            }),
            journal: None,
        };
        let s = format(&o);
        assert!(s.contains("io-out            1000"), "{s}");
        assert!(s.contains("hlt               1"), "{s}");
        assert!(s.contains("1001 (1001 per second)"), "{s}");
        assert!(s.contains("pio 1 reads, 2 writes"), "{s}");
        assert!(
            s.contains("POST port 0x80      3 writes, last code 0x2a"),
            "{s}"
        );
        let live = format_so_far(&o);
        assert!(live.contains("janus stats so far (kvm backend)"), "{live}");
        assert!(live.contains("io-out            1000"), "{live}");
        assert!(live.contains("last code 0x2a"), "{live}");
        assert!(s.contains("launch to entry     1.500 ms"), "{s}");
        assert!(s.contains("launch to serial    40.000 ms"), "{s}");
        assert!(
            s.contains("launch to marker    never (\"JANUS-INIT-OK\")"),
            "{s}"
        );
        assert!(
            s.contains(
                "peak RSS            10.0 MiB (guest memory touched 6.0 MiB, janus 4.0 MiB)"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "RSS at the end      3.0 MiB mapped from files (code), 7.0 MiB anonymous, 0.5 MiB shared (JIT code)"
            ),
            "{s}"
        );
    }
}
