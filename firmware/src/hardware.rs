//! The device's hardware as the conductor reaches it: one [`Hardware`] call per
//! CALL_ACTION / LOAD_RESOURCE, named by capability, action and evaluated parameters, and
//! the board's link to a node for LLM_CALL ([`Hardware::llm`]) and EMIT_EVENT
//! ([`Hardware::emit`]), which the serial gateway provides (`crate::gateway::Linked`).
//! [`Devices`] is the usual implementation: the capabilities `gpio`, `adc`, `i2c`, `spi`
//! and `uart` routed to one small trait per peripheral kind, which a board crate
//! implements over its HAL (boards/stm32f4: GPIO and ADC through embassy-stm32; the rest
//! [`Absent`]). The QEMU board implements [`Hardware`] itself, from a conformance script.

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

/// An LLM_CALL for the node to serve.
#[derive(Debug, Clone, Copy)]
pub struct LlmCall<'a> {
    /// The LLM_CALL's instruction id.
    pub instruction: &'a str,
    /// Its model.
    pub model: &'a str,
    /// The frozen context: each slot's value, by slot name.
    pub context: &'a [(&'a str, Value<'a>)],
}

/// An event an EMIT_EVENT sends.
#[derive(Debug, Clone, Copy)]
pub struct Emitted<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its key (empty: none).
    pub key: &'a str,
    /// Its fields, by name.
    pub fields: &'a [(&'a str, Value<'a>)],
}

/// The board's peripherals behind the capabilities it declares, and its link to a node.
///
/// The executor is single-threaded, so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Hardware {
    /// Performs `call`; its value, or the error class of its failure (a capability or
    /// action the board does not have: `unavailable`; bad parameters: `invalid_input`).
    async fn call(&mut self, call: &Call<'_>) -> Result<Owned, ErrorClass>;

    /// Has the node answer `call` (the instruction's timeout bounds it); the validated
    /// answer, or why there is none. Without a link to a node: `unavailable`.
    async fn llm(&mut self, call: &LlmCall<'_>) -> Result<Owned, ErrorClass> {
        let _ = call;
        Err(ErrorClass::Unavailable)
    }

    /// Sends `event` to the node. Without a link to a node: `unavailable`.
    async fn emit(&mut self, event: &Emitted<'_>) -> Result<(), ErrorClass> {
        let _ = event;
        Err(ErrorClass::Unavailable)
    }
}

/// The general-purpose pins: `gpio` `write` (params `pin`, `value` boolean) and `read`
/// (param `pin`; gives the level).
pub trait Gpio {
    /// Drives output `pin` high or low.
    fn write(&mut self, pin: u8, high: bool) -> Result<(), ErrorClass>;
    /// The level of input `pin`.
    fn read(&mut self, pin: u8) -> Result<bool, ErrorClass>;
}

/// The analog inputs: `adc` `read` (param `channel`; gives the raw sample).
#[allow(async_fn_in_trait)]
pub trait Adc {
    /// One sample of `channel`.
    async fn read(&mut self, channel: u8) -> Result<u16, ErrorClass>;
}

/// An I²C bus: `i2c` `read` (params `address`, `register`; gives the byte) and `write`
/// (params `address`, `register`, `value`).
#[allow(async_fn_in_trait)]
pub trait I2c {
    /// The byte in `register` of the device at `address`.
    async fn read(&mut self, address: u8, register: u8) -> Result<u8, ErrorClass>;
    /// Writes `value` to `register` of the device at `address`.
    async fn write(&mut self, address: u8, register: u8, value: u8) -> Result<(), ErrorClass>;
}

/// An SPI device: `spi` `transfer` (param `value`; gives the byte clocked in).
#[allow(async_fn_in_trait)]
pub trait Spi {
    /// Exchanges one byte.
    async fn transfer(&mut self, value: u8) -> Result<u8, ErrorClass>;
}

/// A serial port: `uart` `write` (param `value`, a string or a byte).
#[allow(async_fn_in_trait)]
pub trait Uart {
    /// Sends `bytes`.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ErrorClass>;
}

/// A peripheral the board does not have: every call fails `unavailable`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Absent;

impl Gpio for Absent {
    fn write(&mut self, _: u8, _: bool) -> Result<(), ErrorClass> {
        Err(ErrorClass::Unavailable)
    }
    fn read(&mut self, _: u8) -> Result<bool, ErrorClass> {
        Err(ErrorClass::Unavailable)
    }
}

impl Adc for Absent {
    async fn read(&mut self, _: u8) -> Result<u16, ErrorClass> {
        Err(ErrorClass::Unavailable)
    }
}

impl I2c for Absent {
    async fn read(&mut self, _: u8, _: u8) -> Result<u8, ErrorClass> {
        Err(ErrorClass::Unavailable)
    }
    async fn write(&mut self, _: u8, _: u8, _: u8) -> Result<(), ErrorClass> {
        Err(ErrorClass::Unavailable)
    }
}

impl Spi for Absent {
    async fn transfer(&mut self, _: u8) -> Result<u8, ErrorClass> {
        Err(ErrorClass::Unavailable)
    }
}

impl Uart for Absent {
    async fn write(&mut self, _: &[u8]) -> Result<(), ErrorClass> {
        Err(ErrorClass::Unavailable)
    }
}

/// A board's peripherals as its [`Hardware`]: the capabilities `gpio`, `adc`, `i2c`, `spi`
/// and `uart` routed to the traits above (a missing or out-of-range param:
/// `invalid_input`; another capability or action: `unavailable`).
#[derive(Debug, Default)]
pub struct Devices<G, A, I, S, U> {
    /// `gpio`.
    pub gpio: G,
    /// `adc`.
    pub adc: A,
    /// `i2c`.
    pub i2c: I,
    /// `spi`.
    pub spi: S,
    /// `uart`.
    pub uart: U,
}

/// Param `name` as a byte (an integral number 0..=255).
fn byte(call: &Call<'_>, name: &str) -> Result<u8, ErrorClass> {
    match call.param(name) {
        Some(Value::Num(n)) if (0.0..=255.0).contains(&n) && f64::from(n as u8) == n => Ok(n as u8),
        _ => Err(ErrorClass::InvalidInput),
    }
}

impl<G: Gpio, A: Adc, I: I2c, S: Spi, U: Uart> Hardware for Devices<G, A, I, S, U> {
    async fn call(&mut self, call: &Call<'_>) -> Result<Owned, ErrorClass> {
        match (call.capability, call.action) {
            ("gpio", "write") => {
                let Some(Value::Bool(high)) = call.param("value") else {
                    return Err(ErrorClass::InvalidInput);
                };
                self.gpio.write(byte(call, "pin")?, high)?;
                Ok(Owned::Bool(high))
            }
            ("gpio", "read") => self.gpio.read(byte(call, "pin")?).map(Owned::Bool),
            ("adc", "read") => {
                let sample = self.adc.read(byte(call, "channel")?).await?;
                Ok(Owned::Num(f64::from(sample)))
            }
            ("i2c", "read") => {
                let value = self
                    .i2c
                    .read(byte(call, "address")?, byte(call, "register")?)
                    .await?;
                Ok(Owned::Num(f64::from(value)))
            }
            ("i2c", "write") => {
                let value = byte(call, "value")?;
                self.i2c
                    .write(byte(call, "address")?, byte(call, "register")?, value)
                    .await?;
                Ok(Owned::Num(f64::from(value)))
            }
            ("spi", "transfer") => {
                let value = self.spi.transfer(byte(call, "value")?).await?;
                Ok(Owned::Num(f64::from(value)))
            }
            ("uart", "write") => {
                match call.param("value") {
                    Some(Value::Str(text)) => self.uart.write(text.as_bytes()).await?,
                    Some(_) => self.uart.write(&[byte(call, "value")?]).await?,
                    None => return Err(ErrorClass::InvalidInput),
                }
                Ok(Owned::Bool(true))
            }
            _ => Err(ErrorClass::Unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use embassy_futures::block_on;

    use super::*;

    #[derive(Default)]
    struct Pins([bool; 2]);

    impl Gpio for Pins {
        fn write(&mut self, pin: u8, high: bool) -> Result<(), ErrorClass> {
            *self
                .0
                .get_mut(usize::from(pin))
                .ok_or(ErrorClass::InvalidInput)? = high;
            Ok(())
        }
        fn read(&mut self, pin: u8) -> Result<bool, ErrorClass> {
            self.0
                .get(usize::from(pin))
                .copied()
                .ok_or(ErrorClass::InvalidInput)
        }
    }

    fn call<'a>(
        capability: &'a str,
        action: &'a str,
        params: &'a [(&'a str, Value<'a>)],
    ) -> Call<'a> {
        Call {
            capability,
            action,
            params,
        }
    }

    #[test]
    fn devices_route_capabilities_to_their_peripherals() {
        let mut board: Devices<Pins, Absent, Absent, Absent, Absent> = Devices::default();
        let on = [("pin", Value::Num(1.0)), ("value", Value::Bool(true))];
        assert_eq!(
            block_on(board.call(&call("gpio", "write", &on))),
            Ok(Owned::Bool(true))
        );
        let pin = [("pin", Value::Num(1.0))];
        assert_eq!(
            block_on(board.call(&call("gpio", "read", &pin))),
            Ok(Owned::Bool(true))
        );
        let bad = [("pin", Value::Num(1.5))];
        assert_eq!(
            block_on(board.call(&call("gpio", "read", &bad))),
            Err(ErrorClass::InvalidInput)
        );
        let channel = [("channel", Value::Num(0.0))];
        assert_eq!(
            block_on(board.call(&call("adc", "read", &channel))),
            Err(ErrorClass::Unavailable)
        );
        assert_eq!(
            block_on(board.call(&call("valve", "open", &[]))),
            Err(ErrorClass::Unavailable)
        );
    }
}
