//! The endpoint handlers. Node calls that touch the disk or the actors run on actix's
//! blocking pool; bodies are read with explicit size limits (413 beyond them).

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine;
use eyeflow_actors::ports::Accepted;
use eyeflow_ir::pb::TriggerKind;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::journal::{ExecutionCursor, ExecutionFilter, ExecutionStatus};
use crate::plugins::{GrantChange, Installed, Package};

type State = web::Data<ApiState>;
type Reply = Result<HttpResponse, ApiError>;

/// Runs `f` on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> crate::Result<T> + Send + 'static,
    T: Send + 'static,
{
    web::block(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker pool: {e}")))?
        .map_err(ApiError::from)
}

/// The request body, refused with 413 beyond `limit` bytes.
async fn read_body(payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ApiError::bad_request(format!("cannot read the body: {e}"))),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes"),
        )),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    state: &State,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let bytes = read_body(payload, state.config.max_body_bytes).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not the expected JSON: {e}")))
}

/// Refuses with 415 a body that is not declared `application/json` (UTF-8, the only
/// charset JSON has).
fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = match req.mime_type() {
        Ok(Some(mime)) => {
            mime.type_() == actix_web::mime::APPLICATION
                && mime.subtype() == actix_web::mime::JSON
                && mime.suffix().is_none()
                && mime
                    .get_param(actix_web::mime::CHARSET)
                    .is_none_or(|c| c == actix_web::mime::UTF_8)
        }
        _ => false,
    };
    if is_json {
        return Ok(());
    }
    Err(ApiError::unsupported_media_type(match declared {
        Some(declared) => {
            format!("the body must be `application/json` (UTF-8); the request says `{declared}`")
        }
        None => "the body must be `application/json` (UTF-8); the request has no Content-Type"
            .to_owned(),
    }))
}

fn accepting(state: &State) -> Result<(), ApiError> {
    if state.accepting.load(Ordering::SeqCst) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the node is shutting down and takes no new work",
        ))
    }
}

/// How long `POST /api/rules/compile` waits for a compile.
const COMPILE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Query of `POST /api/rules/compile`.
#[derive(Deserialize)]
pub(crate) struct CompileQuery {
    name: Option<String>,
}

pub(crate) async fn compile(
    state: State,
    query: web::Query<CompileQuery>,
    payload: web::Payload,
) -> Reply {
    let bytes = read_body(payload, state.config.max_body_bytes).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the rule is not UTF-8 text"))?;
    let options = eyeflow_compiler::CompileOptions {
        source_name: query.name.clone().unwrap_or_else(|| "rule.yaml".to_owned()),
        compiled_by: "api".to_owned(),
        compiled_at: i64::try_from(crate::now_ms() / 1000).unwrap_or(i64::MAX),
    };
    // Off the HTTP workers (a compile is CPU work on operator input), within a time limit:
    // the expression limits bound the work, the deadline bounds the wait.
    let compiling = web::block(move || eyeflow_compiler::compile(&text, &options));
    let program = match actix_web::rt::time::timeout(COMPILE_DEADLINE, compiling).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "compile_timeout",
                format!(
                    "the rule did not compile within {} s; simplify its expressions",
                    COMPILE_DEADLINE.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => return Err(ApiError::internal(format!("worker pool: {e}"))),
        Ok(Ok(compiled)) => compiled.map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "compile_error",
                e.to_string(),
            )
        })?,
    };
    let requires: Vec<Value> = program
        .required_capabilities
        .iter()
        .map(|c| json!({ "capability": c.capability_id, "version": c.version_req }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "program_id": program.program_id,
        "version": program.version,
        "instructions": program.instructions.len(),
        "requires": requires,
        "signed": false,
        "ir_base64": base64::engine::general_purpose::STANDARD.encode(eyeflow_ir::encode(&program)),
    })))
}

pub(crate) async fn deploy(state: State, payload: web::Payload) -> Reply {
    let bytes = read_body(payload, state.config.max_upload_bytes).await?;
    let node = state.node.clone();
    let info = web::block(move || node.deploy(&bytes))
        .await
        .map_err(|e| ApiError::internal(format!("worker pool: {e}")))?
        .map_err(deploy_error)?;
    Ok(HttpResponse::Created().json(program_json(&info, None)))
}

/// A program id or version outside the grammar is the request's fault (400, naming the
/// field); every other refusal keeps its usual status.
fn deploy_error(e: crate::Error) -> ApiError {
    if let crate::Error::Ir(eyeflow_ir::Error::InvalidProgramField {
        field: "program_id" | "version",
        ..
    }) = &e
    {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_program_id", e.to_string());
    }
    ApiError::from(e)
}

/// One deployed version as the API shows it; `active` when known.
fn program_json(p: &crate::node::ProgramInfo, active: Option<bool>) -> Value {
    let mut body = json!({
        "id": p.id,
        "version": p.version,
        "key_id": p.key_id,
        "sha256": p.sha256,
        "instructions": p.instructions,
    });
    if let Some(active) = active {
        body["active"] = json!(active);
    }
    body
}

/// Deployed versions, each with whether it is its id's active one.
async fn listed_programs(state: &State) -> Result<Vec<Value>, ApiError> {
    let node = state.node.clone();
    let (all, active) = blocking(move || Ok((node.programs(), node.active_programs()))).await?;
    Ok(all
        .iter()
        .map(|p| {
            let is_active = active
                .iter()
                .any(|a| a.id() == p.id && a.version() == p.version);
            program_json(p, Some(is_active))
        })
        .collect())
}

pub(crate) async fn programs(state: State) -> Reply {
    let listed = listed_programs(&state).await?;
    Ok(HttpResponse::Ok().json(json!({ "programs": listed })))
}

pub(crate) async fn program(state: State, id: web::Path<String>) -> Reply {
    let id = id.into_inner();
    let versions: Vec<Value> = listed_programs(&state)
        .await?
        .into_iter()
        .filter(|p| p["id"] == id.as_str())
        .collect();
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("program {id} is not deployed")));
    }
    Ok(HttpResponse::Ok().json(json!({ "id": id, "versions": versions })))
}

/// Query of `DELETE /api/programs/{id}`.
#[derive(Deserialize)]
pub(crate) struct VersionQuery {
    version: Option<String>,
}

pub(crate) async fn undeploy(
    state: State,
    id: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Reply {
    let node = state.node.clone();
    let (id, version) = (id.into_inner(), query.into_inner().version);
    let (pid, pversion) = (id.clone(), version.clone());
    let removed = blocking(move || node.undeploy(&pid, pversion.as_deref())).await?;
    if removed == 0 {
        return Err(ApiError::not_found(format!(
            "program {id}{} is not deployed",
            version.map(|v| format!("@{v}")).unwrap_or_default()
        )));
    }
    Ok(HttpResponse::Ok().json(json!({ "id": id, "removed_versions": removed })))
}

pub(crate) async fn event(
    state: State,
    req: HttpRequest,
    source: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    accepting(&state)?;
    require_json(&req)?;
    let body: Value = read_json(&state, payload).await?;
    let event_id = match req.headers().get("x-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::bad_request("X-Event-Id must be 1 to 200 visible characters")
            })?,
        None => random_id()?,
    };
    let node = state.node.clone();
    let source = source.into_inner();
    let (src, id) = (source.clone(), event_id.clone());
    let routed = blocking(move || node.ingest(TriggerKind::Webhook, &src, &id, &body)).await?;
    if routed.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_listener",
            format!("no deployed program has a webhook trigger on `{source}`"),
        ));
    }
    let routed: Vec<Value> = routed
        .iter()
        .map(|r| {
            let (execution_id, duplicate) = match &r.accepted {
                Some(Accepted::New { execution_id }) => (Some(execution_id.clone()), false),
                Some(Accepted::Duplicate { execution_id }) => (Some(execution_id.clone()), true),
                None => (None, false),
            };
            json!({
                "program": r.program_id,
                "version": r.program_version,
                "execution_id": execution_id,
                "duplicate": duplicate,
                "filtered_out": r.accepted.is_none(),
                "filter_error": r.filter_error,
            })
        })
        .collect();
    Ok(HttpResponse::Accepted().json(json!({ "event_id": event_id, "routed": routed })))
}

fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

pub(crate) async fn executions_summary(state: State) -> Reply {
    let node = state.node.clone();
    let counts = blocking(move || node.journal().counts()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "executions": counts.executions,
        "pending": counts.pending,
        "finished": counts.finished,
        "steps": counts.steps,
        "in_flight": state.node.in_flight(),
    })))
}

/// Executions listed when `limit` is not given.
const DEFAULT_LIST_LIMIT: usize = 50;
/// Largest `limit` of `GET /api/executions`.
const MAX_LIST_LIMIT: usize = 500;
/// Executions one listing request examines at most (filters may skip most of them).
const LIST_SCAN_BUDGET: usize = 5000;

/// Query of `GET /api/executions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    program: Option<String>,
    status: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl ListQuery {
    /// The filter, cursor and limit asked for, or a 400 naming the bad parameter.
    fn parse(self) -> Result<(ExecutionFilter, Option<ExecutionCursor>, usize), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit {limit} is out of range; expected 1 to {MAX_LIST_LIMIT} (default {DEFAULT_LIST_LIMIT})"
            )));
        }
        if let Some(program) = &self.program {
            eyeflow_ir::validate::check_program_id(program)
                .map_err(|reason| ApiError::bad_request(format!("program {reason}")))?;
        }
        let status = match &self.status {
            None => None,
            Some(name) => Some(ExecutionStatus::parse(name).ok_or_else(|| {
                let allowed: Vec<&str> = ExecutionStatus::ALL.iter().map(|s| s.name()).collect();
                ApiError::bad_request(format!(
                    "unknown status `{name}`; expected one of {}",
                    allowed.join(", ")
                ))
            })?),
        };
        let cursor = match &self.cursor {
            None => None,
            Some(text) => Some(ExecutionCursor::parse(text).ok_or_else(|| {
                ApiError::bad_request(
                    "malformed cursor; expected the `next_cursor` of a previous answer",
                )
            })?),
        };
        let filter = ExecutionFilter {
            program: self.program,
            status,
            since_ms: self.since,
        };
        Ok((filter, cursor, limit))
    }
}

pub(crate) async fn executions(state: State, query: web::Query<ListQuery>) -> Reply {
    let (filter, cursor, limit) = query.into_inner().parse()?;
    let node = state.node.clone();
    let page = blocking(move || {
        node.journal()
            .list_executions(&filter, cursor.as_ref(), limit, LIST_SCAN_BUDGET)
    })
    .await?;
    let executions: Vec<Value> = page
        .executions
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "program": e.program,
                "version": e.version,
                "status": e.status.name(),
                "accepted_ms": e.accepted_ms,
                "finished_ms": e.finished_ms,
                "source": e.source,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "executions": executions,
        "next_cursor": page.next_cursor.as_ref().map(ExecutionCursor::as_str),
    })))
}

pub(crate) async fn execution(state: State, id: web::Path<String>) -> Reply {
    let node = state.node.clone();
    let id = id.into_inner();
    let lookup = id.clone();
    let found = blocking(move || {
        let view = node.journal().execution(&lookup)?;
        let audit = match &view {
            Some(_) => node.audit().of_execution(&lookup)?,
            None => Vec::new(),
        };
        Ok(view.map(|v| (v, audit)))
    })
    .await?;
    let Some(((event, steps, outcome), audit)) = found else {
        if state.node.journal().was_accepted(&id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "expired",
                format!(
                    "execution {id} expired: it finished longer ago than the retention \
                     window ([retention] executions_secs) and was deleted"
                ),
            ));
        }
        return Err(ApiError::not_found(format!("execution {id} not found")));
    };
    let status = ExecutionStatus::of(outcome.as_ref(), steps.last()).name();
    let audit: Vec<Value> = audit
        .iter()
        .map(|e| json!({ "index": e.index, "hash": hex::encode(e.hash), "instruction_id": e.entry.instruction_id, "outcome": e.entry.outcome }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "execution_id": id,
        "status": status,
        "event": event,
        "steps": steps,
        "outcome": outcome,
        "audit": audit,
    })))
}

/// Body of an approval.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    approve: bool,
}

pub(crate) async fn approve(
    state: State,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Reply {
    accepting(&state)?;
    let decision: Decision = read_json(&state, payload).await?;
    let (execution_id, instruction) = path.into_inner();
    let node = state.node.clone();
    let (e, i) = (execution_id.clone(), instruction.clone());
    blocking(move || node.decide(&e, &i, decision.approve)).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "execution_id": execution_id,
        "instruction": instruction,
        "decision": if decision.approve { "approved" } else { "rejected" },
    })))
}

/// Query of `GET /api/audit`.
#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

pub(crate) async fn audit(state: State, query: web::Query<AuditQuery>) -> Reply {
    let node = state.node.clone();
    let from = query.from.unwrap_or(0);
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let (entries, head) = blocking(move || {
        let entries = node.audit().entries(from, limit)?;
        Ok((entries, node.audit().head()))
    })
    .await?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| json!({ "index": e.index, "hash": hex::encode(e.hash), "entry": e.entry }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "entries": entries,
        "next": head.0,
        "head_hash": hex::encode(head.1),
    })))
}

pub(crate) async fn actors(state: State) -> Reply {
    let node = state.node.clone();
    let tree = blocking(move || node.actors()).await?;
    Ok(HttpResponse::Ok().json(tree))
}

/// Body of `POST /api/actors/restart`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestartActor {
    path: String,
}

pub(crate) async fn restart_actor(state: State, payload: web::Payload) -> Reply {
    let asked: RestartActor = read_json(&state, payload).await?;
    let node = state.node.clone();
    let path = asked.path.clone();
    blocking(move || node.restart_actor(&path)).await?;
    Ok(HttpResponse::Accepted().json(json!({ "restarting": asked.path })))
}

pub(crate) async fn audit_checkpoint(state: State) -> Reply {
    let node = state.node.clone();
    let checkpoint = blocking(move || node.release_checkpoint()).await?;
    match checkpoint {
        Some(checkpoint) => {
            Ok(HttpResponse::Created().json(checkpoint.to_json(state.node.node_id())))
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no-checkpoint",
            "no checkpoint to sign: the audit chain is empty or the node has no audit key",
        )),
    }
}

pub(crate) async fn audit_verify(state: State) -> Reply {
    let node = state.node.clone();
    let key = state.config.audit_key;
    let verdict = blocking(move || crate::audit::verify(node.store(), key.as_ref())).await?;
    Ok(HttpResponse::Ok().json(match verdict {
        Ok(report) => json!({
            "ok": true,
            "first": report.first,
            "starting_checkpoint": report.first.checked_sub(1),
            "entries": report.entries,
            "head_hash": hex::encode(report.head_hash),
            "checkpoints": report.checkpoints,
            "signatures_checked": report.signatures_checked,
        }),
        Err(broken) => json!({
            "ok": false,
            "broken": { "index": broken.index, "reason": broken.reason },
            "message": broken.to_string(),
        }),
    }))
}

/// Query of `POST /api/plugins`: comma-separated grants given with the installation.
#[derive(Deserialize)]
pub(crate) struct GrantQuery {
    grant_http: Option<String>,
    grant_secret: Option<String>,
}

fn listed(value: Option<&str>) -> impl Iterator<Item = String> + '_ {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub(crate) async fn plugin_install(
    state: State,
    query: web::Query<GrantQuery>,
    payload: web::Payload,
) -> Reply {
    let bytes = read_body(payload, state.config.max_upload_bytes).await?;
    let changes: Vec<GrantChange> = listed(query.grant_http.as_deref())
        .map(GrantChange::AllowHttp)
        .chain(listed(query.grant_secret.as_deref()).map(GrantChange::AllowSecret))
        .collect();
    let node = state.node.clone();
    let (installed, grant, unselected) = blocking(move || {
        let package = Package::from_bytes(&bytes, "uploaded package")?;
        let installed = node.plugins().install(&package)?;
        let unselected = node.unselected(&package.manifest);
        let grant = if changes.is_empty() {
            None
        } else {
            Some(
                node.plugins()
                    .change_grant(&package.manifest.id, &changes)?,
            )
        };
        Ok((installed, grant, unselected))
    })
    .await?;
    let mut body = match installed {
        Installed::New { label, key_id } => {
            json!({ "plugin": label, "key_id": key_id, "new": true })
        }
        Installed::Unchanged { label } => json!({ "plugin": label, "new": false }),
    };
    body["grant"] = json!(grant);
    // Installed, but some deployed programs' requirements do not select this version.
    body["unselected"] = json!(unselected);
    Ok(HttpResponse::Created().json(body))
}

pub(crate) async fn plugins(state: State) -> Reply {
    let node = state.node.clone();
    let listed = blocking(move || node.plugins().list()).await?;
    let plugins: Vec<Value> = listed
        .iter()
        .map(|p| {
            json!({
                "plugin": p.entry.manifest.label(),
                "entry": p.entry,
                "runnable": p.runnable.is_ok(),
                "problem": p.runnable.as_ref().err(),
                "grant": p.grant,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "plugins": plugins })))
}

pub(crate) async fn plugin_revoke(state: State, path: web::Path<(String, String)>) -> Reply {
    let (id, version) = path.into_inner();
    let parsed = semver::Version::parse(&version)
        .map_err(|e| ApiError::bad_request(format!("version `{version}` is not semver: {e}")))?;
    let node = state.node.clone();
    let pid = id.clone();
    blocking(move || node.plugins().revoke(&pid, &parsed)).await?;
    Ok(HttpResponse::Ok().json(json!({ "plugin": format!("{id}@{version}"), "revoked": true })))
}

/// Body of `POST /api/plugins/{id}/transfer`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferBody {
    /// Id of the new publisher's key.
    key_id: String,
}

pub(crate) async fn plugin_transfer(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    require_json(&req)?;
    let body: TransferBody = read_json(&state, payload).await?;
    let id = path.into_inner();
    let node = state.node.clone();
    let transfer =
        blocking(move || node.plugins().transfer(&id, &body.key_id, node.audit())).await?;
    Ok(HttpResponse::Ok().json(json!({
        "plugin": transfer.id,
        "from": transfer.from,
        "to": transfer.to,
        "grant_cleared": true,
    })))
}

pub(crate) async fn metrics(state: State) -> Reply {
    let node = state.node.clone();
    let text = blocking(move || Ok(render_metrics(&node))).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

pub(crate) async fn device_deploy(
    state: State,
    id: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    let bytes = read_body(payload, state.config.max_upload_bytes).await?;
    let node = state.node.clone();
    let id = id.into_inner();
    let device = id.clone();
    let answer = blocking(move || node.deploy_to_device(&device, &bytes)).await?;
    match answer {
        crate::devices::Deployment::Loaded { .. } => {
            Ok(HttpResponse::Created().json(json!({ "device": id, "deployment": answer })))
        }
        crate::devices::Deployment::Refused { reason } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            format!("device `{id}` refused the program: {reason}; it keeps its current program"),
        )),
    }
}

pub(crate) async fn device_event(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    accepting(&state)?;
    require_json(&req)?;
    let body: Value = read_json(&state, payload).await?;
    let node = state.node.clone();
    let id = id.into_inner();
    let device = id.clone();
    blocking(move || node.run_on_device(&device, &body)).await?;
    Ok(HttpResponse::Accepted().json(json!({ "device": id, "sent": true })))
}

pub(crate) async fn health(state: State) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "devices": state.node.devices().health() }))
}

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(state: State) -> Reply {
    let node = state.node.clone();
    let (backends, down) =
        blocking(move || Ok((node.backend_health(), node.backends_down()))).await?;
    let draining = !state.accepting.load(Ordering::SeqCst);
    if draining || !down.is_empty() {
        let why = if draining {
            "the node is draining".to_owned()
        } else {
            format!("backend(s) down: {}", down.join(", "))
        };
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            why,
        ));
    }
    let backends: serde_json::Map<String, Value> = backends
        .into_iter()
        .map(|(name, up)| (name.to_owned(), Value::Bool(up)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "ready": true, "backends": backends })))
}

pub(crate) async fn openapi(state: State) -> HttpResponse {
    HttpResponse::Ok().json(&state.openapi)
}

pub(crate) async fn no_route(req: HttpRequest) -> Reply {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no endpoint {} {} (see /openapi.json)",
            req.method(),
            req.path()
        ),
    ))
}

pub(crate) async fn method_not_allowed(req: HttpRequest) -> Reply {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not served on {} (see /openapi.json)",
            req.method(),
            req.path()
        ),
    ))
}

pub(crate) async fn keys(state: State) -> Reply {
    let node = state.node.clone();
    let keys = blocking(move || node.keys()).await?;
    let keys: Vec<Value> = keys
        .into_iter()
        .map(|(id, revoked)| json!({ "key_id": id, "revoked": revoked }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "keys": keys })))
}

pub(crate) async fn key_trust(state: State, payload: web::Payload) -> Reply {
    let bytes = read_body(payload, 4096).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the key file is not UTF-8 text"))?;
    let key = eyeflow_ir::keys::parse_verifying_key("the uploaded key", &text)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let node = state.node.clone();
    let id = blocking(move || node.trust(&key)).await?;
    Ok(HttpResponse::Created().json(json!({ "key_id": id })))
}

pub(crate) async fn key_revoke(state: State, path: web::Path<String>) -> Reply {
    let id = path.into_inner();
    let node = state.node.clone();
    let key = id.clone();
    if !blocking(move || node.revoke(&key)).await? {
        return Err(ApiError::not_found(format!(
            "key {id} is not in the node's keyring"
        )));
    }
    Ok(HttpResponse::Ok().json(json!({ "key_id": id, "revoked": true })))
}

/// Sets the scrape-time gauges of `node` and renders every metric.
fn render_metrics(node: &crate::node::Node) -> String {
    let handle = crate::metrics::handle();
    for (level, depth) in node.queue_depth() {
        metrics::gauge!("eyeflow_queue_depth", "priority" => level.to_string()).set(depth as f64);
    }
    metrics::gauge!("eyeflow_executions_in_flight").set(node.in_flight() as f64);
    for (backend, up) in node.backend_health() {
        metrics::gauge!("eyeflow_backend_up", "backend" => backend).set(if up { 1.0 } else { 0.0 });
    }
    for device in node.devices().health() {
        let up = if device.status == "up" { 1.0 } else { 0.0 };
        metrics::gauge!("eyeflow_device_up", "device" => device.id).set(up);
    }
    for (name, value) in node.backlogs() {
        metrics::gauge!("eyeflow_outbox_backlog", "outbox" => name).set(value as f64);
    }
    handle.render()
}
