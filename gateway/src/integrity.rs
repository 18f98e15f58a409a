//! Body integrity beyond Content-MD5: the `x-amz-checksum-*` values a client
//! sends as headers or as `aws-chunked` trailers (CRC32, CRC32C, CRC64NVME,
//! SHA-1, SHA-256), computed over the body as it streams in, verified, and
//! kept with the object.

use s3s::TrailingHeaders;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};

use crate::error::GatewayError;

/// Base64 checksums of an object, by algorithm.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksums {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A multipart object's checksum of its whole content (S3's
    /// `FULL_OBJECT` type) rather than of its parts' (`COMPOSITE`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_object: bool,
}

impl Checksums {
    /// The value of one algorithm (`CRC32`, `SHA256`, ...).
    pub fn get(&self, algorithm: &str) -> Option<&str> {
        self.fields()
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(algorithm))
            .and_then(|(_, v)| v.as_deref())
    }

    /// Only the value of `algorithm`, if there is one.
    pub fn only(&self, algorithm: &str) -> Self {
        let mut out = Self::default();
        if let Some(v) = self.get(algorithm) {
            out.set(algorithm, v.to_owned());
        }
        out
    }

    fn set(&mut self, algorithm: &str, value: String) {
        let slot = match algorithm.to_ascii_uppercase().as_str() {
            "CRC32" => &mut self.crc32,
            "CRC32C" => &mut self.crc32c,
            "CRC64NVME" => &mut self.crc64nvme,
            "SHA1" => &mut self.sha1,
            "SHA256" => &mut self.sha256,
            _ => return,
        };
        *slot = Some(value);
    }

    /// The composite checksum of a multipart object, as S3 computes it:
    /// `algorithm` over the concatenated binary checksums of the parts,
    /// then `-N`. `None` when a part lacks the value, or for CRC64NVME,
    /// which S3 only offers as a full-object checksum.
    pub fn composite<'a>(
        algorithm: &str,
        parts: impl ExactSizeIterator<Item = &'a Checksums>,
    ) -> Option<Self> {
        let algorithm = algorithm.to_ascii_uppercase();
        if algorithm == "CRC64NVME" {
            return None;
        }
        let count = parts.len();
        let only = ChecksumExpectation {
            algorithm: Some(algorithm.clone()),
            ..ChecksumExpectation::default()
        };
        let mut hasher = only.hasher();
        for part in parts {
            let raw = base64_simd::STANDARD
                .decode_to_vec(part.get(&algorithm)?)
                .ok()?;
            hasher.update(&raw);
        }
        let whole = Checksums::from_dto(hasher.finalize());
        let mut out = Self::default();
        out.set(&algorithm, format!("{}-{count}", whole.get(&algorithm)?));
        Some(out)
    }

    /// The full-object checksum of an object made of `parts` (each with
    /// its checksum in `algorithm` and its size): the parts' CRCs combined,
    /// as S3 computes a `FULL_OBJECT` checksum. `None` for an algorithm
    /// that cannot be combined (SHA) or a part without a checksum.
    pub fn full_object<'a>(
        algorithm: &str,
        parts: impl Iterator<Item = (&'a Checksums, u64)>,
    ) -> Option<Self> {
        use crc_fast::CrcAlgorithm;
        let algorithm = algorithm.to_ascii_uppercase();
        let (crc, width) = match algorithm.as_str() {
            "CRC32" => (CrcAlgorithm::Crc32IsoHdlc, 4),
            "CRC32C" => (CrcAlgorithm::Crc32Iscsi, 4),
            "CRC64NVME" => (CrcAlgorithm::Crc64Nvme, 8),
            _ => return None,
        };
        let mut whole: Option<u64> = None;
        for (part, size) in parts {
            let raw = base64_simd::STANDARD
                .decode_to_vec(part.get(&algorithm)?)
                .ok()?;
            if raw.len() != width {
                return None;
            }
            let value = raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            whole = Some(match whole {
                None => value,
                Some(so_far) => crc_fast::checksum_combine(crc, so_far, value, size),
            });
        }
        let bytes = whole?.to_be_bytes();
        let mut out = Self {
            full_object: true,
            ..Self::default()
        };
        out.set(
            &algorithm,
            base64_simd::STANDARD.encode_to_string(&bytes[8 - width..]),
        );
        Some(out)
    }

    /// S3's `ChecksumType` of these checksums on an object that is (or not)
    /// multipart; `None` when there are none.
    pub fn checksum_type(&self, multipart: bool) -> Option<s3s::dto::ChecksumType> {
        use s3s::dto::ChecksumType;
        if self.fields().iter().all(|(_, v)| v.is_none()) {
            return None;
        }
        Some(ChecksumType::from_static(
            if multipart && !self.full_object {
                ChecksumType::COMPOSITE
            } else {
                ChecksumType::FULL_OBJECT
            },
        ))
    }

    pub(crate) fn fields(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("CRC32", &self.crc32),
            ("CRC32C", &self.crc32c),
            ("CRC64NVME", &self.crc64nvme),
            ("SHA1", &self.sha1),
            ("SHA256", &self.sha256),
        ]
    }

    fn from_dto(c: s3s::dto::Checksum) -> Self {
        Self {
            crc32: c.checksum_crc32,
            crc32c: c.checksum_crc32c,
            crc64nvme: c.checksum_crc64nvme,
            sha1: c.checksum_sha1,
            sha256: c.checksum_sha256,
            full_object: false,
        }
    }

    /// Sets the values `get` finds under their `x-amz-checksum-*` names
    /// (in trailers, which override headers, or in a form's fields).
    pub(crate) fn overlay(&mut self, get: impl Fn(&str) -> Option<String>) {
        for (slot, name) in [
            (&mut self.crc32, "x-amz-checksum-crc32"),
            (&mut self.crc32c, "x-amz-checksum-crc32c"),
            (&mut self.crc64nvme, "x-amz-checksum-crc64nvme"),
            (&mut self.sha1, "x-amz-checksum-sha1"),
            (&mut self.sha256, "x-amz-checksum-sha256"),
        ] {
            if let Some(v) = get(name) {
                *slot = Some(v);
            }
        }
    }
}

/// What a client declared about a body's checksums.
#[derive(Debug, Clone, Default)]
pub struct ChecksumExpectation {
    /// Values sent as headers.
    pub declared: Checksums,
    /// The algorithm named by `x-amz-sdk-checksum-algorithm` (its value may
    /// come in a trailer).
    pub algorithm: Option<String>,
    /// Trailers of an `aws-chunked` body, readable once it is consumed.
    pub trailers: Option<TrailingHeaders>,
}

impl ChecksumExpectation {
    /// From the fields s3s parsed out of a PUT or UploadPart.
    pub fn new(
        declared: [Option<String>; 5],
        algorithm: Option<&str>,
        trailers: Option<TrailingHeaders>,
    ) -> Self {
        let [crc32, crc32c, crc64nvme, sha1, sha256] = declared;
        let declared = Checksums {
            crc32,
            crc32c,
            crc64nvme,
            sha1,
            sha256,
            full_object: false,
        };
        Self {
            trailers,
            ..Self::declared(declared, algorithm)
        }
    }

    /// `declared` checksums and the `algorithm` asked for, with no trailers
    /// to come (a form upload's fields).
    pub fn declared(declared: Checksums, algorithm: Option<&str>) -> Self {
        Self {
            declared,
            algorithm: algorithm.map(str::to_ascii_uppercase),
            trailers: None,
        }
    }

    fn wants(&self, name: &str, declared: &Option<String>) -> bool {
        declared.is_some() || self.algorithm.as_deref() == Some(name)
    }

    /// A hasher computing every algorithm the client asked for.
    pub fn hasher(&self) -> ChecksumHasher {
        let d = &self.declared;
        ChecksumHasher {
            crc32: self.wants("CRC32", &d.crc32).then(Crc32::new),
            crc32c: self.wants("CRC32C", &d.crc32c).then(Crc32c::new),
            sha1: self.wants("SHA1", &d.sha1).then(Sha1::new),
            sha256: self.wants("SHA256", &d.sha256).then(Sha256::new),
            crc64nvme: self.wants("CRC64NVME", &d.crc64nvme).then(Crc64Nvme::new),
        }
    }

    /// Checks what was computed against what the client sent (headers, then
    /// trailers); returns the checksums to keep with the object.
    ///
    /// # Errors
    /// [`GatewayError::ChecksumMismatch`] naming the algorithm.
    pub fn verify(&self, hasher: ChecksumHasher) -> Result<Checksums, GatewayError> {
        let computed = Checksums::from_dto(hasher.finalize());
        let mut expected = self.declared.clone();
        if let Some(trailers) = self.trailers.as_ref().and_then(TrailingHeaders::take) {
            expected.overlay(|name| {
                trailers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
        }
        for ((name, want), (_, got)) in expected.fields().into_iter().zip(computed.fields()) {
            if let Some(want) = want
                && got.as_deref() != Some(want.as_str())
            {
                return Err(GatewayError::ChecksumMismatch(name));
            }
        }
        Ok(computed)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn full_object_checksums_combine_the_parts() {
        use crc_fast::CrcAlgorithm;
        let parts: [&[u8]; 3] = [&[7u8; 5000], b"second part", &[0u8; 1]];
        let whole: Vec<u8> = parts.concat();
        for (name, algorithm, width) in [
            ("CRC32", CrcAlgorithm::Crc32IsoHdlc, 4),
            ("CRC32C", CrcAlgorithm::Crc32Iscsi, 4),
            ("CRC64NVME", CrcAlgorithm::Crc64Nvme, 8),
        ] {
            let encode = |data: &[u8]| {
                let v = crc_fast::checksum(algorithm, data).to_be_bytes();
                base64_simd::STANDARD.encode_to_string(&v[8 - width..])
            };
            let of_parts: Vec<(Checksums, u64)> = parts
                .iter()
                .map(|p| {
                    let mut c = Checksums::default();
                    c.set(name, encode(p));
                    (c, p.len() as u64)
                })
                .collect();
            let combined =
                Checksums::full_object(name, of_parts.iter().map(|(c, n)| (c, *n))).unwrap();
            assert_eq!(combined.get(name), Some(encode(&whole).as_str()), "{name}");
            assert!(combined.full_object);
        }
        assert!(Checksums::full_object("SHA256", std::iter::empty()).is_none());
    }
    use super::*;

    #[test]
    fn verifies_declared_checksums() {
        // CRC32 of "hello" is 0x3610a686; SHA-256 from the standard vectors.
        let ok = ChecksumExpectation::new(
            [
                Some("NhCmhg==".into()),
                None,
                None,
                None,
                Some("LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=".into()),
            ],
            None,
            None,
        );
        let mut h = ok.hasher();
        h.update(b"hel");
        h.update(b"lo");
        let kept = ok.verify(h).unwrap();
        assert_eq!(kept.crc32.as_deref(), Some("NhCmhg=="));
        assert!(kept.sha1.is_none());

        let bad = ChecksumExpectation::new(
            [Some("AAAAAA==".into()), None, None, None, None],
            None,
            None,
        );
        let mut h = bad.hasher();
        h.update(b"hello");
        assert!(matches!(
            bad.verify(h),
            Err(GatewayError::ChecksumMismatch("CRC32"))
        ));

        // The composite of two parts' CRC32s: CRC32 of their 8 raw bytes.
        let part = |v: &str| Checksums {
            crc32: Some(v.into()),
            ..Checksums::default()
        };
        let parts = [part("NhCmhg=="), part("AAAAAA==")];
        let composite = Checksums::composite("crc32", parts.iter()).unwrap();
        let mut h = ChecksumExpectation::new(Default::default(), Some("CRC32"), None).hasher();
        h.update(&[0x36, 0x10, 0xa6, 0x86, 0, 0, 0, 0]);
        let whole = h.finalize().checksum_crc32.unwrap();
        assert_eq!(composite.crc32, Some(format!("{whole}-2")));
        assert!(Checksums::composite("sha1", parts.iter()).is_none());
        assert!(Checksums::composite("crc64nvme", parts.iter()).is_none());

        // An algorithm named without a value is computed and kept.
        let named = ChecksumExpectation::new([None, None, None, None, None], Some("sha1"), None);
        let mut h = named.hasher();
        h.update(b"hello");
        assert!(named.verify(h).unwrap().sha1.is_some());
    }
}
