//! The node's HTTP API (actix-web, JSON): programs, events, executions, approvals, audit,
//! plugins, metrics and health, behind bearer tokens with roles. One route table
//! (`routes.rs`) drives the router, the role check and the OpenAPI document, so the three
//! cannot disagree.

pub mod auth;
mod error;
mod handlers;
mod openapi;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, web};

pub use auth::{Role, TokenKey};
pub use error::ApiError;
pub use openapi::document as openapi_document;

use crate::node::Node;
use crate::{Error, Result};

/// How the API serves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Listen address (port 0 = any free port).
    pub listen: SocketAddr,
    /// Largest JSON or text body, bytes.
    pub max_body_bytes: usize,
    /// Largest program or plugin package upload, bytes.
    pub max_upload_bytes: usize,
    /// HTTP worker threads.
    pub workers: usize,
    /// The node's public key, to check the signatures of audit checkpoints in
    /// `/api/audit/verify`.
    pub audit_key: Option<ed25519_dalek::VerifyingKey>,
}

/// What the handlers share.
pub(crate) struct ApiState {
    pub(crate) node: Node,
    pub(crate) tokens: TokenKey,
    pub(crate) config: ApiConfig,
    /// Whether the node takes new work (false once a drain started).
    pub(crate) accepting: std::sync::atomic::AtomicBool,
    /// The API's OpenAPI document (built from the route table at start).
    pub(crate) openapi: serde_json::Value,
}

/// A running API server.
pub struct RunningApi {
    addr: SocketAddr,
    handle: ServerHandle,
    state: Arc<ApiState>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningApi {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests (new events are refused with 503 while in-flight requests
    /// finish), then stops the server.
    pub fn stop(mut self) {
        self.state
            .accepting
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let handle = self.handle.clone();
        let stopped = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(handle.stop(true));
        });
        let _ = stopped.join();
        if let Some(thread) = self.thread.take()
            && let Ok(Err(e)) = thread.join()
        {
            tracing::error!("HTTP server ended with an error: {e}");
        }
    }
}

/// Starts serving `node` on its own threads.
pub fn start(node: Node, tokens: TokenKey, config: ApiConfig) -> Result<RunningApi> {
    let state = Arc::new(ApiState {
        node,
        tokens,
        config: config.clone(),
        accepting: std::sync::atomic::AtomicBool::new(true),
        openapi: openapi::document(),
    });
    let data = web::Data::from(state.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread =
        std::thread::Builder::new()
            .name("eyeflow-api".to_owned())
            .spawn(move || {
                // The server is not Send: it is built, bound and run on this thread.
                actix_web::rt::System::new().block_on(async move {
                    let (addr, server) = match bind(data, &config) {
                        Ok(bound) => bound,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = ready_tx.send(addr.map(|a| (a, server.handle())).ok_or_else(|| {
                        Error::Node {
                            reason: "the HTTP server bound no address".to_owned(),
                        }
                    }));
                    server.await
                })
            })
            .map_err(Error::io("(API thread)"))?;
    let (addr, handle) = ready_rx.recv().map_err(|_| Error::Node {
        reason: "the HTTP server thread ended before serving".to_owned(),
    })??;
    Ok(RunningApi {
        addr,
        handle,
        state,
        thread: Some(thread),
    })
}

/// Builds and binds the server: its first address, and the server to run.
fn bind(
    data: web::Data<ApiState>,
    config: &ApiConfig,
) -> Result<(Option<SocketAddr>, actix_web::dev::Server)> {
    let server = HttpServer::new(move || {
        let (query, path, json) = error::extractor_configs();
        let mut app = App::new()
            .app_data(data.clone())
            .app_data(query)
            .app_data(path)
            .app_data(json)
            .wrap(from_fn(authorize))
            .default_service(web::to(handlers::no_route));
        for (path, routes) in routes::by_path() {
            let mut resource = web::resource(path);
            for route in routes {
                resource = resource.route((route.make)());
            }
            app = app.service(resource.default_service(web::to(handlers::method_not_allowed)));
        }
        app
    })
    .workers(config.workers.max(1))
    .disable_signals()
    .bind(config.listen)
    .map_err(|e| Error::BadConfig {
        what: "[api] listen".to_owned(),
        reason: format!("cannot listen on {}: {e}", config.listen),
    })?;
    Ok((server.addrs().first().copied(), server.run()))
}

/// The bearer-token check: the route table says which role a route needs.
async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> std::result::Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let needed = routes::required_role(req.method(), req.path());
    if let Some(needed) = needed {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let role = match (state, token) {
            (Some(state), Some(token)) => state.tokens.check(token),
            _ => None,
        };
        let refusal = match role {
            None => Some(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required (eyeflow tokens issue --role ROLE)",
            )),
            Some(role) if role < needed => Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs the {} role; the token has {}",
                    needed.name(),
                    role.name()
                ),
            )),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            let response = actix_web::ResponseError::error_response(&refusal);
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    next.call(req).await.map(|r| r.map_into_left_body())
}
