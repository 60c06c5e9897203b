//! SIGHUP to the supervisor: its own configuration, read again by the loop (the input
//! [`Input::Reload`](super::Input::Reload)), applied to the running machine.

use super::Supervisor;
use crate::config::Config;

impl Supervisor {
    /// SIGHUP: the flags and the `[supervisor]` section, read again by the loop, and applies what can
    /// change while the supervisor runs; what cannot is logged and kept (issue 10: HUP only
    /// reached the child). Every field of [`Config`] is named here, so a new one must be
    /// placed in one of the three groups to compile.
    pub(super) fn reload_config(&mut self, loaded: Result<Box<Config>, String>) {
        let new = match loaded {
            Ok(c) => *c,
            Err(e) => {
                tracing::error!("reload: {e}; the supervisor keeps its running configuration");
                return;
            }
        };
        // Each field of `Config` once: applied now, at the child's next start, or needing a
        // restart of the supervisor. The destructuring names them all, so a field added to
        // `Config` and not placed here does not compile.
        let old = &mut self.cfg;
        let mut applied = Vec::new();
        let mut next_start = Vec::new();
        macro_rules! place {
            (now: $($now:ident),*; next_start: $($next:ident),*; restart: $($restart:ident),*) => {
                let Config { $($now,)* $($next,)* $($restart,)* } = new;
                $(if old.$now != $now {
                    old.$now = $now;
                    applied.push(stringify!($now).replace('_', "-"));
                })*
                $(if old.$next != $next {
                    old.$next = $next;
                    next_start.push(stringify!($next).replace('_', "-"));
                })*
            };
        }
        place!(
            now: health, health_interval, health_timeout, health_threshold, readiness,
                ready_timeout, backoff_base, backoff_cap, stable_after, max_restarts,
                restart_window, stop_timeout, recycle, limits, slope_window, sample_interval,
                port, status_file;
            // The child reads these from its command line and environment when it starts.
            next_start: command, watchdog;
            restart: metrics_listen, listen
        );
        if old.listen != listen {
            tracing::warn!(
                "reload: listen cannot change while the supervisor runs (holding {:?}, \
                 configured {listen:?}): restart the supervisor to apply",
                old.listen
            );
        }
        if old.metrics_listen != metrics_listen {
            tracing::warn!(
                "reload: metrics-listen cannot change while the supervisor runs (running {:?}, \
                 configured {metrics_listen:?}): restart the supervisor to apply",
                old.metrics_listen
            );
        }
        let cfg = &self.cfg;
        self.backoff
            .reconfigure(cfg.backoff_base, cfg.backoff_cap, cfg.stable_after);
        self.budget
            .reconfigure(cfg.max_restarts, cfg.restart_window);
        if applied.iter().any(|k| k == "limits" || k == "slope-window") {
            self.watch.set_limits(cfg.limits.clone(), cfg.slope_window);
        }
        if applied.iter().any(|k| k == "health-threshold") {
            self.health_failures = self
                .health_failures
                .min(cfg.health_threshold.saturating_sub(1));
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.join(", ")
            }
        };
        tracing::info!(
            "reloaded the supervisor's configuration: applied {}; at the child's next start: {}",
            list(&applied),
            list(&next_start)
        );
        self.status_soon();
    }
}
