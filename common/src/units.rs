//! Byte sizes (`500MiB`, `10GiB`, `4096`) and durations (`30s`, `10m`,
//! `7d`) as people write them, the one way every flag and configuration
//! key reads them.

use std::time::Duration;

/// Parses a byte size such as `4096`, `64KiB`, `500MiB`, `10GiB`, `1.5TB`.
///
/// Binary (`KiB`, `MiB`, ...) and decimal (`KB`, `MB`, ...) units are accepted,
/// case-insensitively; a bare number is bytes.
///
/// # Errors
/// Returns a message naming the input when it is not a size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e}"))
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `12h`, `7d` or
/// `1h 30m`.
///
/// # Errors
/// Returns a message naming the input when it is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_size};
    use std::time::Duration;

    #[test]
    fn units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 64 * 1024);
        assert_eq!(parse_size("500MiB").unwrap(), 500 * 1024 * 1024);
        assert_eq!(parse_size("10GiB").unwrap(), 10 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(
            parse_duration(" 7d ").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
