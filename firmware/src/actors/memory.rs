//! The memory actor: STORE puts the expression's value under its key in the execution
//! memory (L1) and gives it; LOAD gives the stored value, or the default (`null` without
//! one).

use embassy_sync::channel::Channel;

use super::{Mailbox, REPLIES};
use crate::owned::parse_json;
use crate::state;

/// A STORE or a LOAD.
pub(crate) enum Job {
    Store {
        key: &'static str,
        code: &'static [u8],
    },
    Load {
        key: &'static str,
        /// The default's JSON literal (empty: none), checked when the program loaded.
        default: &'static str,
    },
}

pub(crate) static JOBS: Mailbox<Job> = Channel::new();

#[embassy_executor::task]
pub(crate) async fn memory() {
    loop {
        let result = match JOBS.receive().await {
            Job::Store { key, code } => state::evaluate(code)
                .and_then(|value| state::store(key, value.clone()).map(|()| value)),
            Job::Load { key, default } => {
                Ok(state::load(key).unwrap_or_else(|| parse_json(default).unwrap_or_default()))
            }
        };
        REPLIES.send(result).await;
    }
}
