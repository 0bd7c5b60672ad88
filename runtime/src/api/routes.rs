//! The route table: method, path pattern, role, request body and summary of every endpoint,
//! with the handler it runs. The router, the role check and the OpenAPI document are all
//! built from it.

use actix_web::http::Method;
use actix_web::{Route, web};

use super::auth::Role;
use super::handlers as h;

/// What a route takes as its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// No body.
    Empty,
    /// A JSON document.
    Json,
    /// Text (a YAML rule).
    Text,
    /// Bytes (a signed program, a plugin package).
    Binary,
}

/// One endpoint.
pub(crate) struct Spec {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    /// Role needed; `None` = no token needed.
    pub(crate) role: Option<Role>,
    pub(crate) body: Body,
    /// Success status.
    pub(crate) ok: u16,
    pub(crate) summary: &'static str,
    /// Query parameters: name, type (`string` or `integer`) and description.
    pub(crate) query: &'static [Query],
    pub(crate) make: fn() -> Route,
}

/// One query parameter: name, OpenAPI type and description.
pub(crate) type Query = (&'static str, &'static str, &'static str);

impl Spec {
    /// This endpoint taking the query parameters `query`.
    fn with_query(self, query: &'static [Query]) -> Self {
        Self { query, ..self }
    }
}

/// Query parameters of `GET /api/executions`.
const LIST_EXECUTIONS: &[Query] = &[
    (
        "program",
        "string",
        "only the executions of this program id",
    ),
    (
        "status",
        "string",
        "only those in this status: running, awaiting_approval, ambiguous, completed, failed or rejected",
    ),
    (
        "since",
        "integer",
        "only those accepted at or after this time, Unix milliseconds",
    ),
    ("limit", "integer", "page size, 1 to 500 (default 50)"),
    (
        "cursor",
        "string",
        "the `next_cursor` of the previous page (opaque)",
    ),
];

/// Query parameters of `GET /api/audit`.
const AUDIT_ENTRIES: &[Query] = &[
    ("from", "integer", "first entry index (default 0)"),
    (
        "limit",
        "integer",
        "entries at most (default 100, max 1000)",
    ),
];

/// Every endpoint of the API.
pub(crate) fn table() -> Vec<Spec> {
    use Body::{Binary, Empty, Json, Text};
    use Role::{Admin, Operator, Viewer};
    let spec = |method: Method,
                path: &'static str,
                role: Option<Role>,
                body: Body,
                ok: u16,
                summary: &'static str,
                make: fn() -> Route| Spec {
        method,
        path,
        role,
        body,
        ok,
        summary,
        query: &[],
        make,
    };
    vec![
        spec(
            Method::POST,
            "/api/rules/compile",
            Some(Operator),
            Text,
            200,
            "Compile a YAML rule; returns the unsigned program (base64) or the error with its line",
            || web::post().to(h::compile),
        ),
        spec(
            Method::POST,
            "/api/programs",
            Some(Admin),
            Binary,
            201,
            "Deploy a signed program (protobuf bytes); the same bytes again change nothing, other bytes under a deployed id and version get 409",
            || web::post().to(h::deploy),
        ),
        spec(
            Method::GET,
            "/api/programs",
            Some(Viewer),
            Empty,
            200,
            "List deployed program versions: id, version, signer's key_id, sha256 of the signed bytes, active",
            || web::get().to(h::programs),
        ),
        spec(
            Method::GET,
            "/api/programs/{id}",
            Some(Viewer),
            Empty,
            200,
            "The deployed versions of a program: version, signer's key_id, sha256 of the signed bytes, active",
            || web::get().to(h::program),
        ),
        spec(
            Method::DELETE,
            "/api/programs/{id}",
            Some(Admin),
            Empty,
            200,
            "Undeploy a program (every version, or ?version=X); refused while executions are unfinished",
            || web::delete().to(h::undeploy),
        ),
        spec(
            Method::POST,
            "/api/events/{source}",
            Some(Operator),
            Json,
            202,
            "Send an event to the programs with a webhook trigger on {source}; X-Event-Id makes redelivery safe",
            || web::post().to(h::event),
        ),
        spec(
            Method::GET,
            "/api/executions",
            Some(Viewer),
            Empty,
            200,
            "List executions, newest first: ?program=ID, ?status=running|awaiting_approval|ambiguous|completed|failed|rejected, ?since=UNIX_MS, ?limit=N (default 50, max 500), ?cursor= (the previous page's next_cursor)",
            || web::get().to(h::executions),
        )
        .with_query(LIST_EXECUTIONS),
        spec(
            Method::GET,
            "/api/executions/summary",
            Some(Viewer),
            Empty,
            200,
            "Journal counts: accepted executions, pending, finished, steps, in flight",
            || web::get().to(h::executions_summary),
        ),
        spec(
            Method::GET,
            "/api/executions/{id}",
            Some(Viewer),
            Empty,
            200,
            "Status, trace and audit hashes of an execution (404 `expired` once retention deleted it)",
            || web::get().to(h::execution),
        ),
        spec(
            Method::POST,
            "/api/executions/{id}/approvals/{instruction}",
            Some(Operator),
            Json,
            202,
            "Approve or reject a paused instruction: {\"approve\": true|false}",
            || web::post().to(h::approve),
        ),
        spec(
            Method::GET,
            "/api/audit",
            Some(Viewer),
            Empty,
            200,
            "Audit entries from ?from=INDEX (default 0), at most ?limit=N (default 100, max 1000)",
            || web::get().to(h::audit),
        )
        .with_query(AUDIT_ENTRIES),
        spec(
            Method::GET,
            "/api/audit/verify",
            Some(Viewer),
            Empty,
            200,
            "Recompute the audit chain; names the first broken entry",
            || web::get().to(h::audit_verify),
        ),
        spec(
            Method::GET,
            "/api/actors",
            Some(Viewer),
            Empty,
            200,
            "The supervision tree: one {path, kind, restarts, program?, version?} per live actor",
            || web::get().to(h::actors),
        ),
        spec(
            Method::POST,
            "/api/actors/restart",
            Some(Admin),
            Json,
            202,
            "Crash the actor at {\"path\": ...} as a bug would, so that its supervisor restarts it",
            || web::post().to(h::restart_actor),
        ),
        spec(
            Method::POST,
            "/api/audit/checkpoint",
            Some(Operator),
            Empty,
            201,
            "Sign a checkpoint of the audit chain's head now; keep it outside the node for `eyeflow audit verify --checkpoint`",
            || web::post().to(h::audit_checkpoint),
        ),
        spec(
            Method::POST,
            "/api/plugins",
            Some(Admin),
            Binary,
            201,
            "Install a signed plugin package (.efp)",
            || web::post().to(h::plugin_install),
        ),
        spec(
            Method::GET,
            "/api/plugins",
            Some(Viewer),
            Empty,
            200,
            "List installed plugin versions with their state and grant",
            || web::get().to(h::plugins),
        ),
        spec(
            Method::POST,
            "/api/plugins/{id}/{version}/revoke",
            Some(Admin),
            Empty,
            200,
            "Revoke a plugin version",
            || web::post().to(h::plugin_revoke),
        ),
        spec(
            Method::POST,
            "/api/plugins/{id}/transfer",
            Some(Admin),
            Json,
            200,
            "Move a plugin id to another publisher key ({\"key_id\"}); clears its grant; audited",
            || web::post().to(h::plugin_transfer),
        ),
        spec(
            Method::GET,
            "/api/keys",
            Some(Viewer),
            Empty,
            200,
            "List the publisher keys the node trusts, revoked ones included",
            || web::get().to(h::keys),
        ),
        spec(
            Method::POST,
            "/api/keys",
            Some(Admin),
            Text,
            201,
            "Trust a publisher's public key (the NAME.pub file of `eyeflow keys gen`); audited",
            || web::post().to(h::key_trust),
        ),
        spec(
            Method::DELETE,
            "/api/keys/{id}",
            Some(Admin),
            Empty,
            200,
            "Revoke a publisher key at once: its programs and plugins are refused and its deployed programs take no new event; audited",
            || web::delete().to(h::key_revoke),
        ),
        spec(
            Method::POST,
            "/api/devices/{id}/programs",
            Some(Admin),
            Binary,
            201,
            "Deploy a signed program (≤ 8192 bytes) to field device {id} through the serial gateway; 201 when the device loaded it, 422 `refused` with the device's reason (it keeps its current program), 503 when it is not reachable",
            || web::post().to(h::device_deploy),
        ),
        spec(
            Method::POST,
            "/api/devices/{id}/events",
            Some(Operator),
            Json,
            202,
            "Run an event on field device {id}: a JSON object of scalars (nested objects become dotted fields); 202 once sent, its trace arrives in the audit chain",
            || web::post().to(h::device_event),
        ),
        spec(
            Method::GET,
            "/api/health",
            Some(Viewer),
            Empty,
            200,
            "The field devices: {id, status: up|down, hello, program, bad_frames, executions} each",
            || web::get().to(h::health),
        ),
        spec(
            Method::GET,
            "/metrics",
            Some(Viewer),
            Empty,
            200,
            "Prometheus metrics",
            || web::get().to(h::metrics),
        ),
        spec(
            Method::GET,
            "/healthz",
            None,
            Empty,
            200,
            "The process serves",
            || web::get().to(h::healthz),
        ),
        spec(
            Method::GET,
            "/readyz",
            None,
            Empty,
            200,
            "The node takes work: 503 while draining or when a backend is down",
            || web::get().to(h::readyz),
        ),
        spec(
            Method::GET,
            "/openapi.json",
            None,
            Empty,
            200,
            "This API's OpenAPI 3.0 document",
            || web::get().to(h::openapi),
        ),
    ]
}

/// The table grouped by path, in table order (one actix resource per path).
pub(crate) fn by_path() -> Vec<(&'static str, Vec<Spec>)> {
    let mut grouped: Vec<(&'static str, Vec<Spec>)> = Vec::new();
    for spec in table() {
        match grouped.iter_mut().find(|(path, _)| *path == spec.path) {
            Some((_, specs)) => specs.push(spec),
            None => grouped.push((spec.path, vec![spec])),
        }
    }
    grouped
}

/// Whether `path` matches `pattern` (`{name}` matches one non-empty segment).
pub(crate) fn matches(pattern: &str, path: &str) -> bool {
    let mut got = path.split('/');
    for want in pattern.split('/') {
        match got.next() {
            Some(seg) if want.starts_with('{') && !seg.is_empty() => {}
            Some(seg) if seg == want => {}
            _ => return false,
        }
    }
    got.next().is_none()
}

/// The role a request needs: that of the route it matches; `None` for public routes and
/// for paths no route serves (they get 404/405 without revealing more).
pub(crate) fn required_role(method: &Method, path: &str) -> Option<Role> {
    let table = table();
    let on_path: Vec<&Spec> = table.iter().filter(|s| matches(s.path, path)).collect();
    // A literal pattern wins over one with parameters (`/api/audit/verify`).
    let best = |specs: Vec<&Spec>| -> Option<Role> {
        specs
            .iter()
            .find(|s| !s.path.contains('{'))
            .or_else(|| specs.first())
            .and_then(|s| s.role)
    };
    let same_method: Vec<&Spec> = on_path
        .iter()
        .copied()
        .filter(|s| s.method == method)
        .collect();
    if same_method.is_empty() {
        // Unknown method on a known path: the strictest role of that path, so a 405 is
        // only shown to callers who could use the path at all.
        return on_path.iter().filter_map(|s| s.role).min();
    }
    best(same_method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        assert!(matches("/api/programs/{id}", "/api/programs/valve-guard"));
        assert!(!matches("/api/programs/{id}", "/api/programs/"));
        assert!(!matches("/api/programs/{id}", "/api/programs/a/b"));
        assert!(matches("/api/audit/verify", "/api/audit/verify"));
        assert!(!matches("/api/audit", "/api/audit/verify"));
    }

    #[test]
    fn roles_come_from_the_table() {
        assert_eq!(required_role(&Method::GET, "/healthz"), None);
        assert_eq!(
            required_role(&Method::GET, "/api/programs"),
            Some(Role::Viewer)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/programs"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/events/orders"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role(&Method::GET, "/api/executions/summary"),
            Some(Role::Viewer)
        );
        assert_eq!(required_role(&Method::GET, "/nowhere"), None);
    }

    #[test]
    fn every_route_is_unique() {
        let table = table();
        for (i, a) in table.iter().enumerate() {
            for b in &table[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} twice",
                    a.method,
                    b.path
                );
            }
        }
    }
}
