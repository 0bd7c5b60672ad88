//! Listing executions on a real node: `GET /api/executions` filtered by program, status and
//! acceptance time, paged with its cursor until it ends (every execution seen once), and
//! its refusals of bad parameters; the journal counts at `GET /api/executions/summary`.

use std::collections::BTreeSet;
use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// Fails every execution: CEL refuses to divide by zero.
const FAILING_RULE: &str = r#"
id: failing
version: 2.0.0
triggers:
  - {kind: webhook, source: failing}
instructions:
  - {id: boom, op: EVAL, expression: "1 / event.zero", next: done}
  - {id: done, op: RETURN, expression: "boom"}
"#;

/// A viewer's calls to one node.
struct Viewer {
    url: String,
    token: String,
    client: reqwest::blocking::Client,
}

impl Viewer {
    /// `GET path`: the status and the JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .expect("the node answers");
        let status = response.status().as_u16();
        let body = serde_json::from_str(&response.text().expect("body")).expect("JSON body");
        (status, body)
    }

    /// The executions `GET /api/executions?query` lists (one page).
    fn list(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/api/executions?{query}"));
        assert_eq!(status, 200, "{query}: {body}");
        body["executions"].as_array().expect("executions").clone()
    }

    /// The message of the 400 that `GET /api/executions?query` answers.
    fn refused(&self, query: &str) -> String {
        let (status, body) = self.get(&format!("/api/executions?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        body["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned()
    }
}

fn ids(listed: &[Value]) -> Vec<String> {
    listed
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn executions_are_listed_filtered_and_paged() {
    let work = Workdir::new("");
    let token = work.eyeflow(&["tokens", "issue", "--role", "viewer", "--data-dir", "data"]);
    let (node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);
    work.deploy(&url, FAILING_RULE);
    let mut started = Vec::new();
    for i in 0..4 {
        for (source, body) in [("plain", json!({"a": i})), ("failing", json!({"zero": 0}))] {
            let id = work
                .send(&url, source, &format!("{source}-{i}"), &body)
                .expect("accepted");
            started.push(id);
        }
    }
    let viewer = Viewer {
        url: url.clone(),
        token: token.trim().to_owned(),
        client: reqwest::blocking::Client::new(),
    };
    eventually("every execution finished", PATIENCE, || {
        let (_, summary) = viewer.get("/api/executions/summary");
        (summary["finished"] == 8).then_some(())
    });
    let (status, summary) = viewer.get("/api/executions/summary");
    assert_eq!(status, 200);
    assert_eq!(
        (summary["executions"].as_u64(), summary["pending"].as_u64()),
        (Some(8), Some(0))
    );

    // Newest first, every field.
    let all = viewer.list("");
    let mut newest_first = started.clone();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(ids(&all), newest_first);
    for e in &all {
        let plain = e["program"] == "plain";
        assert_eq!(e["version"], if plain { "1.0.0" } else { "2.0.0" }, "{e}");
        assert_eq!(
            e["status"],
            if plain { "completed" } else { "failed" },
            "{e}"
        );
        // Each program's webhook source has its name.
        assert_eq!(e["source"], e["program"], "{e}");
        let accepted = e["accepted_ms"].as_u64().expect("accepted_ms");
        assert!(
            e["finished_ms"].as_u64().expect("finished_ms") >= accepted,
            "{e}"
        );
    }

    // Each filter.
    let plain = viewer.list("program=plain");
    assert_eq!(plain.len(), 4);
    assert!(plain.iter().all(|e| e["program"] == "plain"));
    let failed = viewer.list("status=failed");
    assert_eq!(failed.len(), 4);
    assert!(failed.iter().all(|e| e["program"] == "failing"));
    assert!(viewer.list("status=running").is_empty());
    assert!(viewer.list("program=failing&status=completed").is_empty());
    let since = all[2]["accepted_ms"].as_u64().expect("accepted_ms");
    let recent = viewer.list(&format!("since={since}"));
    let expected: Vec<&Value> = all
        .iter()
        .filter(|e| e["accepted_ms"].as_u64() >= Some(since))
        .collect();
    assert!(recent.len() >= 3, "{recent:?}");
    assert_eq!(recent.iter().collect::<Vec<_>>(), expected);

    // Pages of two until the cursor runs out: every execution exactly once.
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let query = match &cursor {
            Some(cursor) => format!("/api/executions?limit=2&cursor={cursor}"),
            None => "/api/executions?limit=2".to_owned(),
        };
        let (status, page) = viewer.get(&query);
        assert_eq!(status, 200, "{page}");
        let listed = page["executions"].as_array().expect("executions");
        assert!(listed.len() <= 2, "{page}");
        seen.extend(ids(listed));
        pages += 1;
        assert!(pages <= 8, "the listing does not end: {seen:?}");
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                break;
            }
        }
    }
    assert_eq!(seen, newest_first);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());

    // The same listing from the command line: a page and its cursor.
    let token = token.trim();
    let listed = work.eyeflow(&[
        "executions",
        "list",
        "--node",
        &url,
        "--token",
        token,
        "--program",
        "failing",
        "--limit",
        "3",
    ]);
    let page: Value = serde_json::from_str(&listed).expect("JSON page");
    let failing: Vec<String> = newest_first
        .iter()
        .filter(|id| failed.iter().any(|e| e["id"] == id.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        ids(page["executions"].as_array().expect("executions")),
        failing[..3]
    );
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let rest = work.eyeflow(&[
        "executions",
        "list",
        "--node",
        &url,
        "--token",
        token,
        "--program",
        "failing",
        "--cursor",
        cursor,
    ]);
    let rest: Value = serde_json::from_str(&rest).expect("JSON page");
    assert_eq!(
        ids(rest["executions"].as_array().expect("executions")),
        failing[3..]
    );

    // Bad parameters: 400 saying what is wrong.
    assert!(viewer.refused("limit=501").contains("1 to 500"));
    assert!(viewer.refused("limit=0").contains("1 to 500"));
    let status = viewer.refused("status=done");
    assert!(
        status.contains("`done`") && status.contains("awaiting_approval, ambiguous, completed"),
        "{status}"
    );
    assert!(
        viewer
            .refused("program=Not%20An%20Id")
            .starts_with("program")
    );
    assert!(viewer.refused("cursor=page-2").contains("cursor"));
    assert!(viewer.refused("since=yesterday").contains("since"));
    assert!(viewer.refused("stauts=failed").contains("stauts"));
    work.stop(node);
}
