//! The OpenAI-compatible chat adapter against a local server speaking the chat-completions
//! wire format, and the no-endpoint stand-in.

use std::time::Duration;

use eyeflow_actors::ports::{CallErrorKind, ChatMessage, LlmPort, LlmRequest, Secret};
use eyeflow_runtime::llm::{NoLlm, OpenAiChat};
use serde_json::json;

use crate::support::{HttpServer, Reply};

const KEY: &str = "sk-test-very-secret";

fn request(model: &str) -> LlmRequest {
    LlmRequest {
        model: model.into(),
        temperature: 0.5,
        max_tokens: 64,
        messages: vec![
            ChatMessage {
                role: "system".into(),
                content: "Classify the alert.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "temperature 31 °C".into(),
            },
        ],
        json_output: false,
        timeout: Duration::from_secs(5),
    }
}

fn completion(content: &str) -> String {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    })
    .to_string()
}

/// A provider whose behavior depends on the model name.
fn provider() -> HttpServer {
    HttpServer::start(|r| {
        if r.path != "/v1/chat/completions" || r.method != "POST" {
            return Reply::new(400, "wrong endpoint");
        }
        let model = r.json()["model"].as_str().unwrap_or("").to_owned();
        match model.as_str() {
            "gpt-ok" => Reply::new(200, completion("warm")),
            "gpt-json" => Reply::new(200, completion(r#"{"level":"high"}"#)),
            "gpt-gone" => Reply::new(
                404,
                r#"{"error":{"message":"The model `gpt-gone` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
            ),
            "gpt-gone-400" => Reply::new(
                400,
                r#"{"error":{"message":"no such model","code":"model_not_found"}}"#,
            ),
            "gpt-busy" => Reply::new(429, r#"{"error":{"message":"Rate limit reached"}}"#),
            "gpt-down" => Reply::new(500, "Internal Server Error"),
            "gpt-garbled" => Reply::new(200, r#"{"choices":[]}"#),
            "gpt-not-json" => Reply::new(200, "<html>proxy</html>"),
            "gpt-slow" => Reply {
                delay: Duration::from_secs(3),
                ..Reply::new(200, completion("late"))
            },
            _ => Reply::new(400, r#"{"error":{"message":"bad request"}}"#),
        }
    })
}

fn chat(server: &HttpServer) -> OpenAiChat {
    OpenAiChat::new(&server.url("/v1/"), Some(Secret::new(KEY))).expect("client")
}

#[test]
fn answers_and_sends_the_chat_completions_request() {
    let server = provider();
    let llm = chat(&server);
    assert_eq!(
        eyeflow_tests::wait(llm.complete(&request("gpt-ok"))).unwrap(),
        "warm"
    );
    let seen = server.requests().pop().unwrap();
    assert_eq!(
        seen.header("Authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    let body = seen.json();
    assert_eq!(
        body,
        json!({
            "model": "gpt-ok",
            "messages": [
                {"role": "system", "content": "Classify the alert."},
                {"role": "user", "content": "temperature 31 °C"}
            ],
            "temperature": 0.5,
            "max_tokens": 64
        })
    );

    let mut json_request = request("gpt-json");
    json_request.json_output = true;
    assert_eq!(
        eyeflow_tests::wait(llm.complete(&json_request)).unwrap(),
        r#"{"level":"high"}"#
    );
    let body = server.requests().pop().unwrap().json();
    assert_eq!(body["response_format"], json!({"type": "json_object"}));

    // Without a key, no Authorization header.
    let anonymous = OpenAiChat::new(&server.url("/v1"), None).unwrap();
    assert_eq!(
        eyeflow_tests::wait(anonymous.complete(&request("gpt-ok"))).unwrap(),
        "warm"
    );
    assert_eq!(
        server.requests().pop().unwrap().header("Authorization"),
        None
    );
}

#[test]
fn provider_errors_map_to_kinds_without_the_key() {
    let server = provider();
    let llm = chat(&server);
    for (model, kind) in [
        ("gpt-gone", CallErrorKind::ModelUnavailable),
        ("gpt-gone-400", CallErrorKind::ModelUnavailable),
        ("gpt-busy", CallErrorKind::RateLimited),
        ("gpt-down", CallErrorKind::Unavailable),
        ("gpt-garbled", CallErrorKind::InvalidOutput),
        ("gpt-not-json", CallErrorKind::InvalidOutput),
        ("gpt-other", CallErrorKind::InvalidInput),
    ] {
        let err = eyeflow_tests::wait(llm.complete(&request(model))).unwrap_err();
        assert_eq!(err.kind, kind, "{model}: {err}");
        assert_eq!(err.origin, "llm");
        assert!(err.message.contains(model), "{err}");
        assert!(!format!("{err} {err:?} {llm:?}").contains(KEY));
    }
    let err = eyeflow_tests::wait(llm.complete(&request("gpt-gone"))).unwrap_err();
    assert!(err.message.contains("does not exist"), "{err}");
}

#[test]
fn a_slow_provider_times_out_and_a_dead_one_is_unavailable() {
    let server = provider();
    let llm = chat(&server);
    let mut slow = request("gpt-slow");
    slow.timeout = Duration::from_millis(300);
    assert_eq!(
        eyeflow_tests::wait(llm.complete(&slow)).unwrap_err().kind,
        CallErrorKind::Timeout
    );

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dead = OpenAiChat::new(&format!("http://127.0.0.1:{port}/v1"), None).unwrap();
    let err = eyeflow_tests::wait(dead.complete(&request("gpt-ok"))).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
}

#[test]
fn no_endpoint_means_model_unavailable() {
    let err = eyeflow_tests::wait(NoLlm.complete(&request("gpt-ok"))).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::ModelUnavailable);
    assert_eq!(err.message, "no LLM endpoint configured");
}
