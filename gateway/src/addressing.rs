//! Virtual-hosted-style addressing (`bucket.s3.example.com`) beside
//! path-style (`s3.example.com/bucket`, or any IP address).

use http::Request;
use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// Reads the bucket from the Host header when it is a subdomain of the
/// base domain; every other host is path-style.
#[derive(Debug, Clone)]
pub struct BaseDomain {
    base: String,
}

impl BaseDomain {
    /// Serves `bucket.{base}` as virtual-hosted-style.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_matches('.').to_ascii_lowercase(),
        }
    }

    /// The bucket a Host header names, if it is virtual-hosted-style.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name);
        let prefix_len = name.len().checked_sub(self.base.len() + 1)?;
        let (bucket, rest) = name.split_at(prefix_len);
        (rest.strip_prefix('.')?.eq_ignore_ascii_case(&self.base) && !bucket.is_empty())
            .then_some(bucket)
    }
}

/// The bucket a request names — its virtual host's, or its path's first
/// segment — and whether it names an object in that bucket too.
pub fn bucket_of_request<B>(
    req: &Request<B>,
    base_domain: Option<&BaseDomain>,
) -> Option<(String, bool)> {
    let path = req.uri().path();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if let Some(bucket) = host
        .zip(base_domain)
        .and_then(|(host, domain)| domain.bucket_of(host))
    {
        return Some((bucket.to_owned(), path != "/"));
    }
    let rest = path.strip_prefix('/')?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket = urlencoding::decode(bucket).ok()?;
    (!bucket.is_empty()).then(|| (bucket.into_owned(), !key.is_empty()))
}

impl S3Host for BaseDomain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(host).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{BaseDomain, bucket_of_request};

    #[test]
    fn buckets_from_subdomains_only() {
        let d = BaseDomain::new("s3.test");
        assert_eq!(d.bucket_of("photos.s3.test"), Some("photos"));
        assert_eq!(d.bucket_of("photos.s3.test:9000"), Some("photos"));
        assert_eq!(d.bucket_of("a.b.s3.test"), Some("a.b"));
        assert_eq!(d.bucket_of("s3.test:9000"), None);
        assert_eq!(d.bucket_of("127.0.0.1:9000"), None);
        assert_eq!(d.bucket_of("[::1]:9000"), None);
        assert_eq!(d.bucket_of("evils3.test"), None);
        assert_eq!(d.bucket_of(".s3.test"), None);
    }

    #[test]
    fn buckets_of_requests() {
        let d = BaseDomain::new("s3.test");
        let at = |host: &str, path: &str| {
            let req = http::Request::builder()
                .uri(path)
                .header("host", host)
                .body(())
                .unwrap();
            bucket_of_request(&req, Some(&d))
        };
        assert_eq!(at("s3.test", "/b"), Some(("b".into(), false)));
        assert_eq!(at("s3.test", "/b/"), Some(("b".into(), false)));
        assert_eq!(at("s3.test", "/b/k/x"), Some(("b".into(), true)));
        assert_eq!(at("s3.test", "/"), None);
        assert_eq!(at("b.s3.test", "/"), Some(("b".into(), false)));
        assert_eq!(at("b.s3.test", "/k"), Some(("b".into(), true)));
    }
}
