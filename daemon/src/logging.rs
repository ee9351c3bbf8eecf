//! Logging with `tracing`: plain text on a terminal, journald-friendly under systemd.
//!
//! Under systemd (`JOURNAL_STREAM` is set) every line starts with its syslog priority in angle
//! brackets (`<3>` error … `<7>` debug), which journald turns into the entry's priority
//! (`SyslogLevelPrefix=`, on by default), and carries no timestamp or colours (journald adds its
//! own). The level can be changed at run time ([`LogHandle::set_level`], used on SIGHUP);
//! `RUST_LOG`, when set, wins over the configured level.
//!
//! Random bytes are never logged: no code path passes random data to a log macro, and the chip
//! driver's I2C trace (at `trace` level) is off unless asked for.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Changes the log level of the running daemon.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    from_env: bool,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Sets the level (`error` … `trace`); does nothing when `RUST_LOG` decides.
    pub fn set_level(&self, level: &str) {
        if self.from_env {
            return;
        }
        if let Err(e) = self.filter.reload(filter_for(level)) {
            tracing::warn!("cannot change the log level: {e}");
        }
    }
}

fn filter_for(level: &str) -> EnvFilter {
    // Our crates at the configured level; dependencies one step quieter, so `debug` shows
    // lokey's decisions rather than HTTP internals.
    EnvFilter::new(format!("warn,lokey={level},lokeyd={level}"))
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(level: &str) -> LogHandle {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let filter = if from_env {
        EnvFilter::from_default_env()
    } else {
        filter_for(level)
    };
    let (filter, handle) = reload::Layer::new(filter);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter);
    if journald {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(JournaldFormat)
            .with_writer(std::io::stderr);
        let _ = registry.with(layer).try_init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_target(false)
            .with_writer(std::io::stderr);
        let _ = registry.with(layer).try_init();
    }
    LogHandle {
        filter: handle,
        from_env,
    }
}

/// `<priority>message key=value…`, one line per event (sd-daemon(3) priorities).
struct JournaldFormat;

impl<S, N> FormatEvent<S, N> for JournaldFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
