//! The serial gateway's protocol between a node and a device: frames with a checksum,
//! an incremental decoder that resynchronises after any corruption, and the messages.
//!
//! ```text
//! EF 5A | type u8 | seq u8 | length u16be | payload (length bytes) | crc32 u32be
//! ```
//!
//! The CRC is CRC-32 (IEEE, as zlib's `crc32`) over type, seq, length and payload. A
//! frame whose CRC does not match, whose length exceeds what the decoder holds, or bytes
//! that are not a frame are dropped and counted ([`Counters`]); the decoder then looks
//! for the next sync from the byte after the one it had taken for a frame's start, so a
//! false sync inside garbage costs no real frame. Nothing here panics on input.
//!
//! Payloads: a *string* is u8 length + UTF-8 (at most 255 bytes); a *value* is its
//! canonical bytes ([`Value::canonical`]); *fields* are u8 count, then per field a string
//! (the dotted path, without `event.`) and a value, as in a conformance script.
//!
//! | type | message | payload |
//! |---|---|---|
//! | `01` | HELLO (device → node) | string device id, string firmware version, u8 count + per capability string id and string version, then `00` (no program) or `01` + string program id + string version |
//! | `02` | LOADED | string program id, string version |
//! | `03` | REFUSED | string refusal reason (the trace's name: `bad_signature`, …) |
//! | `04` | TRACE | u32be execution number, u16be length + one canonical trace line |
//! | `05` | EVENT | string topic, string key, fields |
//! | `06` | LLM_REQUEST | u32be request id, string program id, string version, string instruction id, fields (the frozen context) |
//! | `07` | PING | empty |
//! | `81` | DEPLOY (node → device) | the signed program file |
//! | `82` | RUN | fields (the event) |
//! | `83` | LLM_ANSWER | u32be request id, then `00` + value or `01` + error class number |
//! | `84` | PONG | empty |

use crate::Error;
use crate::limits::{MAX_EVENT_FIELDS, MAX_PROGRAM_BYTES};
use crate::trace::ErrorClass;
use crate::value::{Value, take};

/// The two bytes every frame starts with.
pub const SYNC: [u8; 2] = [0xEF, 0x5A];
/// Bytes before the payload: sync, type, seq, length.
pub const HEADER: usize = 6;
/// Bytes after the payload: the CRC.
pub const TRAILER: usize = 4;
/// The largest payload of the protocol: a DEPLOY of the largest signed program.
pub const MAX_PAYLOAD: usize = MAX_PROGRAM_BYTES;
/// The largest frame of the protocol.
pub const MAX_FRAME: usize = HEADER + MAX_PAYLOAD + TRAILER;

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`), bit by bit: no table in flash.
pub fn crc32(bytes: &[u8]) -> u32 {
    !crc32_update(!0, bytes)
}

/// The CRC-32 register after `bytes`, from `register` (`!0` at the start; the CRC is the
/// final register inverted): a CRC computed as the bytes arrive.
pub fn crc32_update(register: u32, bytes: &[u8]) -> u32 {
    let mut crc = register;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// Writes a frame of `kind` with `payload` into `out`; returns its length.
pub fn write_frame(out: &mut [u8], kind: u8, seq: u8, payload: &[u8]) -> Result<usize, Error> {
    let total = HEADER + payload.len() + TRAILER;
    let len = u16::try_from(payload.len()).map_err(|_| Error::Frame {
        what: "payload longer than a frame holds",
    })?;
    let frame = out.get_mut(..total).ok_or(Error::Frame {
        what: "output buffer too small for the frame",
    })?;
    frame[..2].copy_from_slice(&SYNC);
    frame[2] = kind;
    frame[3] = seq;
    frame[4..6].copy_from_slice(&len.to_be_bytes());
    frame[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    let crc = crc32(&frame[2..HEADER + payload.len()]);
    frame[HEADER + payload.len()..].copy_from_slice(&crc.to_be_bytes());
    Ok(total)
}

/// What the decoder dropped, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames whose CRC did not match.
    pub crc: u32,
    /// Frames announcing a payload longer than the decoder holds.
    pub oversize: u32,
    /// Runs of bytes that were not the start of a frame.
    pub garbage: u32,
}

impl Counters {
    /// All errors together.
    pub fn total(&self) -> u32 {
        self.crc
            .saturating_add(self.oversize)
            .saturating_add(self.garbage)
    }
}

/// A frame the decoder accepted; borrows the decoder's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message type.
    pub kind: u8,
    /// The sender's sequence number.
    pub seq: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// The incremental decoder: [`Decoder::push`] bytes as they arrive, then take frames with
/// [`Decoder::next_frame`] until it gives none. The buffer `B` (an array, or a borrowed
/// slice) bounds the payload it accepts to its length minus [`HEADER`] and [`TRAILER`].
#[derive(Debug)]
pub struct Decoder<B> {
    buf: B,
    filled: usize,
    /// Bytes at the start of `buf` that the last frame returned occupies.
    consumed: usize,
    /// Whether the bytes being dropped already counted as one run of garbage.
    in_garbage: bool,
    /// Whether the line went quiet since the last byte: a partial frame will not complete.
    idle: bool,
    counters: Counters,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Decoder<B> {
    /// A decoder over `buf`.
    pub fn new(buf: B) -> Self {
        Self {
            buf,
            filled: 0,
            consumed: 0,
            in_garbage: false,
            idle: false,
            counters: Counters::default(),
        }
    }

    /// What was dropped so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Tells the decoder the line went quiet (the reader's timeout): a partial frame
    /// will not complete, so [`Decoder::next_frame`] drops it (counted as garbage) and
    /// looks for frames in the bytes after its sync. Without this, a truncated frame
    /// holds the frames behind it until enough bytes arrive to fail its CRC.
    pub fn idle(&mut self) {
        self.idle = true;
    }

    /// Takes one received byte. A byte that arrives while the buffer is full (which
    /// [`Decoder::next_frame`] never leaves it) drops the buffered bytes as garbage.
    pub fn push(&mut self, byte: u8) {
        self.release();
        self.idle = false;
        let buf = self.buf.as_mut();
        if self.filled == buf.len() {
            self.filled = 0;
            self.counters.garbage = self.counters.garbage.saturating_add(1);
        }
        if let Some(slot) = buf.get_mut(self.filled) {
            *slot = byte;
            self.filled += 1;
        }
    }

    /// The next complete frame among the bytes pushed, if any; corrupt frames and garbage
    /// on the way are dropped and counted.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        self.release();
        loop {
            let buf = self.buf.as_ref();
            let bytes = &buf[..self.filled];
            // Garbage before a sync: drop up to the next SYNC[0].
            if let Some(&first) = bytes.first()
                && first != SYNC[0]
            {
                let skip = bytes
                    .iter()
                    .position(|&b| b == SYNC[0])
                    .unwrap_or(bytes.len());
                self.note_garbage();
                self.drop_front(skip);
                continue;
            }
            if bytes.len() >= 2 && bytes[1] != SYNC[1] {
                self.note_garbage();
                self.drop_front(1);
                continue;
            }
            if bytes.len() < HEADER {
                if self.partial() {
                    continue;
                }
                return None;
            }
            let len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
            let total = HEADER + len + TRAILER;
            if total > buf.len() {
                self.counters.oversize = self.counters.oversize.saturating_add(1);
                self.drop_front(1);
                continue;
            }
            if bytes.len() < total {
                if self.partial() {
                    continue;
                }
                return None;
            }
            let crc = u32::from_be_bytes([
                bytes[total - 4],
                bytes[total - 3],
                bytes[total - 2],
                bytes[total - 1],
            ]);
            if crc != crc32(&bytes[2..HEADER + len]) {
                self.counters.crc = self.counters.crc.saturating_add(1);
                self.drop_front(1);
                continue;
            }
            self.in_garbage = false;
            self.consumed = total;
            let bytes = &self.buf.as_ref()[..total];
            return Some(Frame {
                kind: bytes[2],
                seq: bytes[3],
                payload: &bytes[HEADER..HEADER + len],
            });
        }
    }

    /// At a partial frame: when the line is idle, drops its sync and says to rescan.
    fn partial(&mut self) -> bool {
        if !self.idle || self.filled == 0 {
            self.idle = self.idle && self.filled > 0;
            return false;
        }
        self.counters.garbage = self.counters.garbage.saturating_add(1);
        self.drop_front(1);
        true
    }

    fn note_garbage(&mut self) {
        if !self.in_garbage {
            self.in_garbage = true;
            self.counters.garbage = self.counters.garbage.saturating_add(1);
        }
    }

    /// Forgets the frame returned last.
    fn release(&mut self) {
        let consumed = core::mem::take(&mut self.consumed);
        self.drop_front(consumed);
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.filled);
        self.buf.as_mut().copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// Message types.
pub mod kind {
    /// Device → node: who the device is.
    pub const HELLO: u8 = 0x01;
    /// Device → node: a DEPLOY was loaded.
    pub const LOADED: u8 = 0x02;
    /// Device → node: a DEPLOY was refused.
    pub const REFUSED: u8 = 0x03;
    /// Device → node: one line of an execution's trace.
    pub const TRACE: u8 = 0x04;
    /// Device → node: an EMIT_EVENT.
    pub const EVENT: u8 = 0x05;
    /// Device → node: an LLM_CALL to serve.
    pub const LLM_REQUEST: u8 = 0x06;
    /// Device → node: the heartbeat.
    pub const PING: u8 = 0x07;
    /// Node → device: a signed program to load.
    pub const DEPLOY: u8 = 0x81;
    /// Node → device: an event that starts an execution.
    pub const RUN: u8 = 0x82;
    /// Node → device: the answer to an LLM_REQUEST.
    pub const LLM_ANSWER: u8 = 0x83;
    /// Node → device: the heartbeat's answer.
    pub const PONG: u8 = 0x84;
}

/// Named scalar fields (an event, an LLM_CALL's context): either already encoded (as
/// decoded from a frame) or a list to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fields<'a> {
    /// Encoded fields, validated: the bytes after the count, and the count.
    Encoded {
        /// The fields' bytes.
        bytes: &'a [u8],
        /// How many.
        count: u8,
    },
    /// A list of `(dotted path, value)`.
    List(&'a [(&'a str, Value<'a>)]),
}

impl<'a> Fields<'a> {
    /// The fields, as `(dotted path, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + 'a {
        let (list, bytes, count) = match *self {
            Fields::Encoded { bytes, count } => (&[][..], bytes, count),
            Fields::List(list) => (list, &[][..], 0),
        };
        let mut at = 0;
        let mut left = count;
        let encoded = core::iter::from_fn(move || {
            left = left.checked_sub(1)?;
            // Validated when decoded: cannot fail here.
            let (field, next) = field(bytes, at).ok()?;
            at = next;
            Some(field)
        });
        list.iter().copied().chain(encoded)
    }

    fn decode(bytes: &'a [u8], at: usize) -> Result<(Self, usize), Error> {
        let count = *bytes.get(at).ok_or(Error::Truncated { at })?;
        if usize::from(count) > MAX_EVENT_FIELDS {
            return Err(Error::Frame {
                what: "more fields than a device holds",
            });
        }
        let start = at + 1;
        let mut end = start;
        for _ in 0..count {
            end = field(bytes, end)?.1;
        }
        Ok((
            Fields::Encoded {
                bytes: &bytes[start..end],
                count,
            },
            end,
        ))
    }

    fn encode(&self, out: &mut Writer<'_>) -> Result<(), Error> {
        let count = self.iter().count();
        if count > MAX_EVENT_FIELDS {
            return Err(Error::Frame {
                what: "more fields than a device holds",
            });
        }
        out.put(&[u8::try_from(count).unwrap_or(u8::MAX)])?;
        for (path, value) in self.iter() {
            out.string(path)?;
            out.value(&value)?;
        }
        Ok(())
    }
}

fn field(bytes: &[u8], at: usize) -> Result<((&str, Value<'_>), usize), Error> {
    let (path, at) = string(bytes, at)?;
    if !crate::code::is_path(path) {
        return Err(Error::BadPath { at });
    }
    let (value, at) = Value::decode(bytes, at)?;
    Ok(((path, value), at))
}

/// The message read from payload `p`, if it ends where `p` does.
fn whole<'a>(p: &[u8], (message, end): (Message<'a>, usize)) -> Result<Message<'a>, Error> {
    if end == p.len() {
        Ok(message)
    } else {
        Err(Error::Frame {
            what: "bytes after the message's payload",
        })
    }
}

fn string(bytes: &[u8], at: usize) -> Result<(&str, usize), Error> {
    let len = usize::from(*bytes.get(at).ok_or(Error::Truncated { at })?);
    let raw = bytes
        .get(at + 1..at + 1 + len)
        .ok_or(Error::Truncated { at: at + 1 })?;
    let text = core::str::from_utf8(raw).map_err(|_| Error::BadString { at })?;
    Ok((text, at + 1 + len))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<(u32, usize), Error> {
    Ok((u32::from_be_bytes(take::<4>(bytes, at)?), at + 4))
}

/// A capability a device declares in its HELLO, with its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability<'a> {
    /// Its id (`gpio`, `adc`, …).
    pub id: &'a str,
    /// Its version.
    pub version: &'a str,
}

/// Capabilities in a HELLO: encoded (decoded from a frame) or a list to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capabilities<'a> {
    /// Encoded, validated: the bytes after the count, and the count.
    Encoded {
        /// The capabilities' bytes.
        bytes: &'a [u8],
        /// How many.
        count: u8,
    },
    /// A list.
    List(&'a [Capability<'a>]),
}

impl<'a> Capabilities<'a> {
    /// The capabilities.
    pub fn iter(&self) -> impl Iterator<Item = Capability<'a>> + 'a {
        let (list, bytes, count) = match *self {
            Capabilities::Encoded { bytes, count } => (&[][..], bytes, count),
            Capabilities::List(list) => (list, &[][..], 0),
        };
        let mut at = 0;
        let mut left = count;
        let encoded = core::iter::from_fn(move || {
            left = left.checked_sub(1)?;
            let (id, next) = string(bytes, at).ok()?;
            let (version, next) = string(bytes, next).ok()?;
            at = next;
            Some(Capability { id, version })
        });
        list.iter().copied().chain(encoded)
    }
}

/// A program's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramRef<'a> {
    /// The program id.
    pub id: &'a str,
    /// Its version.
    pub version: &'a str,
}

/// One message of the protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'a> {
    /// Who the device is, what it can do, what it runs.
    Hello {
        /// The device's id.
        device: &'a str,
        /// The firmware's version.
        firmware: &'a str,
        /// Its capabilities.
        capabilities: Capabilities<'a>,
        /// The program it runs, if any.
        program: Option<ProgramRef<'a>>,
        /// Whether the device started since its last PONG: no PONG answered it yet since
        /// it started. A HELLO again after an unanswered PING (a lost link, or a device
        /// too busy checking a DEPLOY to read the PONG in time) is not a start, and what
        /// the device was answering it still answers.
        started: bool,
    },
    /// A DEPLOY was loaded and now runs.
    Loaded(ProgramRef<'a>),
    /// A DEPLOY was refused; the current program keeps running.
    Refused {
        /// The trace's refusal name.
        reason: &'a str,
    },
    /// One canonical trace line of an execution.
    Trace {
        /// The execution's number on the device.
        execution: u32,
        /// The line, without its newline.
        line: &'a str,
    },
    /// An event the program emitted.
    Event {
        /// Its topic.
        topic: &'a str,
        /// Its key.
        key: &'a str,
        /// Its fields.
        fields: Fields<'a>,
    },
    /// An LLM_CALL for the node to serve.
    LlmRequest {
        /// The request's id, echoed by the answer.
        request: u32,
        /// The program running the call.
        program: ProgramRef<'a>,
        /// The LLM_CALL's instruction id.
        instruction: &'a str,
        /// The frozen context.
        context: Fields<'a>,
    },
    /// The device's heartbeat.
    Ping,
    /// A signed program file to load.
    Deploy {
        /// The file.
        program: &'a [u8],
    },
    /// An event that starts an execution.
    Run {
        /// Its fields.
        fields: Fields<'a>,
    },
    /// The answer to an LLM_REQUEST.
    LlmAnswer {
        /// The request's id.
        request: u32,
        /// The validated value, or why there is none.
        result: Result<Value<'a>, ErrorClass>,
    },
    /// The node's answer to a PING.
    Pong,
}

impl<'a> Message<'a> {
    /// The message's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => kind::HELLO,
            Message::Loaded(_) => kind::LOADED,
            Message::Refused { .. } => kind::REFUSED,
            Message::Trace { .. } => kind::TRACE,
            Message::Event { .. } => kind::EVENT,
            Message::LlmRequest { .. } => kind::LLM_REQUEST,
            Message::Ping => kind::PING,
            Message::Deploy { .. } => kind::DEPLOY,
            Message::Run { .. } => kind::RUN,
            Message::LlmAnswer { .. } => kind::LLM_ANSWER,
            Message::Pong => kind::PONG,
        }
    }

    /// Reads a frame's message, checking its whole payload.
    pub fn decode(frame: &Frame<'a>) -> Result<Self, Error> {
        if frame.kind & 0x80 != 0 {
            Self::decode_for_device(frame)
        } else {
            whole(frame.payload, Self::from_device(frame.payload, frame.kind)?)
        }
    }

    /// Reads a message a node sends (what a device reads), checking its whole payload: a
    /// device's own kinds are errors here, and a device that decodes with this links no
    /// decoder of theirs.
    pub fn decode_for_device(frame: &Frame<'a>) -> Result<Self, Error> {
        let p = frame.payload;
        let read = match frame.kind {
            kind::DEPLOY => (Message::Deploy { program: p }, p.len()),
            kind::RUN => {
                let (fields, at) = Fields::decode(p, 0)?;
                (Message::Run { fields }, at)
            }
            kind::LLM_ANSWER => {
                let (request, at) = u32_at(p, 0)?;
                let (result, at) = match p.get(at) {
                    Some(0) => {
                        let (value, next) = Value::decode(p, at + 1)?;
                        (Ok(value), next)
                    }
                    Some(1) => {
                        let number = *p.get(at + 1).ok_or(Error::Truncated { at: at + 1 })?;
                        let class =
                            ErrorClass::from_number(i32::from(number)).ok_or(Error::Frame {
                                what: "LLM_ANSWER's error class is unknown",
                            })?;
                        (Err(class), at + 2)
                    }
                    Some(_) => {
                        return Err(Error::Frame {
                            what: "LLM_ANSWER is neither a value (00) nor an error (01)",
                        });
                    }
                    None => return Err(Error::Truncated { at }),
                };
                (Message::LlmAnswer { request, result }, at)
            }
            kind::PONG => (Message::Pong, 0),
            _ => {
                return Err(Error::Frame {
                    what: "not a message a node sends",
                });
            }
        };
        whole(p, read)
    }

    /// A device's message of `kind` in payload `p`, and where it ends.
    fn from_device(p: &'a [u8], kind: u8) -> Result<(Self, usize), Error> {
        Ok(match kind {
            kind::HELLO => {
                let (device, at) = string(p, 0)?;
                let (firmware, at) = string(p, at)?;
                let count = *p.get(at).ok_or(Error::Truncated { at })?;
                let start = at + 1;
                let mut at = start;
                for _ in 0..count {
                    at = string(p, at)?.1;
                    at = string(p, at)?.1;
                }
                let capabilities = Capabilities::Encoded {
                    bytes: &p[start..at],
                    count,
                };
                let (program, at) = match p.get(at) {
                    Some(0) => (None, at + 1),
                    Some(1) => {
                        let (id, next) = string(p, at + 1)?;
                        let (version, next) = string(p, next)?;
                        (Some(ProgramRef { id, version }), next)
                    }
                    Some(_) => {
                        return Err(Error::Frame {
                            what: "HELLO's program flag is neither 00 nor 01",
                        });
                    }
                    None => return Err(Error::Truncated { at }),
                };
                let started = match p.get(at) {
                    Some(0) => false,
                    Some(1) => true,
                    Some(_) => {
                        return Err(Error::Frame {
                            what: "HELLO's start flag is neither 00 nor 01",
                        });
                    }
                    None => return Err(Error::Truncated { at }),
                };
                let hello = Message::Hello {
                    device,
                    firmware,
                    capabilities,
                    program,
                    started,
                };
                (hello, at + 1)
            }
            kind::LOADED => {
                let (id, at) = string(p, 0)?;
                let (version, at) = string(p, at)?;
                (Message::Loaded(ProgramRef { id, version }), at)
            }
            kind::REFUSED => {
                let (reason, at) = string(p, 0)?;
                (Message::Refused { reason }, at)
            }
            kind::TRACE => {
                let (execution, at) = u32_at(p, 0)?;
                let len = usize::from(u16::from_be_bytes(take::<2>(p, at)?));
                let raw = p
                    .get(at + 2..at + 2 + len)
                    .ok_or(Error::Truncated { at: at + 2 })?;
                let line = core::str::from_utf8(raw).map_err(|_| Error::BadString { at })?;
                (Message::Trace { execution, line }, at + 2 + len)
            }
            kind::EVENT => {
                let (topic, at) = string(p, 0)?;
                let (key, at) = string(p, at)?;
                let (fields, at) = Fields::decode(p, at)?;
                (Message::Event { topic, key, fields }, at)
            }
            kind::LLM_REQUEST => {
                let (request, at) = u32_at(p, 0)?;
                let (id, at) = string(p, at)?;
                let (version, at) = string(p, at)?;
                let (instruction, at) = string(p, at)?;
                let (context, at) = Fields::decode(p, at)?;
                let message = Message::LlmRequest {
                    request,
                    program: ProgramRef { id, version },
                    instruction,
                    context,
                };
                (message, at)
            }
            kind::PING => (Message::Ping, 0),
            _ => {
                return Err(Error::Frame {
                    what: "unknown message type",
                });
            }
        })
    }

    /// Writes the message as one frame with sequence number `seq` into `out`; returns
    /// the frame's length.
    pub fn encode(&self, seq: u8, out: &mut [u8]) -> Result<usize, Error> {
        let room = out
            .len()
            .checked_sub(HEADER + TRAILER)
            .ok_or(Error::Frame {
                what: "output buffer too small for the frame",
            })?;
        let payload_len = {
            let mut w = Writer {
                out: &mut out[HEADER..HEADER + room.min(MAX_PAYLOAD)],
                at: 0,
            };
            self.payload(&mut w)?;
            w.at
        };
        let len = u16::try_from(payload_len).map_err(|_| Error::Frame {
            what: "payload longer than a frame holds",
        })?;
        out[..2].copy_from_slice(&SYNC);
        out[2] = self.kind();
        out[3] = seq;
        out[4..6].copy_from_slice(&len.to_be_bytes());
        let end = HEADER + payload_len;
        let crc = crc32(&out[2..end]);
        out[end..end + TRAILER].copy_from_slice(&crc.to_be_bytes());
        Ok(end + TRAILER)
    }

    fn payload(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        match self {
            Message::Hello {
                device,
                firmware,
                capabilities,
                program,
                started,
            } => {
                w.string(device)?;
                w.string(firmware)?;
                let count = capabilities.iter().count();
                w.put(&[u8::try_from(count).map_err(|_| Error::Frame {
                    what: "more than 255 capabilities",
                })?])?;
                for capability in capabilities.iter() {
                    w.string(capability.id)?;
                    w.string(capability.version)?;
                }
                match program {
                    None => w.put(&[0])?,
                    Some(program) => {
                        w.put(&[1])?;
                        w.string(program.id)?;
                        w.string(program.version)?;
                    }
                }
                w.put(&[u8::from(*started)])
            }
            Message::Loaded(program) => {
                w.string(program.id)?;
                w.string(program.version)
            }
            Message::Refused { reason } => w.string(reason),
            Message::Trace { execution, line } => {
                w.put(&execution.to_be_bytes())?;
                let len = u16::try_from(line.len()).map_err(|_| Error::Frame {
                    what: "trace line longer than a frame holds",
                })?;
                w.put(&len.to_be_bytes())?;
                w.put(line.as_bytes())
            }
            Message::Event { topic, key, fields } => {
                w.string(topic)?;
                w.string(key)?;
                fields.encode(w)
            }
            Message::LlmRequest {
                request,
                program,
                instruction,
                context,
            } => {
                w.put(&request.to_be_bytes())?;
                w.string(program.id)?;
                w.string(program.version)?;
                w.string(instruction)?;
                context.encode(w)
            }
            Message::Ping | Message::Pong => Ok(()),
            Message::Deploy { program } => w.put(program),
            Message::Run { fields } => fields.encode(w),
            Message::LlmAnswer { request, result } => {
                w.put(&request.to_be_bytes())?;
                match result {
                    Ok(value) => {
                        w.put(&[0])?;
                        w.value(value)
                    }
                    Err(class) => w.put(&[1, *class as u8]),
                }
            }
        }
    }
}

/// Writes a payload into a bounded buffer.
struct Writer<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.at + bytes.len();
        self.out
            .get_mut(self.at..end)
            .ok_or(Error::Frame {
                what: "the message does not fit the frame",
            })?
            .copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    fn string(&mut self, text: &str) -> Result<(), Error> {
        let len = u8::try_from(text.len()).map_err(|_| Error::Frame {
            what: "a string longer than 255 bytes",
        })?;
        self.put(&[len])?;
        self.put(text.as_bytes())
    }

    fn value(&mut self, value: &Value<'_>) -> Result<(), Error> {
        let mut result = Ok(());
        value.canonical(|bytes| {
            if result.is_ok() {
                result = self.put(bytes);
            }
        });
        result
    }
}

#[cfg(test)]
mod tests;
