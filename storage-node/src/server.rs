//! Running a storage node: its settings, its `/health` route, and its S3
//! service on the shared HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use s3s::Body;
use s3s::service::S3ServiceBuilder;
use tenfold_common::http_server::{HttpLimits, into_response, serve_http};
use tenfold_common::tls::TlsFiles;
use tokio::net::TcpListener;

use crate::auth::StaticKey;
use crate::bandwidth::Bandwidth;
use crate::batch::BatchRoute;
use crate::disk_store::DiskStore;
use crate::error::StoreError;
use crate::metrics::NodeMetrics;
use crate::s3_api::NodeS3;

/// Everything a storage node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Folder holding the node's objects.
    pub data: PathBuf,
    /// Capacity in bytes.
    pub capacity: u64,
    /// S3 access key the balancer signs with.
    pub access_key: String,
    /// S3 secret key.
    pub secret_key: String,
    /// Extra time before every answer. For tests and benchmarks that need a
    /// slow node; zero otherwise.
    pub delay: Duration,
    /// Most bytes per second moved each way, summed over every request
    /// (`--test-bandwidth`): plays a node behind an operator's uplink in
    /// tests and benchmarks; `None` otherwise.
    pub bandwidth: Option<u64>,
    /// Serve HTTPS with this certificate instead of HTTP.
    pub tls: Option<TlsFiles>,
}

/// A JSON response.
pub fn json_response(value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(value.to_string()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Runs a storage node on `listener` until `shutdown` resolves, then lets
/// the requests in progress finish (writes complete) and returns.
///
/// # Errors
/// Fails when the data directory cannot be opened or the TLS certificate
/// not loaded.
pub async fn run_node(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    let tls = config
        .tls
        .as_ref()
        .map(TlsFiles::acceptor)
        .transpose()
        .map_err(|e| StoreError::Config(e.to_string()))?;
    let store = Arc::new(DiskStore::open(&config.data, config.capacity).await?);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, data = %config.data.display(), capacity = config.capacity, "storage node listening");
    let mut builder = S3ServiceBuilder::new(NodeS3::new(Arc::clone(&store)));
    builder.set_auth(StaticKey::new(config.access_key, config.secret_key));
    builder.set_route(BatchRoute::new(Arc::clone(&store)));
    let s3 = builder.build();
    let metrics = Arc::new(NodeMetrics::new(&store));
    let paced = config.bandwidth.map(|rate| {
        tracing::info!(
            bytes_per_second = rate,
            "test bandwidth: every body is paced to this rate each way"
        );
        (Bandwidth::new(rate), Bandwidth::new(rate))
    });
    serve_http(
        listener,
        HttpLimits::default(),
        tls,
        shutdown,
        move |req: Request<Body>| {
            let s3 = s3.clone();
            let store = Arc::clone(&store);
            let metrics = Arc::clone(&metrics);
            let delay = config.delay;
            let method = req.method().clone();
            let paced = paced.clone();
            let req = req.map(|body| match &paced {
                Some((inbound, _)) => inbound.pace(metrics.count_received(body)),
                None => metrics.count_received(body),
            });
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if method == http::Method::GET && req.uri().path() == "/metrics" {
                    return metrics.render(&store);
                }
                if req.method() == http::Method::GET && req.uri().path() == "/health" {
                    let (capacity, used) = (store.capacity(), store.used());
                    return json_response(&serde_json::json!({
                        "status": "ok",
                        "capacity": capacity,
                        "used": used,
                        "available": capacity.saturating_sub(used),
                        "objects_read": store.reads(),
                    }));
                }
                let resp = into_response(s3.call(req).await);
                metrics.observe(&method, resp.status());
                resp.map(|body| match &paced {
                    Some((_, outbound)) => outbound.pace(metrics.count_sent(body)),
                    None => metrics.count_sent(body),
                })
            }
        },
    )
    .await;
    Ok(())
}
