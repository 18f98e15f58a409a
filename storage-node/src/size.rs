//! Human-readable byte sizes (`500MiB`, `10GiB`, `4096`), shared by every CLI.

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

#[cfg(test)]
mod tests {
    use super::parse_size;

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
}
