//! The evaluator actors: one task per kind — EVAL (the expression's value), BRANCH (the
//! condition, which must be a boolean), RETURN (the value, `null` without one).

use embassy_sync::channel::Channel;
use eyeflow_mcu::trace::ErrorClass;

use super::{Mailbox, REPLIES};
use crate::owned::Owned;
use crate::state::evaluate;

/// What an evaluator computes from its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// EVAL.
    Eval,
    /// BRANCH.
    Branch,
    /// RETURN.
    Return,
}

/// A code to evaluate.
pub(crate) struct Job {
    pub(crate) code: &'static [u8],
}

pub(crate) static EVAL: Mailbox<Job> = Channel::new();
pub(crate) static BRANCH: Mailbox<Job> = Channel::new();
pub(crate) static RETURN: Mailbox<Job> = Channel::new();

/// The mailbox of `kind`'s actor.
pub(crate) fn mailbox(kind: Kind) -> &'static Mailbox<Job> {
    match kind {
        Kind::Eval => &EVAL,
        Kind::Branch => &BRANCH,
        Kind::Return => &RETURN,
    }
}

#[embassy_executor::task(pool_size = 3)]
pub(crate) async fn evaluator(kind: Kind) {
    let jobs = mailbox(kind);
    loop {
        let job = jobs.receive().await;
        let result = evaluate(job.code);
        let result = match (kind, result) {
            (Kind::Branch, Ok(Owned::Bool(b))) => Ok(Owned::Bool(b)),
            (Kind::Branch, Ok(_)) => Err(ErrorClass::InvalidInput),
            (_, result) => result,
        };
        REPLIES.send(result).await;
    }
}
