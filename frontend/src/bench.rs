//! `janus bench`: the built-in guest workloads on several backends, as a table, CSV, JSON and
//! an SVG bar chart of MIPS.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use janus::AccelKind;
use janus::bench::{Summary, WORKLOADS, Workload, backend_name, run_once};

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
    Ok(match s {
        "kvm" => AccelKind::Kvm,
        "jit" => AccelKind::Jit,
        "interp" => AccelKind::Interp,
        other => bail!("unknown backend '{other}' (kvm, jit, interp)"),
    })
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
                        backend_name(b)
                    );
                } else if r == 0 {
                    eprintln!("[{step}/{total}] {} on {}", w.name, backend_name(b));
                }
                let s = run_once(w, b, timeout)?;
                if r > 0 {
                    samples.push(s);
                }
            }
            row.push(Summary::of(w.name, backend_name(b), &samples));
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
    use plotters::prelude::*;
    let backends: Vec<&str> = results
        .first()
        .map(|r| r.iter().map(|s| s.backend).collect())
        .unwrap_or_default();
    let max = results
        .iter()
        .flatten()
        .filter_map(Summary::mips)
        .fold(1.0f64, f64::max);
    let n = results.len().max(1);
    let root = SVGBackend::new(path, (160 * n as u32 + 120, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("janus guest MIPS per backend", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, -max * 0.08..max * 1.1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Vec<&str> = results.iter().map(|r| r[0].workload).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("MIPS")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Workload names under their groups of bars.
    let style =
        ("sans-serif", 14)
            .into_font()
            .color(&BLACK)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ));
    chart
        .draw_series(names.iter().enumerate().map(|(i, name)| {
            Text::new(
                name.to_string(),
                (i as f64 + 0.5, -max * 0.04),
                style.clone(),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
    ];
    let width = 0.8 / backends.len().max(1) as f64;
    for (bi, b) in backends.iter().enumerate() {
        let color = colors[bi % colors.len()];
        let bars: Vec<_> = results
            .iter()
            .enumerate()
            .filter_map(|(wi, row)| {
                let m = row.get(bi)?.mips()?;
                let x0 = wi as f64 + 0.1 + bi as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.95, m)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(*b)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
