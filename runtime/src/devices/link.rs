//! A device's link, run as a task its actor owns: connects (a TCP serial bridge or a tty),
//! reconnects with backoff, decodes what it reads into messages for the actor and writes
//! the actor's frames. Corrupt frames are dropped and counted, never fatal.

use std::sync::Arc;
use std::time::Duration;

use eyeflow_mcu::frame::{Decoder, MAX_FRAME, Message};
use ractor::ActorRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::record::Incoming;
use super::{Device, DeviceMsg, Link};

/// The first wait before reconnecting; doubled after each failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Silence after which a partial frame will not complete.
const IDLE: Duration = Duration::from_millis(200);

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Aborts its task when dropped: the link stops with the actor's state, whatever stops it.
pub(crate) struct Owned(tokio::task::JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the link of `device` for `actor`, writing what arrives on `outgoing`.
pub(crate) fn spawn(
    device: Arc<Device>,
    actor: ActorRef<DeviceMsg>,
    outgoing: mpsc::Receiver<Vec<u8>>,
) -> Owned {
    Owned(tokio::spawn(run(device, actor, outgoing)))
}

async fn run(
    device: Arc<Device>,
    actor: ActorRef<DeviceMsg>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut said_down = false;
    loop {
        match connect(&device.config.link).await {
            Ok((reader, writer)) => {
                backoff = MIN_BACKOFF;
                said_down = false;
                tracing::info!(device = %device.id(), link = %device.config.link, "device link connected");
                if actor.cast(DeviceMsg::Connected).is_err() {
                    return;
                }
                let why = session(&device, &actor, reader, writer, &mut outgoing).await;
                tracing::warn!(device = %device.id(), "device link lost: {why}");
                if actor.cast(DeviceMsg::Disconnected).is_err() {
                    return;
                }
            }
            Err(e) if !said_down => {
                said_down = true;
                tracing::warn!(device = %device.id(), link = %device.config.link, "cannot connect to the device (retrying): {e}");
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(link: &Link) -> std::io::Result<(Reader, Writer)> {
    match link {
        Link::Tcp(address) => {
            let stream = tokio::net::TcpStream::connect(address.as_str()).await?;
            stream.set_nodelay(true)?;
            let (reader, writer) = stream.into_split();
            Ok((Box::new(reader), Box::new(writer)))
        }
        Link::Tty { path, baud } => {
            let file = open_tty(path, *baud)?;
            let writer = file.try_clone()?;
            Ok((
                Box::new(tokio::fs::File::from_std(file)),
                Box::new(tokio::fs::File::from_std(writer)),
            ))
        }
    }
}

/// Opens a tty raw at `baud`.
fn open_tty(path: &std::path::Path, baud: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?;
    let mut termios = rustix::termios::tcgetattr(&file)?;
    termios.make_raw();
    termios.set_speed(baud)?;
    rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &termios)?;
    Ok(file)
}

/// Serves one connection until it fails; why it ended.
async fn session(
    device: &Arc<Device>,
    actor: &ActorRef<DeviceMsg>,
    mut reader: Reader,
    mut writer: Writer,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
) -> String {
    // Frames queued while the link was down were for a device that has since said HELLO
    // again (or will): they are not sent late.
    while outgoing.try_recv().is_ok() {}
    // Reads run in their own task so that waiting for bytes, for silence and for frames to
    // write never cancels a read halfway.
    let (chunks_tx, mut chunks) = mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let _reading = Owned(tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let read = reader.read(&mut buf).await.map(|n| buf[..n].to_vec());
            let stop = !matches!(&read, Ok(bytes) if !bytes.is_empty());
            if chunks_tx.send(read).await.is_err() || stop {
                return;
            }
        }
    }));
    let mut decoder = Decoder::new(vec![0u8; MAX_FRAME]);
    let mut dropped = 0u32;
    loop {
        tokio::select! {
            chunk = tokio::time::timeout(IDLE, chunks.recv()) => match chunk {
                Err(_) => decoder.idle(),
                Ok(None) => return "the reader stopped".to_owned(),
                Ok(Some(Err(e))) => return e.to_string(),
                Ok(Some(Ok(bytes))) if bytes.is_empty() => return "the device closed the link".to_owned(),
                Ok(Some(Ok(bytes))) => bytes.iter().for_each(|&b| decoder.push(b)),
            },
            frame = outgoing.recv() => match frame {
                None => return "the device actor stopped".to_owned(),
                Some(frame) => {
                    if let Err(e) = writer.write_all(&frame).await {
                        return e.to_string();
                    }
                    if let Err(e) = writer.flush().await {
                        return e.to_string();
                    }
                }
            },
        }
        while let Some(frame) = decoder.next_frame() {
            match Message::decode(&frame)
                .map_err(|e| e.to_string())
                .and_then(Incoming::from_message)
            {
                Ok(incoming) => {
                    if actor.cast(DeviceMsg::Frame(incoming)).is_err() {
                        return "the device actor stopped".to_owned();
                    }
                }
                Err(e) => {
                    device.count_bad_frames(1);
                    tracing::debug!(device = %device.id(), kind = frame.kind, "bad frame dropped: {e}");
                }
            }
        }
        let total = decoder.counters().total();
        device.count_bad_frames(u64::from(total - dropped));
        dropped = total;
    }
}
