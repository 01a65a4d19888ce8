//! The `--stats` report printed when a run ends.

use std::fmt::Write;

use janus_accel::ExitReasonKind;

use crate::machine::RunOutcome;

/// Formats the statistics of a run as lines for stderr.
pub fn format(o: &RunOutcome) -> String {
    let mut s = String::new();
    let secs = o.wall.as_secs_f64().max(1e-9);
    let total = o.counters.total();
    let _ = writeln!(s, "janus stats ({} backend)", o.backend);
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
    let _ = writeln!(
        s,
        "  unassigned          pio {} reads, {} writes; mmio {} reads, {} writes",
        o.pio_unassigned.0, o.pio_unassigned.1, o.mmio_unassigned.0, o.mmio_unassigned.1
    );
    let _ = writeln!(s, "  serial bytes out    {}", o.serial_bytes);
    let _ = write!(s, "  post port writes    {}", o.post_writes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::StopReason;
    use janus_accel::ExitCounters;
    use std::time::Duration;

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
            pio_unassigned: (1, 2),
            mmio_unassigned: (0, 0),
            serial_bytes: 10,
            post_writes: 0,
        };
        let s = format(&o);
        assert!(s.contains("io-out            1000"), "{s}");
        assert!(s.contains("hlt               1"), "{s}");
        assert!(s.contains("1001 (1001 per second)"), "{s}");
        assert!(s.contains("pio 1 reads, 2 writes"), "{s}");
    }
}
