//! The QEMU board's hardware: the conformance script's answers, in call order, each after
//! its delay (a timer, so timeouts and the arbiter behave as on a device). A call that does
//! not match the next answer's capability and action, or finds none left, fails
//! `unavailable` and leaves the answer for the next call.

use embassy_time::Timer;
use eyeflow_firmware::eyeflow_mcu::script::Script;
use eyeflow_firmware::eyeflow_mcu::trace::ErrorClass;
use eyeflow_firmware::hardware::{Call, Hardware};
use eyeflow_firmware::owned::Owned;

/// The script's hardware.
pub(crate) struct Scripted {
    script: Script<'static>,
    next: usize,
}

impl Scripted {
    pub(crate) fn new(script: Script<'static>) -> Self {
        Self { script, next: 0 }
    }
}

impl Hardware for Scripted {
    async fn call(&mut self, call: &Call<'_>) -> Result<Owned, ErrorClass> {
        let answer = self
            .script
            .answers()
            .nth(self.next)
            .filter(|a| a.capability == call.capability && a.action == call.action)
            .ok_or(ErrorClass::Unavailable)?;
        self.next += 1;
        Timer::after_millis(u64::from(answer.delay_ms)).await;
        // Script strings are at most MAX_STR bytes (checked when it was parsed).
        answer.result.map(|v| Owned::of(v).unwrap_or_default())
    }
}
