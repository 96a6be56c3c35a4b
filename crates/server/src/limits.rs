//! What bounds the HTTP listeners (`[server]` limits): one timeout for a whole request, a
//! ceiling on requests handled at once, and a deadline for a client to send its headers.
//!
//! - Past `max_concurrent_requests` a request is refused at once with 503 + `Retry-After`
//!   (`overloaded`), never queued: a flood costs a refusal each, not memory.
//! - Past `request_timeout` the request is dropped (its body read and its work with it) and the
//!   client gets 503 + `Retry-After` (`request_timeout`). A body that trickles in is cut off by
//!   the same timeout. An intake cut off after its commit was issued may be stored while the
//!   sender sees 503: its retry with the same id is a duplicate and answers 2xx, as at-least-once
//!   intake already allows.
//! - A client that does not finish sending its headers within `header_read_timeout` (slowloris),
//!   or leaves a keep-alive connection idle that long, is disconnected.

use crate::error::ApiError;
use crate::supervisor::TaskError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Seconds a refused or timed-out client is asked to wait.
const RETRY_AFTER_SECS: u64 = 1;

/// The limits of one listener, from `[server]`.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub header_read_timeout: Duration,
}

impl RequestLimits {
    pub fn from_config(server: &engine::config::ServerConfig) -> Self {
        Self {
            request_timeout: server.request_timeout,
            max_concurrent_requests: server.max_concurrent_requests,
            header_read_timeout: server.header_read_timeout,
        }
    }
}

/// `router` with the request timeout inside the concurrency limit: a request that is refused
/// costs no timer, and one that times out gives its slot back.
pub fn limit(router: Router, limits: &RequestLimits) -> Router {
    let timeout = limits.request_timeout;
    let slots = Arc::new(Semaphore::new(limits.max_concurrent_requests.clamp(1, Semaphore::MAX_PERMITS)));
    router
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| with_timeout(timeout, request, next)))
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| with_slot(slots.clone(), request, next)))
}

async fn with_slot(slots: Arc<Semaphore>, request: Request, next: Next) -> Response {
    let Ok(_slot) = slots.try_acquire_owned() else {
        metrics::counter!("dingbridge_http_refused_total", "reason" => "overloaded").increment(1);
        tracing::debug!(path = %request.uri().path(), "Request refused: too many requests in flight.");
        return ApiError::unavailable(
            "overloaded",
            "the gateway is handling too many requests; retry later",
            RETRY_AFTER_SECS,
        )
        .into_response();
    };
    next.run(request).await
}

async fn with_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("dingbridge_http_refused_total", "reason" => "request_timeout").increment(1);
            tracing::warn!(path = %path, timeout_ms = timeout.as_millis() as u64, "Request cut off by the request timeout.");
            ApiError::unavailable(
                "request_timeout",
                format!("the request took longer than {} ms; retry later", timeout.as_millis()),
                RETRY_AFTER_SECS,
            )
            .into_response()
        }
    }
}

/// Serves `app` on `listener` over HTTP/1.1 until `stop`, then lets the open connections finish
/// (idle keep-alive connections close at once). A client has `header_read_timeout` to send each
/// request's headers (from the moment it connects, or its previous answer); a slower one is
/// disconnected.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) -> Result<(), TaskError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    // HTTP/1 only (vendors and DingTalk post HTTP/1.1; TLS and HTTP/2 end at a proxy): the
    // header timer then runs from the first byte awaited, so a client that connects and sends
    // nothing is cut off too (sniffing for an HTTP/2 preface would wait for it unbounded).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("Accepting a connection failed: {err}");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("Connection ended: {err}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
