//! HTTP serving for the gateway and the node alike: the accept loop
//! (request ids, tracing spans, `TCP_NODELAY`, TLS), its limits and
//! timeouts, and what is refused before a request body is read.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use s3s::Body;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

/// What one server lets its clients take: how long a client may take to
/// send a request's headers, to send the next bytes of its body, and to
/// leave its connection silent, and how many connections it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub headers: Duration,
    pub body_idle: Duration,
    /// A connection on which nothing moves for this long while no request
    /// is being handled — idle between requests, or a response its client
    /// stopped reading — is closed (gracefully first: HTTP/2 gets a
    /// GOAWAY, then [`CLOSE_GRACE`] to finish).
    pub idle: Duration,
    /// Connections open at once; further clients wait in the listen queue.
    pub max_connections: usize,
    /// How long requests in progress may take to finish once the server
    /// is told to stop, before they are cut off.
    pub shutdown_grace: Duration,
    /// Whether HTML form uploads (S3's POST Object) reach the handler,
    /// which then checks their signed policy while it streams them; when
    /// false they are refused before their body is read.
    pub form_uploads: bool,
    /// Path prefixes whose requests may carry a body without a signature:
    /// their handler authorizes them otherwise (an upload link's token)
    /// before it reads the body.
    pub unsigned_body_paths: &'static [&'static str],
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            headers: Duration::from_secs(30),
            body_idle: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            form_uploads: false,
            unsigned_body_paths: &[],
        }
    }
}

/// Connections a server holds at most by default: each costs a file
/// descriptor and a few KiB, so thousands fit; idle ones are closed after
/// [`HttpLimits::idle`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long requests in progress may take to finish when the server stops
/// (orchestrators such as Kubernetes wait 30 s before they kill).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// How long a connection told to shut down because it is idle may take to
/// finish before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Concurrent HTTP/2 streams a client may open on one connection.
const MAX_H2_STREAMS: u32 = 128;

/// The most bytes of header names and values a request may carry, as on
/// AWS (8 KiB); more is answered with `RequestHeaderSectionTooLarge`.
pub const MAX_HEADER_BYTES: usize = 8 << 10;
/// What hyper buffers of a request head at most (request line and
/// headers); beyond it the connection gets a bare 431.
const MAX_HEAD_BUFFER: usize = 64 << 10;

/// The S3 answer to a request whose headers pass [`MAX_HEADER_BYTES`].
fn header_section_too_large() -> Response<Body> {
    let mut resp = Response::new(Body::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>RequestHeaderSectionTooLarge</Code>\
         <Message>Your request header section exceeds the maximum allowed size.</Message></Error>"
            .to_owned(),
    ));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// The longest validity of a presigned URL S3 accepts: seven days.
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;

/// The query parameters of a request, names and raw values.
fn query_params<B>(req: &Request<B>) -> impl Iterator<Item = (&str, &str)> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether a request carries credentials that `s3s` checks before it reads
/// the body: an `Authorization` header, or a presigned query string (SigV4,
/// or the SigV2 one boto3 still presigns by default).
fn carries_credentials<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(http::header::AUTHORIZATION)
        || query_params(req).any(|(name, _)| {
            name.eq_ignore_ascii_case("X-Amz-Signature")
                || name.eq_ignore_ascii_case("X-Amz-Credential")
                || name == "Signature"
        })
}

/// Whether a request carries an AWS Signature Version 2 `Authorization`
/// header (`AWS key:signature`): Tenfold speaks SigV4 only.
fn is_sigv2_header<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"AWS "))
}

/// Why a presigned URL's validity is refused, if it is: at most seven days,
/// as S3 allows. A SigV4 URL says it in whole seconds (`X-Amz-Expires`); a
/// SigV2 one (still what boto3 presigns by default) gives the moment it
/// lapses (`Expires`, Unix seconds), checked against `now`: a URL made for
/// 7 days and 1 s cannot be told from a 7-day one used a second later, and
/// the check errs towards accepting, so no URL of 7 days or less is refused.
fn bad_presign_expiry<B>(req: &Request<B>, now: std::time::SystemTime) -> Option<&'static str> {
    const TOO_LONG: &str = "X-Amz-Expires must be less than a week (in seconds) that is 604800";
    let mut sigv2 = (false, None);
    for (name, value) in query_params(req) {
        if name.eq_ignore_ascii_case("X-Amz-Expires") {
            return match value.parse::<i64>() {
                Err(_) => Some("X-Amz-Expires should be a number"),
                Ok(n) if n < 0 => Some("X-Amz-Expires must be non-negative"),
                Ok(n) if n.unsigned_abs() > MAX_PRESIGN_EXPIRES => Some(TOO_LONG),
                Ok(_) => None,
            };
        }
        match name {
            "AWSAccessKeyId" => sigv2.0 = true,
            "Expires" => sigv2.1 = Some(value),
            _ => {}
        }
    }
    let (true, Some(expires)) = sigv2 else {
        return None;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return Some("Expires should be a number of seconds since the epoch");
    };
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    // Lossless for any date before the year 285 million.
    #[allow(clippy::cast_precision_loss)]
    let left = expires as f64 - now;
    #[allow(clippy::cast_precision_loss)]
    let too_long = left > MAX_PRESIGN_EXPIRES as f64;
    too_long.then_some(TOO_LONG)
}

/// Whether a request is an HTML form upload (S3's POST Object), whose
/// credentials travel inside the body: `s3s` reads the whole file into
/// memory, up to 5 GiB, before it checks them, whatever the headers say,
/// so such a request must never reach `s3s`.
pub fn is_form_post<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .get(..19)
                    .is_some_and(|t| t.eq_ignore_ascii_case("multipart/form-data"))
            })
}

/// The address a request's connection came from, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// A request answered with an S3 error before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

/// Why a request is refused before a byte of its body is read, if it is:
/// an old or malformed signature, a body with no credentials, or a form
/// upload.
fn refused_before_body<B>(
    req: &Request<B>,
    has_body: bool,
    limits: &HttpLimits,
) -> Option<Refusal> {
    let refuse = |status, code, message| {
        Some(Refusal {
            status,
            code,
            message,
        })
    };
    if is_sigv2_header(req) {
        refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. \
             Please use AWS4-HMAC-SHA256.",
        )
    } else if let Some(why) = bad_presign_expiry(req, std::time::SystemTime::now()) {
        refuse(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            why,
        )
    } else if is_form_post(req) {
        if limits.form_uploads {
            return None;
        }
        refuse(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Browser form uploads (POST Object) are not accepted by this server.",
        )
    } else if has_body
        && !carries_credentials(req)
        && !limits
            .unsigned_body_paths
            .iter()
            .any(|p| req.uri().path().starts_with(p))
    {
        refuse(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "A request with a body must be signed with AWS Signature Version 4 \
             (headers or a presigned URL).",
        )
    } else {
        None
    }
}

/// The answer to a request refused before its body was read.
fn refused_response(refusal: Refusal) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code>\
         <Message>{}</Message></Error>",
        refusal.code, refusal.message
    )));
    *resp.status_mut() = refusal.status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    // The body is left unread: the connection cannot carry another request.
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// Drives a connection (a hyper-util `auto::Connection`) until it ends, or
/// until it has been idle for `idle` ([`Activity::idle_for`]): then it is
/// told to shut down, and dropped if it is still idle [`CLOSE_GRACE`]
/// later. Once `stopped` turns true (the server stops), it is told to shut
/// down too: the request in hand finishes, no other starts. A macro, as the
/// connection's type is spelled out nowhere.
macro_rules! until_idle {
    ($conn:expr, $activity:expr, $idle:expr, $stopped:expr) => {{
        let (activity, idle): (&Activity, Duration) = ($activity, $idle);
        let stopped: &mut tokio::sync::watch::Receiver<bool> = $stopped;
        let mut stopping = *stopped.borrow();
        let mut conn = std::pin::pin!($conn);
        let period = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut check = tokio::time::interval(period);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing_since: Option<std::time::Instant> = None;
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                done = conn.as_mut() => break done,
                changed = stopped.changed(), if !stopping => {
                    // The server stops: finish the request in hand, take no other.
                    stopping = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = check.tick() => {
                    if activity.idle_for() < idle {
                        continue;
                    }
                    match closing_since {
                        None => {
                            tracing::debug!(?idle, "closing an idle connection");
                            conn.as_mut().graceful_shutdown();
                            closing_since = Some(std::time::Instant::now());
                        }
                        Some(since) if since.elapsed() >= CLOSE_GRACE => {
                            tracing::info!(?idle, "dropped a connection that moved nothing (a client that stopped reading?)");
                            break Ok(());
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }};
}

/// Largest error body given its `RequestId` (S3 error bodies are a few
/// hundred bytes).
const MAX_ERROR_BODY: u64 = 8 << 10;

/// An S3 error answer (an XML `<Error>` body) with `<RequestId>` added, the
/// same id as its `x-amz-request-id` header, as S3 writes it; any other
/// answer as it is.
async fn error_with_request_id(resp: Response<Body>, request_id: &str) -> Response<Body> {
    let is_xml = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/xml"));
    let small = http_body::Body::size_hint(resp.body())
        .exact()
        .is_some_and(|len| len > 0 && len <= MAX_ERROR_BODY);
    if resp.status().as_u16() < 400 || !is_xml || !small {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = http_body_util::BodyExt::collect(body)
        .await
        .map(|b| b.to_bytes())
    else {
        return Response::from_parts(parts, Body::empty());
    };
    let text = String::from_utf8_lossy(&bytes);
    let body = match text.rfind("</Error>") {
        Some(at) if !text.contains("<RequestId>") => {
            format!(
                "{}<RequestId>{request_id}</RequestId>{}",
                &text[..at],
                &text[at..]
            )
        }
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    Response::from_parts(parts, Body::from(body))
}

/// Serves HTTP/1 and HTTP/2 on `listener`, calling `handler` for every
/// request inside a `request` span that carries a fresh request id, which is
/// also returned to the client as `x-amz-request-id`.
///
/// A client that does not send its headers within `limits.headers`, or
/// stops sending its body for `limits.body_idle`, is cut off: the body
/// then ends with [`BodyError::Idle`], so the upload fails and frees what it
/// holds. Every request carries a [`BodyWatch`] in its extensions, which
/// tells that error apart from others once layers in between have wrapped
/// it.
///
/// A request with a body but no credentials (no `Authorization` header, no
/// presigned query), and any HTML form upload, is refused with
/// `AccessDenied` before its body is read, so an anonymous upload costs
/// nothing however large it claims to be.
///
/// When `shutdown` resolves, the server stops accepting connections, lets
/// each open one finish the request it is handling (an upload completes and
/// is committed), and returns once all are done or
/// `limits.shutdown_grace` has passed.
///
/// With `tls`, every connection starts with a TLS handshake, which must end
/// within `limits.headers`.
///
/// A request that sent `Expect: 100-continue` and got its answer without a
/// `100 Continue` first (its body was empty or not read) is answered with
/// `Connection: close`. The client may then skip sending the body (RFC 9110,
/// 10.1.1), and botocore keeps that answer's status line for the next
/// response on the same connection, which then never ends.
pub async fn serve_http<H, Fut>(
    listener: TcpListener,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let connections = Arc::new(tokio::sync::Semaphore::new(max));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = async {
                let permit = Arc::clone(&connections).acquire_owned().await;
                (permit, listener.accept().await)
            } => accepted,
        };
        let (Ok(permit), accepted) = accepted else {
            break;
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // A small request must not wait on a delayed ACK.
        let _ = stream.set_nodelay(true);
        if connections.available_permits() == 0 {
            tracing::warn!(
                max = limits.max_connections,
                "connection limit reached: new clients wait"
            );
        }
        let handler = handler.clone();
        let tls = tls.clone();
        let activity = Arc::new(Activity::new());
        let stream = Watched {
            inner: stream,
            activity: Arc::clone(&activity),
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn_activity = Arc::clone(&activity);
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                let handling = HandlerGuard::new(&activity);
                let request_id = format!("{:016X}", rand::random::<u64>());
                let span = tracing::info_span!(
                    "request",
                    id = %request_id,
                    method = %req.method(),
                    path = %req.uri().path(),
                );
                let header_bytes: usize = req
                    .headers()
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len())
                    .sum();
                let expects_continue = req
                    .headers()
                    .get(http::header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                // Hyper sends no `100 Continue` for an empty body.
                let empty = http_body::Body::is_end_stream(req.body());
                let refused = refused_before_body(&req, !empty, &limits);
                let read = Arc::new(AtomicBool::new(false));
                let watch = BodyWatch::default();
                let mut req = req.map(|inner| {
                    Body::http_body(TrackedBody {
                        inner,
                        read: Arc::clone(&read),
                        watch: watch.clone(),
                        idle_for: limits.body_idle,
                        idle: Box::pin(tokio::time::sleep(limits.body_idle)),
                        failed: false,
                    })
                });
                req.extensions_mut().insert(watch);
                req.extensions_mut().insert(Peer(peer));
                async move {
                    let _handling = handling;
                    let mut resp = if header_bytes > MAX_HEADER_BYTES {
                        tracing::debug!(header_bytes, "header section too large");
                        header_section_too_large()
                    } else if let Some(refusal) = refused {
                        tracing::debug!(
                            code = refusal.code,
                            why = refusal.message,
                            "refused before reading the body"
                        );
                        refused_response(refusal)
                    } else {
                        handler(req).await
                    };
                    if expects_continue && (empty || !read.load(Ordering::Acquire)) {
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    tracing::debug!(status = resp.status().as_u16(), "response");
                    let mut resp = error_with_request_id(resp, &request_id).await;
                    if let Ok(v) = request_id.parse() {
                        resp.headers_mut().insert("x-amz-request-id", v);
                    }
                    Ok::<_, Infallible>(resp)
                }
                .instrument(span)
            });
            let mut conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            conn.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.headers)
                .max_buf_size(MAX_HEAD_BUFFER);
            conn.http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_H2_STREAMS);
            let served = match tls {
                None => {
                    let conn = conn.serve_connection(TokioIo::new(stream), service);
                    until_idle!(conn, &conn_activity, limits.idle, &mut stopped)
                }
                Some(acceptor) => {
                    match tokio::time::timeout(limits.headers, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = conn.serve_connection(TokioIo::new(stream), service);
                            until_idle!(conn, &conn_activity, limits.idle, &mut stopped)
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    // Stopping: no new connections; those open finish what they are doing.
    drop(listener);
    let _ = stop.send(true);
    let open = max - connections.available_permits();
    tracing::info!(connections = open, grace = ?limits.shutdown_grace, "shutting down: finishing the requests in progress");
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.shutdown_grace, connections.acquire_many(all)).await {
        Ok(_) => tracing::info!("every connection finished"),
        Err(_) => tracing::warn!(
            connections = max - connections.available_permits(),
            "connections still open after the shutdown grace: cut off"
        ),
    }
}

/// Resolves when the process is asked to stop (SIGTERM or SIGINT): the
/// `shutdown` of [`serve_http`] for a server that stops with its process.
pub async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// What moves on one connection: when a byte last went either way, and how
/// many requests are being handled.
struct Activity {
    opened: std::time::Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last_ms: std::sync::atomic::AtomicU64,
    handling: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            handling: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long nothing has moved while no request was being handled
    /// (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.handling.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

/// Counts a request as being handled until dropped (when its handler has
/// answered, or was abandoned).
struct HandlerGuard(Arc<Activity>);

impl HandlerGuard {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.handling.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        // A response streams on after its handler answered: it counts as
        // moving from now on, and as idle once its client stops reading.
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's socket, recording every byte that moves on it.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error type a request body's stream yields by the time a handler
/// reads it (`s3s` boxes the body's own errors).
pub type StreamError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or the body was malformed.
    #[error("reading the request body: {0}")]
    Transport(#[source] StreamError),
    /// The client sent nothing for this long: S3's `RequestTimeout`.
    #[error("request body idle: nothing received for {0:?}")]
    Idle(Duration),
}

/// What the server saw of a request's body, in the request's extensions:
/// whether it gave up on an idle client. `s3s`'s `aws-chunked` decoder
/// keeps the body's own error only as text, so the error a handler meets
/// cannot always be downcast; this can always be asked.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<std::sync::Mutex<Option<Duration>>>);

impl BodyWatch {
    /// Types an error met while reading the body, whatever wrapped it.
    pub fn classify(&self, error: StreamError) -> BodyError {
        let idle = *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match idle {
            Some(after) => BodyError::Idle(after),
            None => BodyError::Transport(error),
        }
    }

    /// Types an error met while reading the body of a request with these
    /// extensions (a request that did not come through [`serve_http`]
    /// has no watch: its errors are transport errors).
    pub fn classify_in(extensions: &http::Extensions, error: StreamError) -> BodyError {
        match extensions.get::<Self>() {
            Some(watch) => watch.classify(error),
            None => BodyError::Transport(error),
        }
    }

    fn went_idle(&self, after: Duration) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(after);
    }
}

/// A request body that records when it has been read to the end, and fails
/// when its client stops sending.
struct TrackedBody {
    inner: Incoming,
    read: Arc<AtomicBool>,
    watch: BodyWatch,
    idle_for: Duration,
    /// Fires when nothing arrived for `idle_for`.
    idle: Pin<Box<tokio::time::Sleep>>,
    failed: bool,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        match frame {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.idle_for;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(|e| BodyError::Transport(Box::new(e)))))
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.failed = true;
                    self.watch.went_idle(self.idle_for);
                    tracing::warn!(idle = ?self.idle_for, "request body stalled: giving up");
                    Poll::Ready(Some(Err(BodyError::Idle(self.idle_for))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Turns an `s3s` service result into a response (s3s already renders S3
/// errors; what is left is a transport failure).
pub fn into_response(result: Result<s3s::HttpResponse, s3s::HttpError>) -> Response<Body> {
    result.unwrap_or_else(|e| {
        tracing::error!(error = ?e, "request failed");
        plain_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// A small response with a text body.
pub fn plain_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(text.to_owned()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn bodies_without_credentials_and_form_posts_are_refused_unread() {
        let form = ("content-type", "multipart/form-data; boundary=x");
        let auth = ("authorization", "AWS4-HMAC-SHA256 Credential=k/...");
        // A body needs credentials, in a header or a presigned query.
        let strict = HttpLimits::default();
        let open = HttpLimits {
            form_uploads: true,
            unsigned_body_paths: &["/_upload/"],
            ..HttpLimits::default()
        };
        assert!(refused_before_body(&request("PUT", "/b/k", &[]), true, &strict).is_some());
        assert!(refused_before_body(&request("PUT", "/_upload/t/f", &[]), true, &open).is_none());
        assert!(refused_before_body(&request("PUT", "/b/_upload/", &[]), true, &open).is_some());
        assert!(refused_before_body(&request("PUT", "/b/k", &[auth]), true, &strict).is_none());
        let presigned =
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k&X-Amz-Signature=0";
        assert!(refused_before_body(&request("PUT", presigned, &[]), true, &strict).is_none());
        assert!(
            refused_before_body(
                &request("PUT", "/b/k?x-amz-signature-ish=1", &[]),
                true,
                &strict
            )
            .is_some()
        );
        // Requests without a body are left to S3's own checks.
        assert!(refused_before_body(&request("GET", "/b/k", &[]), false, &strict).is_none());
        // A form POST is refused whatever its headers claim.
        for headers in [vec![form], vec![form, auth]] {
            assert!(refused_before_body(&request("POST", "/b", &headers), true, &strict).is_some());
        }
        let upper = ("Content-Type", "Multipart/Form-Data; boundary=x");
        assert!(
            refused_before_body(&request("POST", "/b", &[upper, auth]), true, &strict).is_some()
        );
        // ... unless the server takes form uploads (and checks their policy).
        assert!(refused_before_body(&request("POST", "/b", &[form]), true, &open).is_none());
        // A signed POST that is not a form (DeleteObjects, multipart uploads) passes.
        let xml = ("content-type", "application/xml");
        assert!(
            refused_before_body(&request("POST", "/b?delete", &[xml, auth]), true, &strict)
                .is_none()
        );
    }

    #[test]
    fn sigv2_headers_and_presigned_urls_beyond_seven_days_are_refused() {
        let code = |uri: &str, headers: &[(&str, &str)]| {
            refused_before_body(&request("GET", uri, headers), false, &HttpLimits::default())
                .map(|r| (r.status.as_u16(), r.code))
        };
        let v4 = "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k&X-Amz-Signature=0";
        assert_eq!(code(&format!("{v4}&X-Amz-Expires=604800"), &[]), None);
        assert_eq!(code(&format!("{v4}&X-Amz-Expires=1"), &[]), None);
        let query_error = Some((400, "AuthorizationQueryParametersError"));
        for bad in ["604801", "99999999999999999999", "-1", "1h", ""] {
            assert_eq!(
                code(&format!("{v4}&X-Amz-Expires={bad}"), &[]),
                query_error,
                "{bad}"
            );
        }
        // SigV2 presigned URLs: the moment they lapse, at most 7 days ahead.
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_000_000.5);
        let v2 = |expires: &str| {
            let uri = format!("/b/k?AWSAccessKeyId=k&Signature=x&Expires={expires}");
            bad_presign_expiry(&request("GET", &uri, &[]), now)
        };
        assert_eq!(v2("1604800"), None, "generated 0.5 s ago for 7 days");
        assert_eq!(v2("1000000"), None, "lapsed: S3's own check answers");
        assert!(v2("1604801").is_some(), "7 days and 1 s");
        assert!(v2("soon").is_some());
        // SigV2 headers are refused.
        let v2_header = Some((400, "InvalidRequest"));
        assert_eq!(code("/b/k", &[("authorization", "AWS k:c2ln")]), v2_header);
        // Keys or queries merely named like them are not signatures.
        assert_eq!(code("/b/k?Signature=x&Expires=9999999999", &[]), None);
        assert_eq!(
            code("/b/AWS%20k", &[("authorization", "AWS4-HMAC-SHA256 x")]),
            None
        );
    }
}
