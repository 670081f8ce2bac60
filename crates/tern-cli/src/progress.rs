//! The progress bar of `tern get`/`put`/…: drawn on stderr while a transfer of more than a few
//! kilobytes runs block by block, when stdout is a terminal (or `--progress` asks for it).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern::Progress;

/// Transfers smaller than this get no bar.
const THRESHOLD: usize = 4096;
/// Redraws at most this often (the last state is always drawn by [`Bar::finish`]).
const REDRAW: Duration = Duration::from_millis(100);
/// Width of the bar itself, in characters.
const WIDTH: usize = 30;

#[derive(Default)]
struct State {
    started: Option<Instant>,
    drawn_at: Option<Instant>,
    last: Option<Progress>,
    shown: bool,
}

/// A progress bar, shared with the request's progress callback.
#[derive(Clone, Default)]
pub struct Bar {
    state: Arc<Mutex<State>>,
}

/// One line of the bar: `[#####.....]  45%  450.0/1000.0 kB  1.2 MB/s`.
pub fn render(progress: &Progress, elapsed: Duration) -> String {
    // The direction that carries the body: the request's while it goes, then the response's.
    let (done, total) = if progress.sent < progress.sent_total {
        (progress.sent, Some(progress.sent_total))
    } else if progress.received > 0 || progress.received_total.is_some() {
        (progress.received, progress.received_total)
    } else {
        (progress.sent, Some(progress.sent_total))
    };
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let kb = |n: usize| n as f64 / 1000.0;
    match total.filter(|&t| t > 0) {
        Some(total) => {
            let fraction = (done as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (fraction * WIDTH as f64).round() as usize;
            format!(
                "[{}{}] {:3.0}%  {:.1}/{:.1} kB  {:.1} MB/s",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                fraction * 100.0,
                kb(done),
                kb(total),
                rate / 1e6
            )
        }
        None => format!("{:.1} kB  {:.1} MB/s", kb(done), rate / 1e6),
    }
}

impl Bar {
    /// The callback for [`tern::RequestBuilder::on_progress`].
    pub fn callback(&self) -> impl Fn(Progress) + Send + Sync + 'static {
        let state = self.state.clone();
        move |progress| {
            let Ok(mut s) = state.lock() else { return };
            let now = Instant::now();
            let started = *s.started.get_or_insert(now);
            s.last = Some(progress);
            let big = progress
                .sent_total
                .max(progress.received)
                .max(progress.received_total.unwrap_or(0));
            if big < THRESHOLD || s.drawn_at.is_some_and(|at| now - at < REDRAW) {
                return;
            }
            s.drawn_at = Some(now);
            s.shown = true;
            let line = render(&progress, now - started);
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        }
    }

    /// Draws the final state and ends the line, if the bar was shown at all.
    pub fn finish(&self) {
        let Ok(s) = self.state.lock() else { return };
        if let (true, Some(progress), Some(started)) = (s.shown, s.last, s.started) {
            let line = render(&progress, started.elapsed());
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "\r{line}\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_the_direction_that_moves() {
        let upload = Progress {
            sent: 500,
            sent_total: 1000,
            received: 0,
            received_total: None,
        };
        let line = render(&upload, Duration::from_secs(1));
        assert!(
            line.contains(" 50%") && line.contains("0.5/1.0 kB"),
            "{line}"
        );
        let download = Progress {
            sent: 0,
            sent_total: 0,
            received: 3000,
            received_total: Some(3000),
        };
        assert!(render(&download, Duration::from_secs(1)).contains("100%"));
        let unknown = Progress {
            received_total: None,
            ..download
        };
        assert!(render(&unknown, Duration::ZERO).starts_with("3.0 kB"));
    }
}
