//! Virtual-hosted-style addressing (`bucket.s3.example.com`) beside
//! path-style (`s3.example.com/bucket`, or any IP address).

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
    use super::BaseDomain;

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
}
