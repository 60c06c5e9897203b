//! Axis labels people read (`120k`, `1.5 ms`) and the latency percentile plot, HdrHistogram
//! style: latency against the percentile on a log scale of 1/(1-p), so 90 %, 99 %, 99.9 % and
//! 99.99 % are evenly spaced and the tail gets as much room as the median. Several runs drawn
//! on one chart compare at a glance (`compare` overlays one line per target).
//!
//! Drawn with plotters, as the time series in `report` are: its SVG backend writes text as SVG
//! `<text>` and needs no font library (the `ttf` feature, which would pull in fontconfig and
//! freetype, is off), so it builds anywhere Rust does, and its log axes, legends and label
//! formatters are code this crate does not have to keep.

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

/// `120k`, `1.5M`, `0.25`: three significant digits at most, SI suffix.
pub fn human(v: f64) -> String {
    let (v, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    format!("{}{suffix}", trim(v))
}

/// A latency in microseconds as `250 us`, `1.5 ms`, `2.1 s`.
pub fn latency(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} us", trim(us))
    }
}

/// Three significant digits, no trailing zeros: 1.5, 12, 120, 0.25.
fn trim(v: f64) -> String {
    let decimals = match v.abs() {
        a if a >= 100.0 || a == 0.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The percentile of an x position 1/(1-p): 1 -> `0%`, 10 -> `90%`, 1000 -> `99.9%`.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.6}");
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// Distinct enough for a dozen lines side by side (compare's ten servers among them).
pub const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
    RGBColor(0, 0, 128),
    RGBColor(0, 0, 0),
];

/// Draws latency by percentile for each named histogram onto `area`.
pub fn percentiles<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    runs: &[(String, &Histogram<u64>)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let lines: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (name.as_str(), curve(h)))
        .collect();
    // As far into the tail as the biggest run has samples for, one decade at a time.
    let most = runs.iter().map(|(_, h)| h.len()).max().unwrap_or(0).max(10);
    let decades = (most as f64).log10().floor().clamp(1.0, 6.0);
    let xmax = 10f64.powf(decades);
    // Latency on a log scale too: servers a thousand times apart (a busybox tail of seconds
    // beside event loops at a millisecond) stay readable on one chart.
    let ys = || {
        lines
            .iter()
            .flat_map(|(_, pts)| pts.iter().filter(|p| p.0 <= xmax).map(|p| p.1))
    };
    let ymax = ys().fold(1.0f64, f64::max) * 1.5;
    let ymin = (ys().fold(f64::INFINITY, f64::min).max(1.0) / 1.5).min(ymax / 10.0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        // Room for the last percentile label, centred on the right edge.
        .margin_right(32)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..xmax).log_scale(), (ymin..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency")
        .x_label_formatter(&|x| {
            // Only the decades: 90 %, 99 %, 99.9 %; the log axis's other ticks stay unlabelled.
            let d = x.log10();
            if (d - d.round()).abs() < 1e-9 {
                percentile_label(*x)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| latency(*y))
        .draw()
        .map_err(err)?;
    for (k, (name, pts)) in lines.into_iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = pts.into_iter().filter(|p| p.0 <= xmax).collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// (1/(1-p), latency in us) along the histogram, as HdrHistogram's percentile output walks it:
/// more points the further into the tail.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    for v in h.iter_quantiles(4) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        pts.push((
            1.0 / (1.0 - q),
            h.highest_equivalent(v.value_iterated_to()) as f64,
        ));
    }
    // The maximum, placed one step beyond the last percentile so the line ends at the worst.
    let last_x = pts.last().map_or(1.0, |p| p.0);
    pts.push((last_x * 2.0, h.max() as f64));
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_people_read() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (0.25, "0.25"),
            (12.0, "12"),
            (999.0, "999"),
            (1500.0, "1.5k"),
            (120_000.0, "120k"),
            (2_340_000.0, "2.34M"),
        ];
        for &(v, want) in cases {
            assert_eq!(human(v), want, "{v}");
        }
        assert_eq!(latency(250.0), "250 us");
        assert_eq!(latency(1500.0), "1.5 ms");
        assert_eq!(latency(2_100_000.0), "2.1 s");
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }

    #[test]
    fn percentile_curve_rises_to_the_max() {
        let mut h = crate::stats::new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let c = curve(&h);
        assert!(
            c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{c:?}"
        );
        let (x99, y99) = *c.iter().find(|p| p.0 >= 100.0).unwrap();
        assert!(
            x99 < 130.0 && (9_800.0..=10_100.0).contains(&y99),
            "{x99} {y99}"
        );
        assert_eq!(c.last().unwrap().1, h.max() as f64);
    }
}
