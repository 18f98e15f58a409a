//! Conditional requests (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`) evaluated as S3 does (RFC 9110 order).

use s3s::dto::{ETag, ETagCondition, Timestamp};

use crate::error::GatewayError;

/// The conditions a GET or HEAD carries.
#[derive(Debug, Default)]
pub struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

fn matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

fn unix_seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

impl Conditions {
    /// Checks the conditions against an object's ETag and last-modified
    /// time (milliseconds; HTTP dates have whole seconds).
    ///
    /// # Errors
    /// [`GatewayError::PreconditionFailed`] (412) or
    /// [`GatewayError::NotModified`] (304).
    pub fn check(&self, etag: &str, last_modified_ms: i64) -> Result<(), GatewayError> {
        let modified = last_modified_ms.div_euclid(1000);
        if let Some(cond) = &self.if_match {
            if !matches(cond, etag) {
                return Err(GatewayError::PreconditionFailed);
            }
        } else if let Some(t) = &self.if_unmodified_since
            && modified > unix_seconds(t)
        {
            return Err(GatewayError::PreconditionFailed);
        }
        if let Some(cond) = &self.if_none_match {
            if matches(cond, etag) {
                return Err(GatewayError::NotModified);
            }
        } else if let Some(t) = &self.if_modified_since
            && modified <= unix_seconds(t)
        {
            return Err(GatewayError::NotModified);
        }
        Ok(())
    }
}

impl Conditions {
    /// The `x-amz-copy-source-if-*` variant: every failed condition is a
    /// 412, never a 304, as S3 answers a copy.
    ///
    /// # Errors
    /// [`GatewayError::PreconditionFailed`].
    pub fn check_copy_source(&self, etag: &str, last_modified_ms: i64) -> Result<(), GatewayError> {
        self.check(etag, last_modified_ms).map_err(|e| match e {
            GatewayError::NotModified => GatewayError::PreconditionFailed,
            other => other,
        })
    }
}

/// An `ETag` condition for a strong ETag value.
pub fn etag_condition(value: &str) -> ETagCondition {
    ETagCondition::ETag(ETag::Strong(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .into()
    }

    #[test]
    fn rfc_order() {
        let etag = "abc";
        let at = 1_000_500; // ms: second 1000
        assert!(Conditions::default().check(etag, at).is_ok());
        let c = Conditions {
            if_match: Some(etag_condition("abc")),
            ..Default::default()
        };
        assert!(c.check(etag, at).is_ok());
        let c = Conditions {
            if_match: Some(etag_condition("zzz")),
            ..Default::default()
        };
        assert!(matches!(
            c.check(etag, at),
            Err(GatewayError::PreconditionFailed)
        ));
        let c = Conditions {
            if_match: Some(ETagCondition::Any),
            ..Default::default()
        };
        assert!(c.check(etag, at).is_ok());
        let c = Conditions {
            if_none_match: Some(etag_condition("abc")),
            ..Default::default()
        };
        assert!(matches!(c.check(etag, at), Err(GatewayError::NotModified)));
        let c = Conditions {
            if_modified_since: Some(ts(1000)),
            ..Default::default()
        };
        assert!(matches!(c.check(etag, at), Err(GatewayError::NotModified)));
        let c = Conditions {
            if_modified_since: Some(ts(999)),
            ..Default::default()
        };
        assert!(c.check(etag, at).is_ok());
        let c = Conditions {
            if_unmodified_since: Some(ts(999)),
            ..Default::default()
        };
        assert!(matches!(
            c.check(etag, at),
            Err(GatewayError::PreconditionFailed)
        ));
        // If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
        let c = Conditions {
            if_match: Some(etag_condition("abc")),
            if_unmodified_since: Some(ts(1)),
            ..Default::default()
        };
        assert!(c.check(etag, at).is_ok());
        let c = Conditions {
            if_none_match: Some(etag_condition("x")),
            if_modified_since: Some(ts(5000)),
            ..Default::default()
        };
        assert!(c.check(etag, at).is_ok());
    }
}
