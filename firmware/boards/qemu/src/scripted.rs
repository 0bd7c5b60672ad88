//! The QEMU board's hardware: the conformance script's answers, in call order, each after
//! its delay (a timer, so timeouts and the arbiter behave as on a device). A call that does
//! not match the next answer's capability and action, or finds none left, fails
//! `unavailable` and leaves the answer for the next call. An LLM_CALL takes the next
//! answer of capability [`LLM`] and its model, as the node's answer; an EMIT_EVENT is
//! reported on stderr (`event TOPIC KEY name=DIGEST ...`, each field's value by its digest
//! as in the trace), where no node receives it.

use cortex_m_semihosting::{heprint, heprintln};
use embassy_time::Timer;
use eyeflow_firmware::eyeflow_mcu::script::{LLM, Script};
use eyeflow_firmware::eyeflow_mcu::trace::ErrorClass;
use eyeflow_firmware::hardware::{Call, Emitted, Hardware, LlmCall};
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

    /// The next answer, if it is for `capability` and `action`, after its delay.
    async fn answer(&mut self, capability: &str, action: &str) -> Result<Owned, ErrorClass> {
        let answer = self
            .script
            .answers()
            .nth(self.next)
            .filter(|a| a.capability == capability && a.action == action)
            .ok_or(ErrorClass::Unavailable)?;
        self.next += 1;
        Timer::after_millis(u64::from(answer.delay_ms)).await;
        // Script strings are at most MAX_STR bytes (checked when it was parsed).
        answer.result.map(|v| Owned::of(v).unwrap_or_default())
    }
}

impl Hardware for Scripted {
    async fn call(&mut self, call: &Call<'_>) -> Result<Owned, ErrorClass> {
        self.answer(call.capability, call.action).await
    }

    async fn llm(&mut self, call: &LlmCall<'_>) -> Result<Owned, ErrorClass> {
        self.answer(LLM, call.model).await
    }

    async fn emit(&mut self, event: &Emitted<'_>) -> Result<(), ErrorClass> {
        heprint!("event {} {}", event.topic, event.key);
        // Each value by its digest, as the trace shows values (no float formatting in flash).
        for (name, value) in event.fields {
            heprint!(" {}={}", name, value.digest());
        }
        heprintln!("");
        Ok(())
    }
}
