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

/// How long a client may take to send a request's headers, and to send the
/// next bytes of its body, before the connection is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub headers: Duration,
    pub body_idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            headers: Duration::from_secs(30),
            body_idle: Duration::from_secs(30),
        }
    }
}

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

/// Whether a request carries credentials that `s3s` checks before it reads
/// the body: an `Authorization` header, or a presigned query string.
fn carries_credentials<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(http::header::AUTHORIZATION)
        || req.uri().query().is_some_and(|query| {
            query.split('&').any(|pair| {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                name.eq_ignore_ascii_case("X-Amz-Signature")
                    || name.eq_ignore_ascii_case("X-Amz-Credential")
                    || name == "Signature"
            })
        })
}

/// Whether a request is an HTML form upload (S3's POST Object), whose
/// credentials travel inside the body: `s3s` reads the whole file into
/// memory, up to 5 GiB, before it checks them, whatever the headers say.
fn is_form_post<B>(req: &Request<B>) -> bool {
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

/// Why a request is refused before a byte of its body is read, if it is:
/// a body with no credentials, or a form upload.
fn refused_before_body<B>(req: &Request<B>, has_body: bool) -> Option<&'static str> {
    if is_form_post(req) {
        Some("Browser form uploads (POST Object) are not accepted by this server.")
    } else if has_body && !carries_credentials(req) {
        Some(
            "A request with a body must be signed with AWS Signature Version 4 \
             (headers or a presigned URL).",
        )
    } else {
        None
    }
}

/// The `AccessDenied` answer to a request refused before its body was read.
fn refused_response(message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
         <Message>{message}</Message></Error>"
    )));
    *resp.status_mut() = StatusCode::FORBIDDEN;
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

/// Serves HTTP/1 and HTTP/2 on `listener`, calling `handler` for every
/// request inside a `request` span that carries a fresh request id, which is
/// also returned to the client as `x-amz-request-id`.
///
/// A client that does not send its headers within `timeouts.headers`, or
/// stops sending its body for `timeouts.body_idle`, is cut off: the body
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
/// With `tls`, every connection starts with a TLS handshake, which must end
/// within `timeouts.headers`.
///
/// A request that sent `Expect: 100-continue` and got its answer without a
/// `100 Continue` first (its body was empty or not read) is answered with
/// `Connection: close`. The client may then skip sending the body (RFC 9110,
/// 10.1.1), and botocore keeps that answer's status line for the next
/// response on the same connection, which then never ends.
pub async fn serve_http<H, Fut>(
    listener: TcpListener,
    timeouts: HttpTimeouts,
    tls: Option<TlsAcceptor>,
    handler: H,
) where
    H: Fn(Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
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
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
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
                let refused = refused_before_body(&req, !empty);
                let read = Arc::new(AtomicBool::new(false));
                let watch = BodyWatch::default();
                let mut req = req.map(|inner| {
                    Body::http_body(TrackedBody {
                        inner,
                        read: Arc::clone(&read),
                        watch: watch.clone(),
                        idle_for: timeouts.body_idle,
                        idle: Box::pin(tokio::time::sleep(timeouts.body_idle)),
                        failed: false,
                    })
                });
                req.extensions_mut().insert(watch);
                async move {
                    let mut resp = if header_bytes > MAX_HEADER_BYTES {
                        tracing::debug!(header_bytes, "header section too large");
                        header_section_too_large()
                    } else if let Some(why) = refused {
                        tracing::debug!(why, "refused before reading the body");
                        refused_response(why)
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
                .header_read_timeout(timeouts.headers)
                .max_buf_size(MAX_HEAD_BUFFER);
            let served = match tls {
                None => conn.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeouts.headers, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            conn.serve_connection(TokioIo::new(stream), service).await
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
        assert!(refused_before_body(&request("PUT", "/b/k", &[]), true).is_some());
        assert!(refused_before_body(&request("PUT", "/b/k", &[auth]), true).is_none());
        let presigned =
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k&X-Amz-Signature=0";
        assert!(refused_before_body(&request("PUT", presigned, &[]), true).is_none());
        assert!(
            refused_before_body(&request("PUT", "/b/k?x-amz-signature-ish=1", &[]), true).is_some()
        );
        // Requests without a body are left to S3's own checks.
        assert!(refused_before_body(&request("GET", "/b/k", &[]), false).is_none());
        // A form POST is refused whatever its headers claim.
        for headers in [vec![form], vec![form, auth]] {
            assert!(refused_before_body(&request("POST", "/b", &headers), true).is_some());
        }
        let upper = ("Content-Type", "Multipart/Form-Data; boundary=x");
        assert!(refused_before_body(&request("POST", "/b", &[upper, auth]), true).is_some());
        // A signed POST that is not a form (DeleteObjects, multipart uploads) passes.
        let xml = ("content-type", "application/xml");
        assert!(refused_before_body(&request("POST", "/b?delete", &[xml, auth]), true).is_none());
    }
}
