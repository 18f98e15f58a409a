//! Running a gateway: the balancer fed from the index (with the overflow
//! store, if any), the garbage collector, the return from overflow, and the
//! S3 service (with share links beside it) on a listener.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use s3s::Body;
use s3s::service::S3ServiceBuilder;
use tenfold_balancer::{Balancer, NodeTrust};
use tenfold_common::http_server::{
    HttpLimits, Peer, into_response, is_form_post, serve_http, terminated,
};
use tenfold_common::s3_errors::error_response;
use tenfold_common::tls::TlsFiles;
use tenfold_overflow::{IpfsStore, OverflowStore};
use tokio::net::TcpListener;

use crate::access::Access;
use crate::addressing::{BaseDomain, bucket_of_request};
use crate::config::{DurabilityPolicy, StoragePolicy};
use crate::cors;
use crate::crypto::Keyring;
use crate::error::GatewayError;
use crate::index::Index;
use crate::metrics::{AdminSettings, Metrics, RequestFacts, serve_admin};
use crate::node_lifecycle::spawn_registry_refresh;
use crate::object_store::ObjectStore;
use crate::post_object::serve_form_upload;
use crate::rate_limit::{RateLimiter, slow_down};
use crate::recorded_pins::RecordedPins;
use crate::s3_api::GatewayS3;
use crate::s3_api::framing;
use crate::s3_api::tenfold_routes::TenfoldRoutes;
use crate::share::{SHARE_PATH, serve_share};
use crate::upload_link::{UPLOAD_PATH, serve_upload_link};

/// What a gateway needs besides its listener.
#[derive(Debug)]
pub struct GatewaySettings {
    pub access_key: String,
    pub secret_key: String,
    pub policy: StoragePolicy,
    /// How stored data is kept over time.
    pub durability: DurabilityPolicy,
    /// How often the node registry is re-read and the nodes probed.
    pub refresh: Duration,
    /// Base domain for virtual-hosted-style requests.
    pub base_domain: Option<String>,
    /// The IPFS RPC API of the overflow tier.
    pub ipfs_api: Option<String>,
    /// The master keys that wrap every object's data key.
    pub keyring: Keyring,
    /// How long clients may take to send headers, between body bytes and
    /// idle, and how many connections they may hold.
    pub limits: HttpLimits,
    /// Serve HTTPS with this certificate instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// How the certificates of https nodes are verified.
    pub node_trust: NodeTrust,
    /// The admin listener (metrics, health, readiness), if any.
    pub admin: Option<AdminSettings>,
    /// Requests a second (bursts of five times that) one address may make
    /// to the routes that need no signature; 0: no limit.
    pub anonymous_rate: u32,
}

/// Serves the S3 API on `listener` until the process ends.
///
/// # Errors
/// [`GatewayError`] when the index cannot be read at start or the TLS
/// certificate not loaded.
pub async fn run_gateway(
    listener: TcpListener,
    index: Index,
    settings: GatewaySettings,
) -> Result<(), GatewayError> {
    settings.policy.validate()?;
    let tls = settings
        .tls
        .as_ref()
        .map(TlsFiles::acceptor)
        .transpose()
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    let index = index.with_keyring(settings.keyring.clone());
    check_master_keys(&index, &settings.keyring).await?;
    let mut balancer = Balancer::with_trust(settings.policy.replicas(), &settings.node_trust)
        .with_min_copies(settings.durability.min_copies);
    if let Some(api) = &settings.ipfs_api {
        let ipfs = IpfsStore::new(api).map_err(|e| GatewayError::Config(e.to_string()))?;
        match ipfs.health().await {
            Ok(health) => tracing::info!(store = %health.store, "overflow store ready"),
            Err(e) => tracing::warn!(error = %e, "overflow store not answering yet"),
        }
        balancer =
            balancer.with_overflow(Arc::new(RecordedPins::new(Arc::new(ipfs), index.clone())));
    }
    let balancer = Arc::new(balancer);
    balancer.set_nodes(index.nodes().await?);
    balancer.probe_all().await;
    index.record_policy(balancer.policy()).await?;
    spawn_registry_refresh(
        index.clone(),
        Arc::clone(&balancer),
        settings.refresh,
        settings.durability.node_lost_after,
    );

    let access = Access::new(index.clone(), settings.access_key, settings.secret_key);
    let store = Arc::new(ObjectStore::new(
        index,
        balancer,
        &settings.policy,
        &settings.durability,
        settings.keyring,
    ));
    store.spawn_garbage_collector();
    store.spawn_repair(settings.refresh);
    store.spawn_scrub();
    // Other gateways' sweeps learn this one's heartbeat period before it
    // takes a write.
    store.record_heartbeats().await;
    store.spawn_orphan_sweep();

    // Without an admin listener nothing can scrape the metrics: requests
    // are not counted at all (the bench's metrics-cost figure compares).
    let metrics = settings.admin.is_some().then(|| {
        let metrics = Arc::new(Metrics::new());
        metrics.watch_index(store.index.stats());
        metrics
    });
    let limiter = Arc::new(RateLimiter::new(
        settings.anonymous_rate,
        settings.anonymous_rate.saturating_mul(5),
    ));
    if let (Some(admin), Some(metrics)) = (settings.admin, &metrics) {
        tokio::spawn(serve_admin(admin, Arc::clone(metrics), Arc::clone(&store)));
    }
    let base_domain = settings.base_domain.as_deref().map(BaseDomain::new);
    let mut builder = S3ServiceBuilder::new(GatewayS3::new(Arc::clone(&store)));
    if let Some(domain) = &base_domain {
        builder.set_host(domain.clone());
    }
    builder.set_auth(access.clone());
    builder.set_access(access.clone());
    builder.set_route(TenfoldRoutes::new(
        Arc::clone(&store),
        access.clone(),
        base_domain.clone(),
        if tls.is_some() { "https" } else { "http" },
    ));
    let s3 = builder.build();
    tracing::info!(addr = ?listener.local_addr().ok(), tls = tls.is_some(), "gateway listening");
    // Form uploads are streamed here, past `s3s`, which would buffer them;
    // upload links check their token before they read a body.
    let limits = HttpLimits {
        form_uploads: true,
        unsigned_body_paths: &[UPLOAD_PATH],
        ..settings.limits
    };
    serve_http(
        listener,
        limits,
        tls,
        terminated(),
        move |req: Request<Body>| {
            let s3 = s3.clone();
            let store = Arc::clone(&store);
            let access = access.clone();
            let metrics = metrics.clone();
            let limiter = Arc::clone(&limiter);
            let started = std::time::Instant::now();
            let route = LinkRoute::of(&req, base_domain.as_ref());
            let bucket = bucket_of_request(&req, base_domain.as_ref());
            let origin = req
                .headers()
                .get(http::header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let method = req.method().clone();
            let facts = RequestFacts::default();
            let mut req = match &metrics {
                Some(m) => req.map(|body| m.count_received(body)),
                None => req,
            };
            req.extensions_mut().insert(facts.clone());
            async move {
                let form = is_form_post(&req);
                let anonymous = route.is_some() || form || method == http::Method::OPTIONS;
                let peer = req.extensions().get::<Peer>().map(|p| p.0.ip());
                let limited = anonymous && peer.is_some_and(|ip| !limiter.allow(ip));
                let mut resp = if limited {
                    slow_down()
                } else if let Some(route) = route {
                    match route {
                        LinkRoute::Share => serve_share(&store, req.method(), req.uri()).await,
                        LinkRoute::Upload => serve_upload_link(&store, req).await,
                    }
                } else if method == http::Method::OPTIONS {
                    preflight(&store, bucket.clone().map(|(b, _)| b), req.headers()).await
                } else if form {
                    let bucket = bucket
                        .as_ref()
                        .filter(|(_, key)| !key)
                        .map(|(b, _)| b.clone());
                    serve_form_upload(&store, &access, bucket, req).await
                } else {
                    let mut req = req;
                    let names_key = bucket.as_ref().is_some_and(|(_, key)| *key);
                    framing::admit(&mut req, names_key);
                    into_response(s3.call(req).await)
                };
                if route.is_none()
                    && method != http::Method::OPTIONS
                    && let (Some(origin), Some((bucket, _))) = (origin, bucket)
                    && let Ok(Some(rules)) = store.index.bucket_cors(&bucket).await
                {
                    cors::decorate(&rules, &origin, &method, &mut resp);
                }
                let operation = match route {
                    _ if limited => "SlowDown",
                    Some(LinkRoute::Share) => "ShareLink",
                    Some(LinkRoute::Upload) => "UploadLink",
                    None if method == http::Method::OPTIONS => "Preflight",
                    None if form => "PostObject",
                    None => facts.operation().unwrap_or("Unknown"),
                };
                let elapsed = started.elapsed();
                if let Some(m) = &metrics {
                    m.observe_request(operation, resp.status(), elapsed);
                }
                tracing::info!(
                    operation,
                    key = facts.access_key().unwrap_or("-"),
                    status = resp.status().as_u16(),
                    ms = elapsed.as_secs_f64() * 1000.0,
                    "answered"
                );
                match &metrics {
                    Some(m) => resp.map(|body| m.count_sent(body)),
                    None => resp,
                }
            }
        },
    )
    .await;
    Ok(())
}

/// Refuses to start when the index holds data keys wrapped by a master key
/// that is not configured: every read of that data would fail.
async fn check_master_keys(index: &Index, keyring: &Keyring) -> Result<(), GatewayError> {
    let unknown: Vec<String> = index
        .master_key_ids()
        .await?
        .into_iter()
        .filter(|id| !keyring.knows(id))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(GatewayError::MasterKey(format!(
        "the index holds data encrypted under master key(s) {} but the configured master key is {} \
         (wrong key? to rotate keys, set the new one as master_key and list the old ones in old_master_keys)",
        unknown.join(", "),
        keyring.current_id()
    )))
}

/// The link routes served beside S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkRoute {
    /// A share link: its page, zip or files.
    Share,
    /// An upload link: its page and the routes its page sends files to.
    Upload,
}

impl LinkRoute {
    /// The link route of a request: its path is under [`SHARE_PATH`] or
    /// [`UPLOAD_PATH`] and its host is not a bucket's virtual host.
    fn of(req: &Request<Body>, base_domain: Option<&BaseDomain>) -> Option<Self> {
        let path = req.uri().path();
        let route = if path.starts_with(SHARE_PATH) {
            Self::Share
        } else if path.starts_with(UPLOAD_PATH) {
            Self::Upload
        } else {
            return None;
        };
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        host.zip(base_domain)
            .is_none_or(|(host, domain)| domain.bucket_of(host).is_none())
            .then_some(route)
    }
}

/// Answers a CORS preflight with the rules of the bucket it names.
async fn preflight(
    store: &ObjectStore,
    bucket: Option<String>,
    headers: &http::HeaderMap,
) -> http::Response<Body> {
    let rules = match bucket {
        Some(bucket) => match store.index.bucket_cors(&bucket).await {
            Ok(rules) => rules,
            Err(e) => return error_response(e.into()),
        },
        None => None,
    };
    cors::preflight(rules.as_ref(), headers)
}
