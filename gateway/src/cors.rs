//! Cross-origin requests from browsers: a bucket's CORS rules (set with
//! PutBucketCors), the answer to a preflight (`OPTIONS`), and the
//! `Access-Control-*` headers added to the responses of allowed origins.
//!
//! The rules are S3's: the first rule whose origins, methods and headers
//! all match decides; an origin or header pattern may hold one `*`.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use s3s::Body;
use s3s::dto::CORSRule;
use serde::{Deserialize, Serialize};
use tenfold_common::s3_errors::{error_response, with_status};

use crate::error::GatewayError;

/// Most rules one bucket's configuration may hold, as in S3.
const MAX_RULES: usize = 100;

/// The methods a rule may allow.
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One CORS rule, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// A bucket's CORS configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorsRules(pub Vec<CorsRule>);

impl CorsRules {
    /// Checks and takes the rules of a PutBucketCors.
    ///
    /// # Errors
    /// [`GatewayError::MalformedXml`] or [`GatewayError::InvalidRequest`]
    /// for rules S3 refuses too.
    pub fn from_s3(rules: Vec<CORSRule>) -> Result<Self, GatewayError> {
        if rules.is_empty() || rules.len() > MAX_RULES {
            return Err(GatewayError::MalformedXml(format!(
                "a CORS configuration holds 1 to {MAX_RULES} rules"
            )));
        }
        let rules = rules
            .into_iter()
            .map(|r| {
                let rule = CorsRule {
                    id: r.id,
                    allowed_origins: r.allowed_origins,
                    allowed_methods: r.allowed_methods,
                    allowed_headers: r.allowed_headers.unwrap_or_default(),
                    expose_headers: r.expose_headers.unwrap_or_default(),
                    max_age_seconds: r.max_age_seconds,
                };
                rule.check().map(|()| rule)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(rules))
    }

    /// The rules as GetBucketCors answers them.
    pub fn to_s3(&self) -> Vec<CORSRule> {
        self.0
            .iter()
            .map(|r| CORSRule {
                id: r.id.clone(),
                allowed_origins: r.allowed_origins.clone(),
                allowed_methods: r.allowed_methods.clone(),
                allowed_headers: (!r.allowed_headers.is_empty()).then(|| r.allowed_headers.clone()),
                expose_headers: (!r.expose_headers.is_empty()).then(|| r.expose_headers.clone()),
                max_age_seconds: r.max_age_seconds,
            })
            .collect()
    }

    /// The first rule that lets `origin` send `method` with `headers`.
    pub fn matching(&self, origin: &str, method: &str, headers: &[&str]) -> Option<&CorsRule> {
        self.0.iter().find(|rule| {
            rule.allowed_origins
                .iter()
                .any(|o| wildcard_match(o, origin))
                && rule.allowed_methods.iter().any(|m| m == method)
                && headers.iter().all(|h| {
                    rule.allowed_headers
                        .iter()
                        .any(|a| wildcard_match(&a.to_ascii_lowercase(), &h.to_ascii_lowercase()))
                })
        })
    }
}

impl CorsRule {
    fn check(&self) -> Result<(), GatewayError> {
        if self.allowed_origins.is_empty() || self.allowed_methods.is_empty() {
            return Err(GatewayError::MalformedXml(
                "a CORS rule needs an AllowedOrigin and an AllowedMethod".into(),
            ));
        }
        if let Some(m) = self
            .allowed_methods
            .iter()
            .find(|m| !METHODS.contains(&m.as_str()))
        {
            return Err(GatewayError::InvalidRequest(format!(
                "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
            )));
        }
        if let Some(p) = self
            .allowed_origins
            .iter()
            .chain(&self.allowed_headers)
            .find(|p| p.matches('*').count() > 1)
        {
            return Err(GatewayError::InvalidRequest(format!(
                "AllowedOrigin and AllowedHeader patterns take at most one wildcard: {p:?}"
            )));
        }
        Ok(())
    }
}

/// Whether `value` matches `pattern`, which may hold one `*` standing for
/// any run of characters.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
    }
}

/// The answer to a preflight for a bucket with `rules` (`None`: CORS is
/// not configured on it): 200 with what the matching rule allows, or 403.
pub fn preflight(rules: Option<&CorsRules>, headers: &HeaderMap) -> Response<Body> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok());
    let (Some(origin), Some(method)) = (origin, method) else {
        return error(
            "BadRequest",
            "Insufficient information. Origin request header needed.",
            StatusCode::BAD_REQUEST,
        );
    };
    let requested: Vec<&str> = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let Some(rules) = rules else {
        return forbidden("CORSResponse: CORS is not enabled for this bucket.");
    };
    let Some(rule) = rules.matching(origin, method, &requested) else {
        return forbidden(
            "CORSResponse: This CORS request is not allowed. The request's Origin, method \
             (Access-Control-Request-Method) or headers (Access-Control-Request-Headers) \
             are not allowed by the bucket's CORS rules.",
        );
    };
    let mut resp = Response::new(Body::empty());
    let out = resp.headers_mut();
    allow(out, rule, origin);
    set(
        out,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        &rule.allowed_methods.join(", "),
    );
    if !requested.is_empty() {
        set(
            out,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &requested.join(", "),
        );
    }
    if let Some(age) = rule.max_age_seconds {
        set(out, header::ACCESS_CONTROL_MAX_AGE, &age.to_string());
    }
    resp
}

/// Adds the `Access-Control-*` headers to the response of a request from
/// `origin` with `method`, when a rule allows them.
pub fn decorate(rules: &CorsRules, origin: &str, method: &Method, resp: &mut Response<Body>) {
    // A HEAD is allowed by a rule that allows it, as in S3.
    if let Some(rule) = rules.matching(origin, method.as_str(), &[]) {
        let out = resp.headers_mut();
        allow(out, rule, origin);
        set(
            out,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &rule.allowed_methods.join(", "),
        );
    }
}

/// The headers every allowed request gets: the origin (S3 echoes it, or
/// `*` for a rule open to all), the exposed headers, and `Vary`.
fn allow(out: &mut HeaderMap, rule: &CorsRule, origin: &str) {
    if rule.allowed_origins.iter().any(|o| o == "*") {
        set(out, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    } else {
        set(out, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        set(out, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    if !rule.expose_headers.is_empty() {
        set(
            out,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &rule.expose_headers.join(", "),
        );
    }
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    for name in [
        "Access-Control-Request-Headers",
        "Access-Control-Request-Method",
    ] {
        out.append(header::VARY, HeaderValue::from_static(name));
    }
}

fn set(out: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        out.insert(name, v);
    }
}

fn forbidden(message: &'static str) -> Response<Body> {
    error("AccessForbidden", message, StatusCode::FORBIDDEN)
}

fn error(code: &str, message: &'static str, status: StatusCode) -> Response<Body> {
    error_response(with_status(code, status, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        CorsRule {
            id: None,
            allowed_origins: own(origins),
            allowed_methods: own(methods),
            allowed_headers: own(headers),
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        }
    }

    #[test]
    fn wildcards_stand_for_one_run() {
        assert!(wildcard_match("*", "https://a.example"));
        assert!(wildcard_match("https://*.example", "https://app.example"));
        assert!(!wildcard_match("https://*.example", "http://app.example"));
        assert!(!wildcard_match("https://*.example", "https://example"));
        assert!(wildcard_match("x-amz-*", "x-amz-date"));
        assert!(!wildcard_match(
            "https://a.example",
            "https://a.example.evil"
        ));
    }

    #[test]
    fn the_first_rule_that_allows_all_decides() {
        let rules = CorsRules(vec![
            rule(&["https://app.example"], &["GET"], &[]),
            rule(
                &["https://*.example"],
                &["PUT"],
                &["content-type", "x-amz-*"],
            ),
        ]);
        assert!(rules.matching("https://app.example", "GET", &[]).is_some());
        assert!(
            rules
                .matching("https://b.example", "PUT", &["Content-Type", "x-amz-date"])
                .is_some()
        );
        assert!(
            rules
                .matching("https://b.example", "PUT", &["authorization"])
                .is_none()
        );
        assert!(rules.matching("https://b.example", "GET", &[]).is_none());
        assert!(rules.matching("https://evil.test", "GET", &[]).is_none());
    }

    #[test]
    fn preflights_are_answered_or_refused() {
        let rules = CorsRules(vec![rule(&["https://app.example"], &["PUT"], &["*"])]);
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("content-type, x-amz-date"),
        );
        let ok = preflight(Some(&rules), &h);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(ok.headers()[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(preflight(None, &h).status(), StatusCode::FORBIDDEN);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(preflight(Some(&rules), &h).status(), StatusCode::FORBIDDEN);
        h.remove(header::ORIGIN);
        assert_eq!(
            preflight(Some(&rules), &h).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = |r: CorsRule| CorsRule::check(&r).is_err();
        assert!(bad(rule(&["https://a.example"], &["PATCH"], &[])));
        assert!(bad(rule(&["https://*.*.example"], &["GET"], &[])));
        assert!(bad(rule(&[], &["GET"], &[])));
        assert!(!bad(rule(&["*"], &["GET", "HEAD"], &["*"])));
    }
}
