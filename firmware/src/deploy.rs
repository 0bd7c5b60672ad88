//! A DEPLOY frame received straight into the staging slot, its CRC computed as the bytes
//! arrive: the frame buffer then needs to hold only the other frames a device takes (a
//! RUN's event), not a whole program. It watches the same bytes as the gateway's
//! [`Decoder`](eyeflow_mcu::frame::Decoder), which drops a DEPLOY larger than its buffer
//! as oversize (and finds the frames after it, or inside a corrupt one, as before).

use eyeflow_mcu::frame::{HEADER, MAX_PAYLOAD, SYNC, crc32_update, kind};

use crate::gateway::Slots;

/// Where the stream is.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Looking for a DEPLOY's header: the last [`HEADER`] bytes received.
    Header([u8; HEADER]),
    /// `at` bytes of a `len`-byte payload staged, CRC register `crc`.
    Payload { len: usize, at: usize, crc: u32 },
    /// The payload staged; `got` bytes of the CRC received so far, in `value`.
    Trailer {
        len: usize,
        crc: u32,
        got: u8,
        value: u32,
    },
}

/// The DEPLOY stream of a gateway's receiver.
#[derive(Debug)]
pub(crate) struct DeployStream {
    at: At,
}

impl DeployStream {
    /// A stream looking for a DEPLOY.
    pub(crate) const fn new() -> Self {
        Self {
            at: At::Header([0; HEADER]),
        }
    }

    /// The line went quiet: a partial DEPLOY will not complete.
    pub(crate) fn idle(&mut self) {
        *self = Self::new();
    }

    /// Takes one received byte (a byte of a DEPLOY's payload goes to the staging slot of
    /// `slots`); the payload's length once a DEPLOY whose CRC matches is complete.
    pub(crate) fn push(&mut self, byte: u8, slots: &impl Slots) -> Option<usize> {
        match &mut self.at {
            At::Header(window) => {
                window.copy_within(1.., 0);
                window[HEADER - 1] = byte;
                let len = usize::from(u16::from_be_bytes([window[4], window[5]]));
                if window[..2] == SYNC && window[2] == kind::DEPLOY && len <= MAX_PAYLOAD {
                    let crc = crc32_update(!0, &window[2..]);
                    self.at = if len == 0 {
                        At::Trailer {
                            len,
                            crc,
                            got: 0,
                            value: 0,
                        }
                    } else {
                        At::Payload { len, at: 0, crc }
                    };
                }
                None
            }
            At::Payload { len, at, crc } => {
                slots.stage_byte(*at, byte);
                *crc = crc32_update(*crc, &[byte]);
                *at += 1;
                if *at == *len {
                    self.at = At::Trailer {
                        len: *len,
                        crc: *crc,
                        got: 0,
                        value: 0,
                    };
                }
                None
            }
            At::Trailer {
                len,
                crc,
                got,
                value,
            } => {
                *value = (*value << 8) | u32::from(byte);
                *got += 1;
                if *got < 4 {
                    return None;
                }
                let done = (*value == !*crc).then_some(*len);
                *self = Self::new();
                done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::{AtomicU8, Ordering};

    use eyeflow_mcu::frame::write_frame;

    use super::*;

    struct Staging([AtomicU8; 64]);

    impl Slots for Staging {
        fn active(&self) -> Option<&'static [u8]> {
            None
        }
        fn forget(&self) {}
        fn ready(&self) {}
        fn stage_byte(&self, at: usize, byte: u8) {
            self.0[at].store(byte, Ordering::Relaxed);
        }
        fn staged(&self, _len: usize) -> &'static [u8] {
            &[]
        }
        fn commit(&self) {}
        fn take_loaded_flag(&self) -> bool {
            false
        }
        fn event(&self) -> &'static [u8] {
            &[]
        }
        fn set_event(&self, _payload: &[u8]) {}
        fn restart(&self) -> ! {
            unreachable!()
        }
    }

    fn staging() -> Staging {
        Staging([const { AtomicU8::new(0) }; 64])
    }

    /// Pushes `bytes`; the lengths of the DEPLOYs completed, in order.
    fn feed(
        stream: &mut DeployStream,
        slots: &Staging,
        bytes: &[u8],
        done: &mut [usize; 4],
    ) -> usize {
        let mut n = 0;
        for &b in bytes {
            if let Some(len) = stream.push(b, slots) {
                done[n] = len;
                n += 1;
            }
        }
        n
    }

    fn frame(kind: u8, payload: &[u8]) -> ([u8; 64], usize) {
        let mut out = [0u8; 64];
        let len = write_frame(&mut out, kind, 3, payload).expect("fits");
        (out, len)
    }

    #[test]
    fn a_deploy_is_staged_as_it_arrives() {
        let slots = staging();
        let mut stream = DeployStream::new();
        let (deploy, n) = frame(kind::DEPLOY, b"program bytes");
        let (run, m) = frame(kind::RUN, &[0]);
        let mut done = [0; 4];
        assert_eq!(feed(&mut stream, &slots, &[0xEF, 0x00, 0x5A], &mut done), 0);
        assert_eq!(feed(&mut stream, &slots, &run[..m], &mut done), 0);
        assert_eq!(feed(&mut stream, &slots, &deploy[..n], &mut done), 1);
        assert_eq!(done[0], 13);
        let staged: [u8; 13] = core::array::from_fn(|i| slots.0[i].load(Ordering::Relaxed));
        assert_eq!(&staged, b"program bytes");
    }

    #[test]
    fn a_corrupt_or_cut_deploy_is_not() {
        let slots = staging();
        let mut stream = DeployStream::new();
        let (deploy, n) = frame(kind::DEPLOY, b"program bytes");
        let mut bad = deploy;
        bad[8] ^= 1;
        let mut done = [0; 4];
        assert_eq!(feed(&mut stream, &slots, &bad[..n], &mut done), 0);
        assert_eq!(feed(&mut stream, &slots, &deploy[..n - 3], &mut done), 0);
        stream.idle();
        assert_eq!(feed(&mut stream, &slots, &deploy[..n], &mut done), 1);
        assert_eq!(done[0], 13);
        let (empty, e) = frame(kind::DEPLOY, b"");
        assert_eq!(feed(&mut stream, &slots, &empty[..e], &mut done), 1);
        assert_eq!(done[0], 0);
    }
}
