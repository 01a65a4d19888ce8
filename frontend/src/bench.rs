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
/// `--runs`: a positive count (0 would time nothing and report empty medians).
fn parse_runs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least one timed run is needed".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a number of runs")),
    }
}

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
    #[arg(long, default_value_t = 3, value_parser = parse_runs)]
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
        janus::ewriteln!(
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
    let runs = args.runs;
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
                    janus::ewrite!(
                        "\r\x1b[K[{step}/{total}] {} on {}: {what}",
                        w.name,
                        b.name()
                    );
                } else if r == 0 {
                    janus::ewriteln!("[{step}/{total}] {} on {}", w.name, b.name());
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
        janus::ewriteln!("\r\x1b[K");
    }
    let out = match args.format {
        Format::Table => table(&results),
        Format::Csv => csv(&results),
        Format::Json => json(&results),
    };
    janus::owrite!("{out}");
    if let Some(p) = &args.plot {
        plot(&results, p)?;
        janus::ewriteln!("janus bench: wrote {}", p.display());
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

/// log10 of a positive finite `x`, without libm: the binary exponent plus ln of the mantissa
/// in [1, 2) from the series ln(m) = 2 atanh((m - 1) / (m + 1)), exact to ~1e-13 here.
fn log10(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    const LN10: f64 = std::f64::consts::LN_10;
    let x = x.max(f64::MIN_POSITIVE);
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    let t = (m - 1.0) / (m + 1.0);
    let (t2, mut term, mut sum) = (t * t, t, 0.0);
    for k in 0..14 {
        sum += term / f64::from(2 * k + 1);
        term *= t2;
    }
    (2.0 * sum + exp as f64 * LN2) / LN10
}

/// 10^n for a small integer n.
fn pow10(n: i32) -> f64 {
    let mut v = 1.0;
    for _ in 0..n.unsigned_abs() {
        v *= 10.0;
    }
    if n < 0 { 1.0 / v } else { v }
}

/// A MIPS value as a bar label: three significant digits or so.
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG bar chart of MIPS: one group of bars per workload, one bar per backend (backends
/// without an instruction count, none), each labelled with its median, a whisker from the
/// slowest to the fastest run, on a logarithmic axis (decades with 2x and 5x ticks) so that a
/// 20,000-MIPS bar and a 2-MIPS bar both read. Written by hand (a few rectangles and labels)
/// rather than with a plotting crate, which would bring libm and its start-up relocations into
/// every janus process.
fn svg_chart(results: &[Vec<Summary>]) -> String {
    const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    const FONT: &str = "font-family=\"sans-serif\"";
    let backends: Vec<&str> = results
        .first()
        .map(|r| r.iter().map(|s| s.backend).collect())
        .unwrap_or_default();
    // The spread: MIPS of the slowest and of the fastest run.
    let range = |s: &Summary| {
        let n = s.instructions? as f64 / 1e6;
        Some((
            n / s.max.as_secs_f64().max(1e-9),
            n / s.min.as_secs_f64().max(1e-9),
        ))
    };
    let values: Vec<f64> = results
        .iter()
        .flatten()
        .filter_map(|s| Some([s.mips()?, range(s)?.0, range(s)?.1]))
        .flatten()
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0f64, f64::max);
    let (lo_dec, hi_dec) = if values.is_empty() {
        (0, 1)
    } else {
        // Half the smallest value still gets some bar: 1.04 MIPS is not drawn at the floor.
        let lo_dec = log10(lo / 2.0).floor() as i32;
        (lo_dec, (log10(hi).ceil() as i32).max(lo_dec + 1))
    };
    let n = results.len().max(1);
    let (width, height) = (170 * n + 120, 540);
    let (left, right, top, bottom) = (76.0, width as f64 - 16.0, 84.0, height as f64 - 48.0);
    let span = f64::from(hi_dec - lo_dec);
    let y = |v: f64| {
        let d = (log10(v.max(pow10(lo_dec))) - f64::from(lo_dec)) / span;
        bottom - d.clamp(0.0, 1.0) * (bottom - top)
    };
    let group = (right - left) / n as f64;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
    );
    let _ = writeln!(o, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        o,
        "<text x=\"{0:.1}\" y=\"30\" {FONT} font-size=\"22\" text-anchor=\"middle\">janus guest MIPS per backend</text>\n\
         <text x=\"{0:.1}\" y=\"52\" {FONT} font-size=\"13\" fill=\"#555\" text-anchor=\"middle\">median of the runs (labelled); whiskers: slowest to fastest run; logarithmic axis</text>",
        width as f64 / 2.0
    );
    // Decade lines with labels, lighter lines at 2x and 5x.
    for d in lo_dec..=hi_dec {
        let v = pow10(d);
        let label = if d < 0 {
            format!("{v}")
        } else {
            format!("{v:.0}")
        };
        let _ = writeln!(
            o,
            "<line x1=\"{left}\" x2=\"{right:.1}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#bbb\"/>\n\
             <text x=\"{1}\" y=\"{0:.1}\" {FONT} font-size=\"12\" text-anchor=\"end\" dominant-baseline=\"middle\">{label}</text>",
            y(v),
            left - 6.0
        );
        if d < hi_dec {
            for m in [2.0, 5.0] {
                let _ = writeln!(
                    o,
                    "<line x1=\"{left}\" x2=\"{right:.1}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#eee\"/>",
                    y(v * m)
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" x2=\"{right:.1}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <text transform=\"translate(18 {:.1}) rotate(-90)\" {FONT} font-size=\"14\" text-anchor=\"middle\">MIPS (log scale)</text>",
        (top + bottom) / 2.0
    );
    let bar = 0.8 * group / backends.len().max(1) as f64;
    for (wi, row) in results.iter().enumerate() {
        let x = left + wi as f64 * group;
        for (bi, s) in row.iter().enumerate() {
            let (Some(m), Some((slow, fast))) = (s.mips(), range(s)) else {
                continue;
            };
            let bx = x + 0.1 * group + bi as f64 * bar;
            let cx = bx + bar * 0.475;
            let _ = writeln!(
                o,
                "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {m:.1} MIPS (runs {slow:.1}-{fast:.1})</title></rect>",
                y(m),
                bar * 0.95,
                bottom - y(m),
                COLORS[bi % COLORS.len()],
                xml_escape(s.workload),
                xml_escape(s.backend)
            );
            // Whisker: slowest to fastest run, with caps.
            let (y0, y1) = (y(slow), y(fast));
            let cap = (bar * 0.2).min(6.0);
            let _ = writeln!(
                o,
                "<path d=\"M{cx:.1} {y0:.1}V{y1:.1}M{:.1} {y0:.1}H{:.1}M{:.1} {y1:.1}H{:.1}\" stroke=\"black\" stroke-width=\"1.2\" fill=\"none\"/>",
                cx - cap,
                cx + cap,
                cx - cap,
                cx + cap
            );
            let _ = writeln!(
                o,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"middle\">{}</text>",
                y1.min(y(m)) - 4.0,
                short(m)
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
    // Legend, above the plot on the right.
    let lx = right - 24.0 - 80.0 * backends.len() as f64;
    for (bi, b) in backends.iter().enumerate() {
        let bx = lx + 80.0 * bi as f64;
        let _ = writeln!(
            o,
            "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"13\" dominant-baseline=\"middle\">{}</text>",
            top - 20.0,
            COLORS[bi % COLORS.len()],
            bx + 14.0,
            top - 15.0,
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
    fn log10_without_libm() {
        for (x, want) in [
            (1.0, 0.0),
            (10.0, 1.0),
            (2.0, std::f64::consts::LOG10_2),
            (0.05, -1.30103),
        ] {
            assert!((log10(x) - want).abs() < 1e-5, "log10({x}) = {}", log10(x));
        }
        assert!((log10(20124.2) - 4.30372).abs() < 1e-5);
        assert_eq!((pow10(3), pow10(-2)), (1000.0, 0.01));
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
            svg.contains("<title>int32 jit: 1000.0 MIPS (runs 1000.0-1000.0)</title>"),
            "{svg}"
        );
        // Each bar is labelled with its value; the axis runs in decades.
        for label in [">1000<", ">250<", ">500<", ">125<"] {
            assert!(svg.contains(label), "{label} missing: {svg}");
        }
        assert!(svg.contains("MIPS (log scale)"), "{svg}");
        assert_eq!(
            svg.matches("<path ").count(),
            4,
            "one whisker per bar: {svg}"
        );
        assert!(svg.contains(">a&lt;b</text>"), "{svg}");
        assert!(!svg.contains("a<b"), "{svg}");
    }
}
