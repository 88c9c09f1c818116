//! Progress bars and log output on stderr (hidden when stderr is not a terminal or `--quiet`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Install the tracing subscriber (stderr; `RUST_LOG` overrides `-v`).
pub fn init_tracing(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// A progress bar that implements the tuner's [`adt_tuner::Progress`].
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
}

impl Bar {
    /// A bar of `total` units with a label.
    pub fn new(total: u64, label: &str, quiet: bool) -> Bar {
        let bar = ProgressBar::new(total);
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Bar { bar, quiet }
    }

    /// Advance by one.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Advance by `n`.
    pub fn inc_by(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Finish and clear.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Print a line above the bar.
    pub fn println(&self, line: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{line}"));
        }
    }
}

impl adt_tuner::Progress for Bar {
    fn update(&mut self, done: u64, total: u64, message: &str) {
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.set_message(message.to_string());
    }

    fn event(&mut self, message: &str) {
        self.println(&format!("  {message}"));
    }
}
