//! The public REST API: one warp filter hands every request to [`dispatch`], which takes the
//! credentials out of the request, finds the route in the table ([`router`]), authenticates the
//! caller once for every route, runs the handler and turns every error into the JSON error
//! shape. The API is the mapping from HTTP to the domain modules and back; the errors of the
//! layers below become [`ApiError`] here and nowhere else.
//!
//! Invariant: handlers never read credentials; the dispatcher removes them from the request
//! before a handler runs and hands over the authenticated
//! [`Principal`](crate::auth::Principal). Handlers use `crate::auth` for ownership checks.

pub mod agent_tasks;
pub mod agents;
pub mod databases;
pub mod error;
pub mod health;
pub mod instances;
pub mod list;
pub mod nodes;
pub mod openapi;
pub mod operations;
pub mod packages;
pub mod quota;
pub mod request;
pub mod router;
pub mod tasks;
pub mod users;
pub mod vhosts;
pub mod web_services;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use warp::Filter;

pub use error::ApiError;
pub use request::ApiRequest;
pub use router::{Access, Route, RouteTable};

use crate::App;
use crate::auth::{self, PresentedCredentials, Principal};

/// What a handler answers with.
pub type Reply = warp::reply::Response;
/// What a handler returns.
pub type ApiResult = Result<Reply, ApiError>;

/// A JSON response with a status.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Reply::new(body.into());
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => ApiError::internal(error).into_response(),
    }
}

/// `200` with a JSON body.
pub fn ok<T: Serialize>(value: &T) -> ApiResult {
    Ok(json_response(StatusCode::OK, value))
}

/// `201` with a JSON body.
pub fn created<T: Serialize>(value: &T) -> ApiResult {
    Ok(json_response(StatusCode::CREATED, value))
}

/// `204` with no body.
pub fn no_content() -> ApiResult {
    let mut response = Reply::new(Bytes::new().into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// The address a request came from, set by the HTTPS accept loop (the plain-HTTP server of
/// warp sets its own).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub SocketAddr);

/// Reads the body up to `limit` bytes; `Err(())` when it is longer.
async fn read_body<S, B>(mut body: S, limit: usize) -> Result<Result<Bytes, ()>, warp::Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: warp::Buf,
{
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| warp::reject())?;
        if collected.len() + chunk.remaining() > limit {
            return Ok(Err(()));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            collected.extend_from_slice(piece);
            let length = piece.len();
            chunk.advance(length);
        }
    }
    Ok(Ok(collected.freeze()))
}

/// The warp filter serving the whole HTTP surface.
pub fn filter(
    app: Arc<App>,
) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let limit = app.config.max_body_bytes;
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::ext::optional::<PeerAddress>())
        .and(warp::body::stream())
        .and_then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  remote: Option<SocketAddr>,
                  peer: Option<PeerAddress>,
                  body| {
                let app = app.clone();
                async move {
                    let started = Instant::now();
                    let remote = peer.map(|peer| peer.0).or(remote);
                    let body = read_body(body, limit).await?;
                    let response = match body {
                        Ok(body) => {
                            let request = ApiRequest::new(
                                method,
                                path.as_str().to_string(),
                                &query,
                                headers,
                                body,
                                remote,
                            );
                            dispatch(&app, request, started).await
                        }
                        Err(()) => ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "body_too_large",
                            format!("the request body is larger than {limit} bytes"),
                        )
                        .into_response(),
                    };
                    Ok::<Reply, warp::Rejection>(response)
                }
            },
        )
        .recover(|_rejection: warp::Rejection| async {
            Ok::<Reply, Infallible>(
                ApiError::bad_request("the request could not be read").into_response(),
            )
        })
        .unify()
}

/// The caller of a route with the given access rule.
fn authenticate(
    app: &App,
    credentials: &PresentedCredentials,
    access: Access,
) -> Result<Option<Principal>, ApiError> {
    if access == Access::Public {
        return Ok(None);
    }
    if access == Access::MetricsToken {
        if let Some(token) = &app.config.limits.metrics_token {
            let given = credentials
                .authorization
                .as_deref()
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or("");
            if !auth::constant_time_equal(given.trim(), token) {
                return Err(ApiError::unauthorized(
                    "/metrics needs the metrics token as a Bearer credential",
                ));
            }
        }
        return Ok(None);
    }
    let principal = auth::identify(&app.store, credentials)?;
    if access == Access::Admin {
        principal.require_admin()?;
    }
    Ok(Some(principal))
}

/// Takes the credentials out, finds the route, authenticates, runs the handler and maps every
/// error to its response.
pub async fn dispatch(app: &Arc<App>, mut request: ApiRequest, started: Instant) -> Reply {
    let credentials = request.take_credentials();
    let method = request.method.clone();
    let (pattern, response) = match app.routes.find(&request.method, &request.path) {
        router::Found::Route(route, params) => {
            request.params = params;
            let pattern = route.path;
            let audited = route.audited;
            let path = request.path.clone();
            let remote = request.remote;
            let mut actor = None;
            let result = match authenticate(app, &credentials, route.access) {
                Ok(principal) => {
                    actor = principal.clone();
                    request.principal = principal;
                    (route.handler)(app.clone(), request).await
                }
                Err(error) => Err(error),
            };
            let response = result.unwrap_or_else(ApiError::into_response);
            if audited {
                operations::record(
                    app,
                    crate::store::records::AuditRecord {
                        sequence: 0,
                        at: crate::clock::now_rfc3339(),
                        actor: actor.as_ref().map(|principal| principal.user_id.clone()),
                        credential: actor.as_ref().map(|principal| principal.credential.id()),
                        address: remote.map(|address| address.ip().to_string()),
                        method: method.to_string(),
                        route: pattern.to_string(),
                        path,
                        status: response.status().as_u16(),
                    },
                );
            }
            (pattern, response)
        }
        router::Found::WrongMethod(allowed) => (
            "(wrong method)",
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed here; allowed: {allowed}", request.method),
            )
            .with_header(http::header::ALLOW, &allowed)
            .into_response(),
        ),
        router::Found::Nothing => (
            "(unknown)",
            ApiError::not_found(format!("no route {} {}", request.method, request.path))
                .into_response(),
        ),
    };
    app.metrics
        .observe_request(&method, pattern, response.status(), started.elapsed());
    response
}
