//! Several small replicas in one request to a `tenfold-node`: the format the
//! balancer sends and the node reads.
//!
//! A replica write costs a node a request's parsing, its signature check
//! and the wake-ups of its threads whatever its size, and most of a small
//! replica's cost is that. While one write to a node is in flight, the
//! balancer gathers the next small replicas bound for it and sends them in
//! one request, which the node stores as it stores separate PUTs (each
//! record checked against its CRC32C, all durable before it answers).
//!
//! The request is `POST /{bucket}?tenfold-batch`, signed like any other,
//! with its payload unsigned and [`COUNT_HEADER`] giving the number of
//! records. Its body is the records one after another, each:
//! the key's length (u16, big-endian), the key (UTF-8), the data's length
//! (u32), the data's MD5 (16 bytes), its CRC32C (u32), the data.
//!
//! The answer is `200` with [`COUNT_HEADER`] and a JSON array of one
//! outcome per record, in order: `{"etag": "<hex MD5>"}` for a stored
//! record, `{"code": "<S3 error code>", "message": "..."}` for a refused
//! one. A server that answers anything else does not take batches.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The query parameter that names a batch request.
pub const QUERY: &str = "tenfold-batch";
/// The header giving a batch's number of records, in the request and in
/// the answer.
pub const COUNT_HEADER: &str = "x-tenfold-batch";
/// Most records in one batch.
pub const MAX_RECORDS: usize = 64;
/// Largest record data a batch carries (a node keeps objects up to this
/// size in its volume files, which share one fsync per round).
pub const MAX_RECORD_DATA: usize = 128 << 10;
/// Bytes a record takes besides its key and data.
const RECORD_OVERHEAD: usize = 2 + 4 + 16 + 4;
/// Longest object key, as in S3.
const MAX_KEY: usize = 1024;
/// Largest batch body a node reads.
pub const MAX_BODY: usize = MAX_RECORDS * (MAX_RECORD_DATA + MAX_KEY + RECORD_OVERHEAD);

/// One replica of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub md5: [u8; 16],
    pub crc32c: u32,
    pub data: Bytes,
}

/// Why a batch body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("a batch record is cut short")]
    Truncated,
    #[error("a batch record's key is empty, too long or not UTF-8")]
    BadKey,
    #[error("a batch record carries more than {MAX_RECORD_DATA} bytes")]
    RecordTooLarge,
    #[error("the batch holds {got} records, its header says {expected}")]
    Count { got: usize, expected: usize },
}

/// The body of a batch of `records`.
///
/// # Panics
/// When a record breaks the limits [`decode`] checks (a key of more than
/// 1024 bytes, data over [`MAX_RECORD_DATA`]): callers batch only records
/// within them.
pub fn encode(records: &[Record]) -> Bytes {
    let len = records
        .iter()
        .map(|r| RECORD_OVERHEAD + r.key.len() + r.data.len())
        .sum();
    let mut body = BytesMut::with_capacity(len);
    for record in records {
        assert!(record.key.len() <= MAX_KEY && record.data.len() <= MAX_RECORD_DATA);
        body.put_u16(u16::try_from(record.key.len()).unwrap_or(u16::MAX));
        body.put_slice(record.key.as_bytes());
        body.put_u32(u32::try_from(record.data.len()).unwrap_or(u32::MAX));
        body.put_slice(&record.md5);
        body.put_u32(record.crc32c);
        body.put_slice(&record.data);
    }
    body.freeze()
}

/// The records of a batch body said to hold `expected` of them; their data
/// shares the body's buffer.
///
/// # Errors
/// A [`BatchError`] when the body is not `expected` well-formed records.
pub fn decode(mut body: Bytes, expected: usize) -> Result<Vec<Record>, BatchError> {
    let mut records = Vec::with_capacity(expected.min(MAX_RECORDS));
    while body.has_remaining() {
        if records.len() == expected {
            return Err(BatchError::Count {
                got: expected + 1,
                expected,
            });
        }
        let key_len = usize::from(take_u16(&mut body)?);
        if key_len == 0 || key_len > MAX_KEY {
            return Err(BatchError::BadKey);
        }
        let key = take(&mut body, key_len)?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| BatchError::BadKey)?;
        let data_len = usize::try_from(take_u32(&mut body)?).unwrap_or(usize::MAX);
        if data_len > MAX_RECORD_DATA {
            return Err(BatchError::RecordTooLarge);
        }
        let md5 = take(&mut body, 16)?;
        let crc32c = take_u32(&mut body)?;
        let data = take(&mut body, data_len)?;
        records.push(Record {
            key,
            md5: md5.as_ref().try_into().map_err(|_| BatchError::Truncated)?,
            crc32c,
            data,
        });
    }
    if records.len() == expected {
        Ok(records)
    } else {
        Err(BatchError::Count {
            got: records.len(),
            expected,
        })
    }
}

fn take(body: &mut Bytes, len: usize) -> Result<Bytes, BatchError> {
    if body.remaining() < len {
        return Err(BatchError::Truncated);
    }
    Ok(body.split_to(len))
}

fn take_u16(body: &mut Bytes) -> Result<u16, BatchError> {
    body.try_get_u16().map_err(|_| BatchError::Truncated)
}

fn take_u32(body: &mut Bytes) -> Result<u32, BatchError> {
    body.try_get_u32().map_err(|_| BatchError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, data: &[u8]) -> Record {
        Record {
            key: key.into(),
            md5: [7; 16],
            crc32c: 0xdead_beef,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn records_come_back_as_they_were_sent() {
        let records = vec![
            record("a/0001", b"first"),
            record("b", b""),
            record("c/ü", &[9; MAX_RECORD_DATA]),
        ];
        assert_eq!(decode(encode(&records), 3), Ok(records));
        assert_eq!(decode(Bytes::new(), 0), Ok(vec![]));
    }

    #[test]
    fn a_body_that_is_not_what_its_header_says_is_refused() {
        let body = encode(&[record("a", b"xy"), record("b", b"z")]);
        assert_eq!(
            decode(body.clone(), 1),
            Err(BatchError::Count {
                got: 2,
                expected: 1
            })
        );
        assert_eq!(
            decode(body.clone(), 3),
            Err(BatchError::Count {
                got: 2,
                expected: 3
            })
        );
        for cut in 1..body.len() {
            let got = decode(body.slice(..cut), 2);
            assert!(got.is_err(), "a body cut at {cut} was read");
        }
    }

    #[test]
    fn bad_keys_and_oversized_records_are_refused() {
        let mut body = BytesMut::new();
        body.put_u16(0);
        assert_eq!(decode(body.freeze(), 1), Err(BatchError::BadKey));
        let mut body = BytesMut::new();
        body.put_u16(2);
        body.put_slice(&[0xff, 0xfe]);
        assert_eq!(decode(body.freeze(), 1), Err(BatchError::BadKey));
        let mut body = BytesMut::new();
        body.put_u16(1);
        body.put_slice(b"k");
        body.put_u32(u32::try_from(MAX_RECORD_DATA + 1).unwrap());
        assert_eq!(decode(body.freeze(), 1), Err(BatchError::RecordTooLarge));
    }
}
