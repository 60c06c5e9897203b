//! The live progress line on a terminal: elapsed and total, responses, the rate over the last
//! second, errors and the p99 so far, one line redrawn in place (indicatif, which also limits
//! the redraws to 10 a second and clears the line at the end). Nothing at all when stdout is not
//! a terminal or with `--quiet`: a pipe or a file gets only the report.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::plot::{human, latency};
use crate::stats::Coarse;

/// How far a run has got, in what bounds it.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Time(Duration),
    Requests(u64),
}

/// Whether a progress line may be drawn at all: a terminal on stdout, and not `--quiet`.
pub fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stdout().is_terminal()
}

pub struct Live {
    bar: ProgressBar,
    bound: Bound,
    /// (seconds, responses) over the last second, for the current rate.
    window: VecDeque<(f64, u64)>,
}

impl Live {
    /// A line headed by `prefix` (in compare mode, which run of how many); hidden unless `show`.
    pub fn new(show: bool, prefix: String, bound: Bound) -> Live {
        // On stderr, which indicatif leaves alone when it is not a terminal either.
        let target = if show {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        // `wide_msg` is cut to the terminal's width: a line that wrapped could not be redrawn
        // in place.
        let bar = ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{prefix}{wide_msg}").expect("a valid template"),
        );
        bar.set_prefix(prefix);
        Live {
            bar,
            bound,
            window: VecDeque::new(),
        }
    }

    pub fn update(&mut self, elapsed: Duration, responses: u64, errors: u64, lat: &Coarse) {
        if self.bar.is_hidden() {
            return;
        }
        let t = elapsed.as_secs_f64();
        self.window.push_back((t, responses));
        while self.window.len() > 2 && t - self.window[1].0 >= 1.0 {
            self.window.pop_front();
        }
        let (t0, r0) = self.window[0];
        let rate = if t > t0 {
            (responses - r0) as f64 / (t - t0)
        } else {
            0.0
        };
        let p99 = lat
            .quantile(0.99)
            .map_or_else(|| "-".to_string(), |v| latency(v as f64));
        let done = match self.bound {
            Bound::Time(d) => format!("{t:.1}s/{}", forkd_daemon::units::show_duration(d)),
            Bound::Requests(n) => {
                format!("{t:.1}s, {}/{}", human(responses as f64), human(n as f64))
            }
        };
        self.bar.set_message(format!(
            "{done}  {} req  {}/s  {errors} errors  p99 {p99}",
            human(responses as f64),
            human(rate),
        ));
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
