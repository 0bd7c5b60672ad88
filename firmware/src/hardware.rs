//! The device's hardware as the conductor reaches it: one [`Hardware`] call per
//! CALL_ACTION / LOAD_RESOURCE, named by capability (`gpio`, `adc`, `i2c`, `spi`,
//! `uart`, …), action and evaluated parameters. A board crate implements it over its
//! peripherals (boards/stm32f4: GPIO and ADC through embassy-stm32); the QEMU board
//! answers from a conformance script.

use eyeflow_mcu::Value;
use eyeflow_mcu::trace::ErrorClass;

use crate::owned::Owned;

/// One hardware call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The capability (`gpio`, `adc`, …).
    pub capability: &'a str,
    /// The action (CALL_ACTION) or the resource read (LOAD_RESOURCE).
    pub action: &'a str,
    /// The parameters, evaluated, sorted by name.
    pub params: &'a [(&'a str, Value<'a>)],
}

impl<'a> Call<'a> {
    /// The parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<Value<'a>> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// The board's peripherals behind the capabilities it declares.
///
/// The executor is single-threaded, so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Hardware {
    /// Performs `call`; its value, or the error class of its failure (a capability or
    /// action the board does not have: `unavailable`; bad parameters: `invalid_input`).
    async fn call(&mut self, call: &Call<'_>) -> Result<Owned, ErrorClass>;
}
