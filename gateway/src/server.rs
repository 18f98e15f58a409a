//! Running a gateway: the balancer fed from the index, the garbage
//! collector, and the S3 service on a listener.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use s3s::Body;
use s3s::service::S3ServiceBuilder;
use tenfold_balancer::Balancer;
use tenfold_node::auth::StaticKey;
use tenfold_node::server::{into_response, serve_http};
use tokio::net::TcpListener;

use crate::addressing::BaseDomain;
use crate::config::StoragePolicy;
use crate::error::GatewayError;
use crate::index::Index;
use crate::object_store::ObjectStore;
use crate::s3_api::GatewayS3;

/// What a gateway needs besides its listener.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub access_key: String,
    pub secret_key: String,
    pub policy: StoragePolicy,
    /// How often the node registry is re-read and the nodes probed.
    pub refresh: Duration,
    /// Base domain for virtual-hosted-style requests.
    pub base_domain: Option<String>,
}

/// Serves the S3 API on `listener` until the process ends.
///
/// # Errors
/// [`GatewayError`] when the index cannot be read at start.
pub async fn run_gateway(
    listener: TcpListener,
    index: Index,
    settings: GatewaySettings,
) -> Result<(), GatewayError> {
    settings.policy.validate()?;
    let balancer = Arc::new(Balancer::new(settings.policy.replicas()));
    balancer.set_nodes(index.nodes().await?);
    balancer.probe_all().await;
    spawn_registry_refresh(index.clone(), Arc::clone(&balancer), settings.refresh);

    let store = Arc::new(ObjectStore::new(index, balancer, &settings.policy));
    store.spawn_garbage_collector();

    let mut builder = S3ServiceBuilder::new(GatewayS3::new(store));
    if let Some(domain) = &settings.base_domain {
        builder.set_host(BaseDomain::new(domain));
    }
    builder.set_auth(StaticKey::new(settings.access_key, settings.secret_key));
    let s3 = builder.build();
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    serve_http(listener, move |req: Request<Incoming>| {
        let s3 = s3.clone();
        async move { into_response(s3.call(req.map(Body::from)).await) }
    })
    .await;
    Ok(())
}

/// Re-reads the node registry (nodes added or removed at run time, usage
/// recorded by other gateways) and probes every node, every `interval`.
fn spawn_registry_refresh(index: Index, balancer: Arc<Balancer>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match index.nodes().await {
                Ok(nodes) => balancer.set_nodes(nodes),
                Err(e) => tracing::warn!(error = %e, "reading the node registry"),
            }
            balancer.probe_all().await;
        }
    });
}
