//! The resource arbiter: one holder per capability at a time; a request for a held
//! capability waits, and a release grants it to the most urgent waiter (lowest priority
//! level, then first come).

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;
use heapless::Vec;

/// Capabilities held at once, and requests waiting, at most.
const SLOTS: usize = 8;

pub(crate) enum Msg {
    Acquire {
        capability: &'static str,
        priority: u8,
    },
    Release {
        capability: &'static str,
    },
}

pub(crate) static REQUESTS: Channel<CriticalSectionRawMutex, Msg, 2> = Channel::new();
/// The permit of the hardware actor's pending request.
pub(crate) static GRANTED: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// Waits for the permit of `capability`.
pub(crate) async fn acquire(capability: &'static str, priority: u8) {
    REQUESTS
        .send(Msg::Acquire {
            capability,
            priority,
        })
        .await;
    GRANTED.wait().await;
}

/// Gives the permit of `capability` back.
pub(crate) async fn release(capability: &'static str) {
    REQUESTS.send(Msg::Release { capability }).await;
}

#[embassy_executor::task]
pub(crate) async fn arbiter() {
    let mut held: Vec<&'static str, SLOTS> = Vec::new();
    let mut waiting: Vec<(u8, u32, &'static str), SLOTS> = Vec::new();
    let mut arrivals = 0u32;
    loop {
        match REQUESTS.receive().await {
            Msg::Acquire {
                capability,
                priority,
            } => {
                if held.contains(&capability) {
                    arrivals = arrivals.wrapping_add(1);
                    // Full: the request waits for the next release of anything.
                    let _ = waiting.push((priority, arrivals, capability));
                } else if held.push(capability).is_ok() {
                    GRANTED.signal(());
                }
            }
            Msg::Release { capability } => {
                held.retain(|c| *c != capability);
                let next = waiting
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.2 == capability)
                    .min_by_key(|(_, w)| (w.0, w.1))
                    .map(|(i, _)| i);
                if let Some(i) = next {
                    let (_, _, capability) = waiting.swap_remove(i);
                    if held.push(capability).is_ok() {
                        GRANTED.signal(());
                    }
                }
            }
        }
    }
}
