//! Growth over time: the least-squares line through samples, which both the load generator
//! (is this metric flat?) and the supervisor (is this child leaking?) judge by, so the two can
//! never disagree on what "growing" means.

/// Least squares through `(x, y)`: `(slope, stderr of the slope)`, or `None` with fewer than
/// three points or no spread in x.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let stderr = (sse / (nf - 2.0) / sxx).sqrt();
    Some((slope, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_is_exact_on_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        let (slope, se) = linear_fit(&pts).unwrap();
        assert!((slope - 2.0).abs() < 1e-9 && se < 1e-9);
        assert_eq!(linear_fit(&pts[..2]), None);
        assert_eq!(linear_fit(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
    }
}
