//! The CLI half of `janus bench`: picks the workloads and backends, repeats each run, checks that
//! the backends' checksums agree, and prints a table, CSV, JSON and an SVG bar chart of MIPS.
//! Running one workload once and summarising runs is the library's (`janus::bench`, src/bench.rs).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use janus::AccelKind;
use janus::bench::{Summary, WORKLOADS, Workload, run_once};

/// Output format of `janus bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned table.
    Table,
    /// Comma-separated values.
    Csv,
    /// JSON.
    Json,
}

/// `janus bench` arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Backends, comma-separated, the first being the reference of the ratios
    /// (default: jit,interp, plus kvm first where the host has VT-x/AMD-V).
    #[arg(long, value_delimiter = ',')]
    accel: Vec<String>,
    /// Workloads to run (default: all).
    #[arg(long = "workload")]
    workloads: Vec<String>,
    /// Timed runs per workload and backend (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also write an SVG bar chart of MIPS per backend and workload.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Per-run time limit in seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

fn parse_backend(s: &str) -> Result<AccelKind> {
    match AccelKind::from_name(s) {
        Some(k) => Ok(k),
        None => bail!("unknown backend '{s}' (kvm, jit, interp)"),
    }
}

fn default_backends() -> Vec<AccelKind> {
    let kvm = janus_accel::kvm::probe(janus_accel::kvm::DEFAULT_DEVICE.as_ref()).is_ok();
    let mut v = Vec::new();
    if kvm && !janus_accel::kvm::is_paravirtual() {
        v.push(AccelKind::Kvm);
    } else if kvm {
        eprintln!(
            "janus bench: kvm left out by default: this host's KVM is kvm_pvm, which emulates \
             these kernel-mode workloads (ask for it with --accel kvm,jit,interp)"
        );
    }
    v.extend([AccelKind::Jit, AccelKind::Interp]);
    v
}

/// Runs `janus bench`.
///
/// # Errors
/// Bad arguments, a backend that cannot start, a failed workload, or checksums that differ.
pub fn run(args: BenchArgs) -> Result<()> {
    let backends: Vec<AccelKind> = if args.accel.is_empty() {
        default_backends()
    } else {
        args.accel
            .iter()
            .map(|s| parse_backend(s.trim()))
            .collect::<Result<_>>()?
    };
    let workloads: Vec<&Workload> = if args.workloads.is_empty() {
        WORKLOADS.iter().collect()
    } else {
        args.workloads
            .iter()
            .map(|n| {
                WORKLOADS.iter().find(|w| w.name == n).with_context(|| {
                    let names: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
                    format!("unknown workload '{n}' (one of {})", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let runs = args.runs.max(1);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let tty = std::io::stderr().is_terminal();
    let total = workloads.len() * backends.len();
    let mut results: Vec<Vec<Summary>> = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        let mut row = Vec::new();
        for (bi, &b) in backends.iter().enumerate() {
            let mut samples = Vec::with_capacity(runs);
            for r in 0..=runs {
                let step = wi * backends.len() + bi + 1;
                let what = if r == 0 {
                    "warm-up".to_string()
                } else {
                    format!("run {r}/{runs}")
                };
                if tty {
                    eprint!(
                        "\r\x1b[K[{step}/{total}] {} on {}: {what}",
                        w.name,
                        b.name()
                    );
                } else if r == 0 {
                    eprintln!("[{step}/{total}] {} on {}", w.name, b.name());
                }
                let s = run_once(w, b, timeout)?;
                if r > 0 {
                    samples.push(s);
                }
            }
            row.push(Summary::of(w.name, b.name(), &samples));
        }
        // Checksums must agree; KVM's instruction count comes from a software backend.
        let sums: Vec<&str> = row.iter().map(|s| s.checksum.as_str()).collect();
        if sums.windows(2).any(|p| p[0] != p[1]) {
            bail!("{}: checksums differ between backends: {sums:?}", w.name);
        }
        if let Some(n) = row.iter().find_map(|s| s.instructions) {
            for s in &mut row {
                s.instructions.get_or_insert(n);
            }
        }
        results.push(row);
    }
    if tty {
        eprintln!("\r\x1b[K");
    }
    let out = match args.format {
        Format::Table => table(&results),
        Format::Csv => csv(&results),
        Format::Json => json(&results),
    };
    print!("{out}");
    if let Some(p) = &args.plot {
        plot(&results, p)?;
        eprintln!("janus bench: wrote {}", p.display());
    }
    Ok(())
}

fn ratio(first: &Summary, s: &Summary) -> f64 {
    first.median.as_secs_f64() / s.median.as_secs_f64().max(1e-9)
}

fn table(results: &[Vec<Summary>]) -> String {
    let mut o = String::new();
    let first = results
        .first()
        .and_then(|r| r.first())
        .map_or("", |s| s.backend);
    let _ = writeln!(
        o,
        "{:<10} {:<7} {:>10} {:>15} {:>13} {:>9} {:>11} {:>10} {:>9}",
        "workload",
        "backend",
        "median s",
        "min-max s",
        "instructions",
        "MIPS",
        "exits/s",
        "ns/exit",
        format!("vs {first}")
    );
    for row in results {
        for s in row {
            let _ = writeln!(
                o,
                "{:<10} {:<7} {:>10.3} {:>15} {:>13} {:>9} {:>11.0} {:>10} {:>8.2}x",
                s.workload,
                s.backend,
                s.median.as_secs_f64(),
                format!("{:.3}-{:.3}", s.min.as_secs_f64(), s.max.as_secs_f64()),
                s.instructions.map_or("-".into(), |n| n.to_string()),
                s.mips().map_or("-".into(), |m| format!("{m:.1}")),
                s.exits_per_sec(),
                s.ns_per_exit().map_or("-".into(), |n| format!("{n:.0}")),
                ratio(&row[0], s)
            );
        }
    }
    o
}

fn csv(results: &[Vec<Summary>]) -> String {
    let mut o = String::from(
        "workload,backend,median_s,min_s,max_s,instructions,mips,exits,ns_per_exit,speed_vs_first,checksum\n",
    );
    for row in results {
        for s in row {
            let _ = writeln!(
                o,
                "{},{},{:.6},{:.6},{:.6},{},{},{},{},{:.4},\"{}\"",
                s.workload,
                s.backend,
                s.median.as_secs_f64(),
                s.min.as_secs_f64(),
                s.max.as_secs_f64(),
                s.instructions.map_or(String::new(), |n| n.to_string()),
                s.mips().map_or(String::new(), |m| format!("{m:.2}")),
                s.exits,
                s.ns_per_exit().map_or(String::new(), |n| format!("{n:.1}")),
                ratio(&row[0], s),
                s.checksum.replace('"', "'")
            );
        }
    }
    o
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json(results: &[Vec<Summary>]) -> String {
    let mut items = Vec::new();
    for row in results {
        for s in row {
            items.push(format!(
                "  {{\"workload\": {}, \"backend\": {}, \"median_s\": {:.6}, \"min_s\": {:.6}, \"max_s\": {:.6}, \"instructions\": {}, \"mips\": {}, \"exits\": {}, \"speed_vs_first\": {:.4}, \"checksum\": {}}}",
                json_str(s.workload),
                json_str(s.backend),
                s.median.as_secs_f64(),
                s.min.as_secs_f64(),
                s.max.as_secs_f64(),
                s.instructions.map_or("null".into(), |n| n.to_string()),
                s.mips().map_or("null".into(), |m| format!("{m:.2}")),
                s.exits,
                ratio(&row[0], s),
                json_str(&s.checksum)
            ));
        }
    }
    format!("[\n{}\n]\n", items.join(",\n"))
}

fn plot(results: &[Vec<Summary>], path: &Path) -> Result<()> {
    std::fs::write(path, svg_chart(results))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A round axis step for values up to `max` (1, 2 or 5 times a power of ten; at most about
/// eight steps), found without libm.
fn axis_step(max: f64) -> f64 {
    let mut p = 1.0f64;
    while max / p > 10.0 {
        p *= 10.0;
    }
    while max / p < 1.0 && p > 1e-9 {
        p /= 10.0;
    }
    // Now 1 <= max / p < 10: the smallest round step giving at most eight steps.
    [0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| max / s <= 8.0)
        .unwrap_or(10.0 * p)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG bar chart of MIPS: one group of bars per workload, one bar per backend (backends
/// without an instruction count, none), a y axis with round ticks and a legend. Written by hand
/// (a few rectangles and labels) rather than with a plotting crate, which would bring libm
/// and its start-up relocations into every janus process.
fn svg_chart(results: &[Vec<Summary>]) -> String {
    const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    const FONT: &str = "font-family=\"sans-serif\"";
    let backends: Vec<&str> = results
        .first()
        .map(|r| r.iter().map(|s| s.backend).collect())
        .unwrap_or_default();
    let max = results
        .iter()
        .flatten()
        .filter_map(Summary::mips)
        .fold(1.0f64, f64::max);
    let step = axis_step(max * 1.05);
    let ticks = (max * 1.05 / step) as u32 + 1;
    let top_value = f64::from(ticks) * step;
    let n = results.len().max(1);
    let (width, height) = (160 * n + 120, 520);
    let (left, right, top, bottom) = (76.0, width as f64 - 16.0, 56.0, height as f64 - 48.0);
    let y = |v: f64| bottom - v / top_value * (bottom - top);
    let group = (right - left) / n as f64;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
    );
    let _ = writeln!(o, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"30\" {FONT} font-size=\"22\" text-anchor=\"middle\">janus guest MIPS per backend</text>",
        width as f64 / 2.0
    );
    // Horizontal grid lines and tick labels.
    for t in 0..=ticks {
        let v = f64::from(t) * step;
        let label = if step < 1.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        };
        let _ = writeln!(
            o,
            "<line x1=\"{left}\" x2=\"{right:.1}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{1}\" y=\"{0:.1}\" {FONT} font-size=\"12\" text-anchor=\"end\" dominant-baseline=\"middle\">{label}</text>",
            y(v),
            left - 6.0
        );
    }
    let _ = writeln!(
        o,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" x2=\"{right:.1}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <text transform=\"translate(18 {:.1}) rotate(-90)\" {FONT} font-size=\"14\" text-anchor=\"middle\">MIPS</text>",
        (top + bottom) / 2.0
    );
    let bar = 0.8 * group / backends.len().max(1) as f64;
    for (wi, row) in results.iter().enumerate() {
        let x = left + wi as f64 * group;
        for (bi, s) in row.iter().enumerate() {
            let Some(m) = s.mips() else { continue };
            let _ = writeln!(
                o,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {m:.1} MIPS</title></rect>",
                x + 0.1 * group + bi as f64 * bar,
                y(m),
                bar * 0.95,
                bottom - y(m),
                COLORS[bi % COLORS.len()],
                xml_escape(s.workload),
                xml_escape(s.backend)
            );
        }
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"14\" text-anchor=\"middle\">{}</text>",
            x + group / 2.0,
            bottom + 22.0,
            xml_escape(row.first().map_or("", |s| s.workload))
        );
    }
    // Legend, top right.
    let lx = right - 110.0;
    let _ = writeln!(
        o,
        "<rect x=\"{lx:.1}\" y=\"{top}\" width=\"104\" height=\"{}\" fill=\"white\" fill-opacity=\"0.8\" stroke=\"black\"/>",
        8 + 20 * backends.len()
    );
    for (bi, b) in backends.iter().enumerate() {
        let ly = top + 14.0 + 20.0 * bi as f64;
        let _ = writeln!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{ly:.1}\" {FONT} font-size=\"13\" dominant-baseline=\"middle\">{}</text>",
            lx + 8.0,
            ly - 5.0,
            COLORS[bi % COLORS.len()],
            lx + 24.0,
            xml_escape(b)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(workload: &'static str, backend: &'static str, ms: u64) -> Summary {
        let d = Duration::from_millis(ms);
        Summary {
            workload,
            backend,
            median: d,
            min: d,
            max: d,
            instructions: Some(100_000_000),
            exits: 0,
            checksum: String::new(),
        }
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(axis_step(7.0), 1.0);
        assert_eq!(axis_step(15.0), 2.0);
        assert_eq!(axis_step(1980.0), 500.0);
        assert_eq!(axis_step(0.3), 0.05);
    }

    #[test]
    fn chart_has_a_bar_per_backend_and_workload() {
        let results = vec![
            vec![
                summary("int32", "jit", 100),
                summary("int32", "interp", 400),
            ],
            vec![summary("a<b", "jit", 200), summary("a<b", "interp", 800)],
        ];
        let svg = svg_chart(&results);
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>\n"), "{svg}");
        assert_eq!(svg.matches("<title>").count(), 4, "{svg}");
        assert!(
            svg.contains("<title>int32 jit: 1000.0 MIPS</title>"),
            "{svg}"
        );
        assert!(svg.contains(">a&lt;b</text>"), "{svg}");
        assert!(!svg.contains("a<b"), "{svg}");
    }
}
