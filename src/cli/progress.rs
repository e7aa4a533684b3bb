//! Progress bars for long work.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar showing position, rate and ETA; hidden when stderr is not a terminal and `quiet`.
pub fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg:>10} [{bar:40.cyan/blue}] {pos}/{len} {per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}
