//! An OpenAI-compatible chat-completions endpoint on 127.0.0.1 (`POST
//! /v1/chat/completions`), in a thread of the test: it answers each request with what its
//! `answer` function gives for the last user message, and keeps the prompts it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

type Answer = dyn Fn(&str) -> String + Send + Sync;

/// The endpoint; it stops with the test process.
pub struct Llm {
    port: u16,
    prompts: Arc<Mutex<Vec<String>>>,
}

impl Llm {
    /// Starts the endpoint: `answer(prompt)` is the assistant's content for the last user
    /// message `prompt`.
    pub fn start(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let prompts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&prompts);
        let answer: Arc<Answer> = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, answer) = (Arc::clone(&seen), Arc::clone(&answer));
                std::thread::spawn(move || serve(stream, &seen, &*answer));
            }
        });
        Self { port, prompts }
    }

    /// The `[llm] base_url` of the endpoint.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The last user message of every request so far.
    pub fn prompts(&self) -> Vec<String> {
        self.prompts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Answers the requests of one connection (keep-alive) until it closes or errs.
fn serve(stream: TcpStream, seen: &Mutex<Vec<String>>, answer: &Answer) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, reply) = if request_line.starts_with("POST /v1/chat/completions ") {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let prompt = request["messages"]
                .as_array()
                .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned();
            let content = answer(&prompt);
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(prompt);
            let reply = json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": request["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
            });
            ("200 OK", reply.to_string())
        } else {
            (
                "404 Not Found",
                r#"{"error":{"message":"no such endpoint"}}"#.to_owned(),
            )
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
