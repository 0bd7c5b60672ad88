//! A Kafka-protocol broker for the tests: `tansu` with its in-memory storage engine, on a
//! free loopback port. The memory engine loses every topic and record when the broker stops,
//! so [`Tansu`] remembers the topics it created and creates them again on each start.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{Process, find_binary, free_port, wait_for_port};

/// How long the broker gets to listen, and a topic creation to succeed.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A tansu broker on `127.0.0.1`, killed when dropped.
#[derive(Debug)]
pub struct Tansu {
    binary: PathBuf,
    port: u16,
    process: Option<Process>,
    /// Topics to (re)create on each start: name, partitions.
    topics: Vec<(String, i32)>,
}

impl Tansu {
    /// Produces `count` JSON messages `{"n": N}` on `topic`, keyed `device-{N % 7}`, with
    /// `event-id` headers `ev-N`, and waits until the broker has them all.
    pub fn produce(&self, topic: &str, count: u64) {
        // One message per batch: tansu's memory engine cannot fetch from an offset inside a
        // batch, so a consumer resuming at a committed offset would wait forever.
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("batch.num.messages", "1")
            .create()
            .expect("a producer for the test broker");
        for n in 0..count {
            let key = format!("device-{}", n % 7);
            let payload = format!("{{\"n\": {n}}}");
            let id = format!("ev-{n}");
            let headers = OwnedHeaders::new().insert(Header {
                key: "event-id",
                value: Some(&id),
            });
            let record = BaseRecord::to(topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            producer
                .send(record)
                .map_err(|(e, _)| e)
                .expect("queue a test message");
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(120))
            .expect("the test broker takes the messages");
    }

    /// Starts a broker on a free port.
    pub fn start() -> Self {
        let mut tansu = Self::stopped();
        tansu.restart();
        tansu
    }

    /// A broker that is not running yet, with its port chosen: clients can be pointed at
    /// [`Tansu::bootstrap`] before [`Tansu::restart`] starts it.
    pub fn stopped() -> Self {
        Self {
            binary: find_binary("tansu", "EYEFLOW_TANSU"),
            port: free_port(),
            process: None,
            topics: Vec::new(),
        }
    }

    /// `127.0.0.1:PORT`, the bootstrap address for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `name` with `partitions` partitions now if the broker runs, and on every
    /// later start.
    pub fn create_topic(&mut self, name: &str, partitions: i32) {
        self.topics.push((name.to_owned(), partitions));
        if self.process.is_some() {
            self.make_topic(name, partitions);
        }
    }

    /// Kills the broker (its data is lost).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the broker on the same port (stopping it first if it runs) and creates the
    /// remembered topics.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(&self.binary);
        command
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(Process::spawn("tansu broker", command));
        wait_for_port("tansu", self.port, START_TIMEOUT);
        for (name, partitions) in self.topics.clone() {
            self.make_topic(&name, partitions);
        }
    }

    fn make_topic(&self, name: &str, partitions: i32) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let start = Instant::now();
        loop {
            let output = Command::new(&self.binary)
                .args(["topic", "create", name, "--broker", &url])
                .args(["--partitions", &partitions.to_string()])
                .output()
                .expect("run `tansu topic create`");
            if output.status.success() {
                return;
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "tansu topic create {name} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
