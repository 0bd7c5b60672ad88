//! The eyeflow firmware for an STM32F405 board: the serial gateway to an eyeflow node on
//! USART2 ([`serial`]; TX PA2, RX PA3, 115200 8N1), its program slots in flash sectors 10
//! and 11 ([`memory`]), and the board's hardware behind the firmware's traits: `gpio` pin
//! 0 = PA5 (output), pin 1 = PC13 (input); `adc` channel 0 = PA0 on ADC1 (raw 12-bit); no
//! I²C, SPI or UART capability yet. The device's id (its HELLO) is `EYEFLOW_DEVICE_ID` at
//! build time, `stm32-1` without it. LLM_CALLs and EMIT_EVENTs go to the node.
#![no_std]
#![no_main]

mod memory;
mod serial;

// The firmware's memory routines instead of compiler-builtins' larger ones.
use eyeflow_mem as _;

use embassy_executor::Spawner;
use embassy_stm32::adc::{Adc, SampleTime};
use embassy_stm32::flash::Flash;
use embassy_stm32::gpio::{Input, Level, Output, Pull, Speed};
use embassy_stm32::peripherals::{ADC1, PA0, USART2};
use embassy_stm32::usart::{self, BufferedUart};
use embassy_stm32::{Peri, bind_interrupts};
use embassy_time::Duration;
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::frame::{Capability as Declared, HEADER, TRAILER};
use eyeflow_firmware::eyeflow_mcu::trace::ErrorClass;
use eyeflow_firmware::gateway::{Gateway, Linked};
use eyeflow_firmware::hardware::{Absent, Devices, Gpio};
use eyeflow_firmware::slots::FlashSlots;
use eyeflow_firmware::{actors, conductor};
use static_cell::StaticCell;

bind_interrupts!(struct Irqs {
    USART2 => usart::BufferedInterruptHandler<USART2>;
});

const CAPABILITIES: &[Capability] = &[
    Capability {
        id: "gpio",
        version: (1, 0, 0),
    },
    Capability {
        id: "adc",
        version: (1, 0, 0),
    },
];

/// What HELLO declares: [`CAPABILITIES`].
const DECLARED: &[Declared<'static>] = &[
    Declared {
        id: "gpio",
        version: "1.0.0",
    },
    Declared {
        id: "adc",
        version: "1.0.0",
    },
];

/// The device's id.
const DEVICE: &str = match option_env!("EYEFLOW_DEVICE_ID") {
    Some(id) => id,
    None => "stm32-1",
};

/// The largest frame the receiver buffers: a RUN whose event fills the event area (a
/// DEPLOY goes straight to its flash slot).
const FRAME: usize = HEADER + memory::EVENT_MAX + TRAILER;

type Board = Devices<Pins, Analog, Absent, Absent, Absent>;
type Link = Gateway<serial::Serial, FlashSlots<memory::Stm32Memory>>;

static GATEWAY: StaticCell<Link> = StaticCell::new();
static BUFFER: StaticCell<[u8; FRAME]> = StaticCell::new();
static TX: StaticCell<[u8; 512]> = StaticCell::new();
static RX: StaticCell<[u8; 2048]> = StaticCell::new();

/// The board's pins: `gpio` pin 0 is PA5 (an output: the valve), pin 1 is PC13 (an
/// input: the button).
struct Pins {
    valve: Output<'static>,
    button: Input<'static>,
}

impl Gpio for Pins {
    fn write(&mut self, pin: u8, high: bool) -> Result<(), ErrorClass> {
        match pin {
            0 => {
                self.valve.set_level(Level::from(high));
                Ok(())
            }
            _ => Err(ErrorClass::InvalidInput),
        }
    }

    fn read(&mut self, pin: u8) -> Result<bool, ErrorClass> {
        match pin {
            0 => Ok(self.valve.is_set_high()),
            1 => Ok(self.button.is_high()),
            _ => Err(ErrorClass::InvalidInput),
        }
    }
}

/// ADC1; `adc` channel 0 is PA0.
struct Analog {
    adc: Adc<'static, ADC1>,
    sensor: Peri<'static, PA0>,
}

impl eyeflow_firmware::hardware::Adc for Analog {
    async fn read(&mut self, channel: u8) -> Result<u16, ErrorClass> {
        match channel {
            0 => Ok(self
                .adc
                .blocking_read(&mut self.sensor, SampleTime::CYCLES144)),
            _ => Err(ErrorClass::InvalidInput),
        }
    }
}

#[embassy_executor::task]
async fn hardware(linked: Linked<serial::Serial, FlashSlots<memory::Stm32Memory>, Board>) {
    actors::hardware::serve(linked).await
}

#[embassy_executor::task]
async fn heartbeat(gateway: &'static Link) {
    gateway.heartbeat().await
}

#[embassy_executor::task]
async fn runner(gateway: &'static Link, loaded: bool) {
    gateway.run(loaded).await
}

#[embassy_executor::task]
async fn receiver(gateway: &'static Link, buffer: &'static mut [u8; FRAME]) {
    gateway.receive(&mut buffer[..]).await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(Default::default());
    let mut config = usart::Config::default();
    config.baudrate = 115_200;
    let Ok(uart) = BufferedUart::new(
        p.USART2,
        p.PA3,
        p.PA2,
        TX.init([0; 512]),
        RX.init([0; 2048]),
        Irqs,
        config,
    ) else {
        return;
    };
    let (tx, rx) = uart.split();
    let gateway: &'static Link = GATEWAY.init(Gateway::new(
        serial::Serial::new(tx, rx),
        FlashSlots::new(memory::Stm32Memory::new(Flash::new_blocking(p.FLASH))),
        DEVICE,
        env!("CARGO_PKG_VERSION"),
        CAPABILITIES,
        DECLARED,
        Duration::from_millis(500),
    ));
    let loaded = gateway.start();
    let board = Board {
        gpio: Pins {
            valve: Output::new(p.PA5, Level::Low, Speed::Low),
            button: Input::new(p.PC13, Pull::None),
        },
        adc: Analog {
            adc: Adc::new(p.ADC1),
            sensor: p.PA0,
        },
        i2c: Absent,
        spi: Absent,
        uart: Absent,
    };
    // Spawned once each: no pool is ever full.
    let _ = spawn(spawner, gateway, loaded, board);
}

/// Starts the actors and the gateway's tasks.
fn spawn(
    spawner: Spawner,
    gateway: &'static Link,
    loaded: bool,
    board: Board,
) -> Result<(), embassy_executor::SpawnError> {
    conductor::spawn_actors(spawner)?;
    spawner.spawn(hardware(gateway.linked(board))?);
    spawner.spawn(heartbeat(gateway)?);
    spawner.spawn(runner(gateway, loaded)?);
    spawner.spawn(receiver(gateway, BUFFER.init([0; FRAME]))?);
    Ok(())
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    cortex_m::asm::udf()
}
