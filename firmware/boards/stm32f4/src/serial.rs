//! USART2 (TX on PA2, RX on PA3, 115200 8N1) as the gateway's [`Port`]: received bytes
//! land in a ring by interrupt, so that none is lost between the receiver's polls; sends
//! wait for room in the transmit ring.

use core::cell::RefCell;

use embassy_stm32::usart::{BufferedUartRx, BufferedUartTx};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::ThreadModeRawMutex;
use embedded_io::{Read, Write};
use embedded_io_async::ReadReady;
use eyeflow_firmware::gateway::Port;

/// The serial port: its two halves, each used from the gateway's tasks (thread mode).
pub(crate) struct Serial {
    tx: Mutex<ThreadModeRawMutex, RefCell<BufferedUartTx<'static>>>,
    rx: Mutex<ThreadModeRawMutex, RefCell<BufferedUartRx<'static>>>,
}

impl Serial {
    pub(crate) fn new(tx: BufferedUartTx<'static>, rx: BufferedUartRx<'static>) -> Self {
        Self {
            tx: Mutex::new(RefCell::new(tx)),
            rx: Mutex::new(RefCell::new(rx)),
        }
    }
}

impl Port for Serial {
    /// A frame that cannot go out is lost as a frame on a broken line is: the node's
    /// heartbeat notices.
    fn write(&self, bytes: &[u8]) {
        self.tx.lock(|tx| {
            let _ = tx.borrow_mut().write_all(bytes);
        })
    }

    fn read(&self) -> Option<u8> {
        self.rx.lock(|rx| {
            let mut rx = rx.borrow_mut();
            if !rx.read_ready().unwrap_or(false) {
                return None;
            }
            let mut byte = [0u8];
            matches!(rx.read(&mut byte), Ok(1)).then_some(byte[0])
        })
    }
}
