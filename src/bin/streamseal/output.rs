//! What every command shares for output: `--json` (the result as one JSON document on stdout,
//! nothing else there), progress on stderr for long work (a bar on a terminal, a line every
//! 15 s otherwise, none under `--json`), sizes and durations for people, and exit statuses.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use streamseal::model::findings::{Kind, Status};
use streamseal::ops::verify::VerifyReport;
use streamseal::progress::Progress;

/// How a command prints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Output {
        Output { json }
    }

    /// Whether the result goes out as JSON.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// Prints `value` as JSON under `--json`, else runs `text` (which prints for people).
    pub(crate) fn result<T: Serialize + ?Sized>(
        &self,
        value: &T,
        text: impl FnOnce(),
    ) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(value)?);
        } else {
            text();
        }
        Ok(())
    }

    /// Shows `progress` on stderr while the returned guard lives (see the module comment).
    /// `what` names the command, e.g. "restore".
    pub(crate) fn progress(&self, what: &'static str, progress: Arc<Progress>) -> Shown {
        if self.json {
            return Shown(None);
        }
        let terminal = std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(what);
            bar
        });
        let started = Instant::now();
        let task = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut tick = tokio::time::interval(if bar.is_some() {
                    Duration::from_millis(250)
                } else {
                    Duration::from_secs(15)
                });
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let line = describe(&progress, started.elapsed());
                    match &bar {
                        Some(bar) => bar.set_message(line),
                        None => eprintln!("{what}: {line}"),
                    }
                }
            }
        });
        Shown(Some((bar, task)))
    }
}

/// One line about `progress`: stage, count of total, rate, bytes, time left.
fn describe(progress: &Progress, elapsed: Duration) -> String {
    let s = progress.read();
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut line = if s.stage.is_empty() {
        String::from("starting")
    } else {
        s.stage.to_owned()
    };
    if s.total > 0 {
        line.push_str(&format!(
            " {}/{} ({:.0}%)",
            s.done,
            s.total,
            100.0 * s.done as f64 / s.total as f64
        ));
    } else if s.done > 0 {
        line.push_str(&format!(" {}", s.done));
    }
    if s.bytes > 0 {
        line.push_str(&format!(", {}", size(s.bytes)));
    }
    if s.done > 0 && s.total > s.done {
        let rate = s.done as f64 / secs;
        let left = Duration::from_secs_f64((s.total - s.done) as f64 / rate);
        line.push_str(&format!(", about {} left", duration(left)));
    }
    line
}

/// Keeps progress on screen; dropping it clears the bar and stops the updates.
pub(crate) struct Shown(Option<(Option<ProgressBar>, tokio::task::JoinHandle<()>)>);

impl Shown {
    /// Runs `f` (which prints) with the bar out of the way.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some((Some(bar), _)) => bar.suspend(f),
            _ => f(),
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        if let Some((bar, task)) = self.0.take() {
            task.abort();
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        }
    }
}

/// Bytes for people: `1.4 MiB`.
pub(crate) fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// A duration for people, to the second (`1h 2m 3s`), or milliseconds below one second.
pub(crate) fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{} ms", d.as_millis());
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Milliseconds as a duration for people.
pub(crate) fn millis(ms: u64) -> String {
    duration(Duration::from_millis(ms))
}

/// A CLI duration flag: `90s`, `30m`, `6h`, `2d`, `1h 30m` (or `0`), at most ten years.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 90s, 30m, 6h or 2d: {e}"))?;
    if d > Duration::from_secs(3650 * 86_400) {
        return Err(format!("{text:?} is longer than 10 years"));
    }
    Ok(d)
}

/// [`parse_duration`], where a bare number is seconds (for flags that took seconds first).
pub(crate) fn parse_seconds_or_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) => parse_duration(&format!("{secs}s")),
        Err(_) => parse_duration(text),
    }
}

/// A verify verdict other than ok, carried to [`exit`] for its status (3 incomplete,
/// 4 corrupt; see `streamseal verify --help`).
#[derive(Debug)]
pub(crate) struct StatusExit(Status, String);

impl std::fmt::Display for StatusExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for StatusExit {}

/// `Ok` for an ok verdict, else the error that exits with the verdict's status.
pub(crate) fn verdict(report: &VerifyReport, what: &str) -> Result<()> {
    let open = report
        .findings
        .iter()
        .filter(|f| f.kind != Kind::Acknowledged)
        .count();
    let state = match report.status {
        Status::Ok => return Ok(()),
        Status::Incomplete => format!("INCOMPLETE: {open} open finding(s)"),
        Status::Corrupt => format!("CORRUPT: {open} finding(s)"),
    };
    Err(StatusExit(
        report.status,
        format!(
            "{what}: snapshot {} of {} is {state} (exit status {})",
            report.snapshot_id,
            report.table,
            report.status.exit_code()
        ),
    )
    .into())
}

/// The process's exit status for a command's result; errors are printed on one line.
pub(crate) fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<StatusExit>() {
                Some(s) => ExitCode::from(s.0.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("11000d").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_seconds_or_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(
            parse_seconds_or_duration("2m"),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(duration(Duration::from_millis(5_400_250)), "1h 30m");
        assert_eq!(duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(size(1536), "1.5 KiB");
    }

    #[test]
    fn progress_lines_say_stage_count_and_time_left() {
        let p = Progress::default();
        p.stage("reading changes", 200);
        p.add(50);
        p.add_bytes(3 << 20);
        let line = describe(&p, Duration::from_secs(10));
        assert_eq!(
            line,
            "reading changes 50/200 (25%), 3.0 MiB, about 30s left"
        );
    }
}
