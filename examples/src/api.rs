//! The seed's user API tier: an axum HTTP API that calls the user srv service by name through the
//! generated client. Registered as `go.micro.api.user`, it is what the gateway routes `/user/...`
//! to.
//!
//! - `GET /user/call?name=John` or `POST /user/call` with `{"name":"John"}` → `{"msg":"Hello John"}`
//! - errors from the srv tier come back with their HTTP code and go-micro's JSON body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rmicro_runtime::errors::Error;
use rmicro_runtime::registry::{self, Node, Registry};
use rmicro_runtime::{Client, Registration};
use serde::Deserialize;

use crate::user::{CallRequest, UserClient};

/// The registry name of the user srv service the API calls.
pub const SRV_NAME: &str = "go.micro.srv.user";
/// The registry name the API registers under (`/user/...` in the gateway's default namespace).
pub const API_NAME: &str = "go.micro.api.user";

#[derive(Debug, Deserialize)]
struct CallBody {
    #[serde(default)]
    name: String,
}

/// A go-micro error as an HTTP response.
struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code =
            StatusCode::from_u16(self.0.code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(self.0)).into_response()
    }
}

async fn call(user: &UserClient, name: String) -> Result<Json<serde_json::Value>, ApiError> {
    let reply = user
        .call(CallRequest { name })
        .await
        .map_err(|status| ApiError(Error::from_status(&status)))?;
    Ok(Json(serde_json::json!({ "msg": reply.into_inner().msg })))
}

/// The API's routes, calling the srv tier through `client`.
pub fn router(client: Client) -> Router {
    let user = Arc::new(UserClient::new(SRV_NAME, client));
    Router::new()
        .route(
            "/user/call",
            get(|State(user): State<Arc<UserClient>>, Query(q): Query<HashMap<String, String>>| async move {
                call(&user, q.get("name").cloned().unwrap_or_default()).await
            })
            .post(|State(user): State<Arc<UserClient>>, Json(body): Json<CallBody>| async move {
                call(&user, body.name).await
            }),
        )
        .with_state(user)
}

/// Serves the API on `listener` and keeps it registered as [`API_NAME`] in `registry` until
/// `shutdown` completes; then deregisters, serves on for `grace` while callers drop the node,
/// and stops.
///
/// # Errors
///
/// When serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    registry: Arc<dyn Registry>,
    ttl: Duration,
    interval: Duration,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let mut metadata = HashMap::new();
    metadata.insert("protocol".to_string(), "http".to_string());
    metadata.insert("server".to_string(), "http".to_string());
    metadata.insert("registry".to_string(), registry.name().to_string());
    let record = registry::Service {
        name: API_NAME.into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: format!("{API_NAME}-{}", uuid::Uuid::new_v4()),
            address: addr.to_string(),
            metadata,
        }],
        ..Default::default()
    };
    let registration = Registration::start(registry, record, ttl, interval).grace(grace);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(client))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    shutdown.await;
    registration.stop().await;
    let _ = stop_tx.send(());
    server.await.map_err(std::io::Error::other)?
}
