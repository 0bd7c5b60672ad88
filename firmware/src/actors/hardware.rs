//! The hardware actor: evaluates a call's parameters, holds the arbiter's permit for its
//! capability, and calls the board's [`Hardware`] within the instruction's timeout
//! (`timeout` when it runs out). The board spawns it with its own [`Hardware`] (an
//! Embassy task cannot be generic): `serve(board_hardware).await` in a task of its own.

use embassy_sync::channel::Channel;
use embassy_time::{Duration, with_timeout};
use eyeflow_mcu::Value;
use eyeflow_mcu::limits::MAX_PARAMS;
use eyeflow_mcu::trace::ErrorClass;
use heapless::Vec;

use super::{Mailbox, REPLIES, arbiter};
use crate::hardware::{Call, Hardware};
use crate::owned::Owned;
use crate::state::evaluate;

/// One CALL_ACTION or LOAD_RESOURCE.
pub(crate) struct Job {
    pub(crate) capability: &'static str,
    pub(crate) action: &'static str,
    pub(crate) params: Vec<(&'static str, &'static [u8]), MAX_PARAMS>,
    pub(crate) timeout_ms: u32,
    pub(crate) priority: u8,
}

pub(crate) static JOBS: Mailbox<Job> = Channel::new();

async fn run(hardware: &mut impl Hardware, job: &Job) -> Result<Owned, ErrorClass> {
    let mut values: Vec<(&str, Owned), MAX_PARAMS> = Vec::new();
    for (name, code) in &job.params {
        // Within capacity: the job holds at most as many params.
        let _ = values.push((name, evaluate(code)?));
    }
    let params: Vec<(&str, Value<'_>), MAX_PARAMS> =
        values.iter().map(|(n, v)| (*n, v.get())).collect();
    let call = Call {
        capability: job.capability,
        action: job.action,
        params: &params,
    };
    arbiter::acquire(job.capability, job.priority).await;
    let limit = Duration::from_millis(u64::from(job.timeout_ms));
    let result = with_timeout(limit, hardware.call(&call))
        .await
        .unwrap_or(Err(ErrorClass::Timeout));
    arbiter::release(job.capability).await;
    result
}

/// Serves the hardware jobs with the board's `hardware`, forever.
pub async fn serve(mut hardware: impl Hardware) -> ! {
    loop {
        let job = JOBS.receive().await;
        let result = run(&mut hardware, &job).await;
        REPLIES.send(result).await;
    }
}
