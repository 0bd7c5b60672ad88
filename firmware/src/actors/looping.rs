//! The loop actor: before each round of a LOOP, says whether it runs — not past
//! `max_iterations`, not past the loop's timeout (`timeout`), and while its condition
//! holds (`invalid_input` if it is not a boolean).

use embassy_sync::channel::Channel;
use embassy_time::Instant;
use eyeflow_mcu::trace::ErrorClass;

use super::{Mailbox, REPLIES};
use crate::owned::Owned;
use crate::state::evaluate;

/// Whether round `round` (from 0) runs.
pub(crate) struct Job {
    pub(crate) condition: &'static [u8],
    pub(crate) round: u32,
    pub(crate) max_iterations: u32,
    pub(crate) started: Instant,
    pub(crate) timeout_ms: Option<u32>,
}

pub(crate) static JOBS: Mailbox<Job> = Channel::new();

fn decide(job: &Job) -> Result<Owned, ErrorClass> {
    if job.round >= job.max_iterations {
        return Ok(Owned::Bool(false));
    }
    if let Some(limit) = job.timeout_ms
        && job.started.elapsed().as_millis() > u64::from(limit)
    {
        return Err(ErrorClass::Timeout);
    }
    if job.condition.is_empty() {
        return Ok(Owned::Bool(true));
    }
    match evaluate(job.condition)? {
        Owned::Bool(b) => Ok(Owned::Bool(b)),
        _ => Err(ErrorClass::InvalidInput),
    }
}

#[embassy_executor::task]
pub(crate) async fn looping() {
    loop {
        let job = JOBS.receive().await;
        REPLIES.send(decide(&job)).await;
    }
}
