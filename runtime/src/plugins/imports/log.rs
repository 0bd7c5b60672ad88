//! `eyeflow:plugin/log`: a plugin's log lines as tracing events, scrubbed of the secrets it
//! read, cut at [`LOG_MAX`] bytes, within its per-call and per-second quotas.

use std::sync::Arc;

use super::super::bindings::eyeflow::plugin::log::{Host, Level};
use super::{CallState, Services};
use eyeflow_actors::sync::Locked;

/// Longest log line kept.
const LOG_MAX: usize = 4096;

/// Log bytes of one plugin in the current second.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LogWindow {
    second: u64,
    bytes: usize,
    dropped: u64,
    /// Every byte dropped since the start.
    total_dropped: u64,
}

impl Services {
    /// Takes `bytes` of `plugin`'s log budget for this second; false when it is spent (the
    /// line is then dropped and counted).
    fn log_budget(&self, plugin: &Arc<str>, bytes: usize) -> bool {
        let second = crate::now_ms() / 1000;
        let mut usage = self.log_usage.locked();
        let window = usage.entry(plugin.clone()).or_default();
        if window.second != second {
            if window.dropped > 0 {
                tracing::warn!(
                    plugin = &**plugin,
                    "{} log bytes dropped in the last second (over {} per second)",
                    window.dropped,
                    self.quotas.log_bytes_per_second
                );
            }
            *window = LogWindow {
                second,
                total_dropped: window.total_dropped,
                ..LogWindow::default()
            };
        }
        if window.bytes + bytes > self.quotas.log_bytes_per_second {
            window.dropped += bytes as u64;
            window.total_dropped += bytes as u64;
            return false;
        }
        window.bytes += bytes;
        true
    }

    /// Counts `bytes` of `plugin`'s log dropped for its per-call budget.
    fn log_dropped(&self, plugin: &Arc<str>, bytes: usize) {
        let mut usage = self.log_usage.locked();
        usage.entry(plugin.clone()).or_default().total_dropped += bytes as u64;
    }

    /// Log bytes of `plugin` dropped since the start, for its quotas.
    pub(crate) fn log_bytes_dropped(&self, plugin: &str) -> u64 {
        self.log_usage
            .locked()
            .get(plugin)
            .map_or(0, |window| window.total_dropped)
    }
}

impl Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let quotas = self.services.quotas;
        let bytes = message.len().min(LOG_MAX);
        if self.log_bytes + bytes > quotas.log_bytes_per_call {
            self.services.log_dropped(&self.plugin_id, bytes);
            return;
        }
        if !self.services.log_budget(&self.plugin_id, bytes) {
            return;
        }
        self.log_bytes += bytes;
        let mut message = message;
        self.scrubber.scrub_string(&mut message);
        if message.len() > LOG_MAX {
            let mut cut = LOG_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.label;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
