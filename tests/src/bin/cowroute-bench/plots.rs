//! SVG plots of the bench figures.

use crate::program_cost::CostRow;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

type Area<'p> = DrawingArea<SVGBackend<'p>, plotters::coord::Shift>;
type Chart<'r, 'p> =
    ChartContext<'r, SVGBackend<'p>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A white 800x480 SVG with a captioned chart over `x` by `y`.
fn chart<'r, 'p>(root: &'r Area<'p>, caption: &str, x: std::ops::Range<f64>, y: std::ops::Range<f64>) -> Result<Chart<'r, 'p>> {
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x, y)
        .map_err(|e| anyhow!("{e}"))
}

pub fn write(out: &Path, cost: &[CostRow], lab: &[(&str, usize, u32, f64)]) -> Result<()> {
    ns_per_packet(&out.join("ns_per_packet.svg"), cost)?;
    pps_per_mode(&out.join("pps_per_mode.svg"), lab)
}

/// Lookup-path ns against table size: RO and RW references, both families.
fn ns_per_packet(path: &Path, cost: &[CostRow]) -> Result<()> {
    let ymax = cost.iter().map(|c| c.lookup_rw_ns.max.max(c.lookup_ro_ns.max)).fold(0.0, f64::max) * 1.2;
    let xmax = cost.iter().map(|c| (c.prefixes as f64).log10()).fold(0.0, f64::max) + 0.3;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    let mut chart = chart(&root, "XDP lookup-path cost vs table size (BPF_PROG_TEST_RUN, 64 B)", -0.2..xmax, 0.0..ymax)?;
    chart.configure_mesh().x_desc("prefixes (log10)").y_desc("ns per packet (median)").draw().map_err(|e| anyhow!("{e}"))?;
    let series = [
        ("IPv4, RO", "ipv4", BLUE, false),
        ("IPv4, RW", "ipv4", RED, true),
        ("IPv6, RO", "ipv6", GREEN, false),
        ("IPv6, RW", "ipv6", MAGENTA, true),
    ];
    for (label, family, color, rw) in series {
        let pts: Vec<(f64, f64)> = cost
            .iter()
            .filter(|c| c.family == family)
            .map(|c| ((c.prefixes as f64).log10(), if rw { c.lookup_rw_ns.median } else { c.lookup_ro_ns.median }))
            .collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(|e| anyhow!("{e}"))?;
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn pps_per_mode(path: &Path, lab: &[(&str, usize, u32, f64)]) -> Result<()> {
    let modes: Vec<&str> = {
        let mut m: Vec<&str> = lab.iter().map(|r| r.0).collect();
        m.dedup();
        m
    };
    let cases: Vec<(usize, u32)> = lab.iter().filter(|r| r.0 == modes[0]).map(|r| (r.1, r.2)).collect();
    let ymax = lab.iter().map(|r| r.3).fold(0.0, f64::max) * 1.2 / 1000.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    let mut chart = chart(&root, "Delivered kpps per mode (same lab, same generator)", 0.0..cases.len() as f64, 0.0..ymax)?;
    let labels: Vec<String> = cases.iter().map(|(s, f)| format!("{s}B/{f}fl")).collect();
    chart
        .configure_mesh()
        .x_labels(cases.len() + 1)
        .x_label_formatter(&|x| labels.get(x.floor() as usize).cloned().unwrap_or_default())
        .y_desc("kpps delivered (median)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let colors = [BLACK, BLUE, RED];
    let width = 0.8 / modes.len() as f64;
    for (mi, mode) in modes.iter().enumerate() {
        let color = colors[mi % colors.len()];
        let bars = lab.iter().filter(|r| r.0 == *mode).enumerate().map(move |(ci, r)| {
            let x0 = ci as f64 + 0.1 + mi as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.9, r.3 / 1000.0)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| anyhow!("{e}"))?
            .label(*mode)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
