//! How a segment's fragments are packed into its index row, and how data
//! ids are stored.
//!
//! One segment is one row: its fragments' sizes, MD5s and copies sit in
//! one `fragments` column, so a segment of ten fragments with four copies
//! each costs a few hundred bytes of index rather than fifty rows. The
//! layout is fixed-width, so that a migration can write it in SQL:
//!
//! ```text
//! per fragment, in index order:
//!   size     u32, big-endian
//!   md5      16 bytes
//!   copies   u8
//!   copy     u32, big-endian, per copy: node_id * 2 on the mainnet,
//!            node_id * 2 + 1 on the testnet, 0 for the overflow pin
//! ```
//!
//! The overflow pin's content id is kept apart, in `overflow_pins` (few
//! fragments ever overflow).

use tenfold_balancer::{Network, Placement};

use super::rows::FragmentRow;
use crate::error::GatewayError;
use crate::fragment::FrameIndex;

/// A copy's code for the overflow pin.
const OVERFLOW: u32 = 0;

/// A data id as the index stores it: the 16 bytes its 32 hex digits spell
/// (any other id, which no data has, as its own bytes).
pub fn id_bytes(id: &str) -> Vec<u8> {
    match hex::decode(id) {
        Ok(bytes) if bytes.len() == 16 && id.bytes().all(|b| !b.is_ascii_uppercase()) => bytes,
        _ => id.as_bytes().to_vec(),
    }
}

/// A stored data id back in its text form.
pub fn id_text(bytes: &[u8]) -> String {
    if bytes.len() == 16 {
        hex::encode(bytes)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// An object's ETag as the index stores it: the 16 bytes of its MD5 when
/// it is 32 hex digits followed, for a multipart object, by `-` and its
/// `parts_count`, as every ETag Tenfold makes is. Any other ETag is stored
/// as its text, with a NUL after it when it is 16 bytes long, so that it
/// cannot read back as an MD5.
pub fn etag_bytes(etag: &str, parts_count: Option<u32>) -> Vec<u8> {
    let suffix = parts_count.map(|n| format!("-{n}")).unwrap_or_default();
    if let Some(digest) = etag.strip_suffix(suffix.as_str())
        && digest.len() == 32
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && let Ok(md5) = hex::decode(digest)
    {
        return md5;
    }
    let mut text = etag.as_bytes().to_vec();
    if text.len() == 16 {
        text.push(0);
    }
    text
}

/// A stored ETag back in its text form (see [`etag_bytes`]).
pub fn etag_text(stored: &[u8], parts_count: Option<u32>) -> String {
    if stored.len() == 16 {
        let digest = hex::encode(stored);
        return match parts_count {
            Some(n) => format!("{digest}-{n}"),
            None => digest,
        };
    }
    let text = match stored {
        [text @ .., 0] if text.len() == 16 => text,
        text => text,
    };
    String::from_utf8_lossy(text).into_owned()
}

fn copy_code(placement: &Placement) -> u32 {
    match placement {
        Placement::Overflow { .. } => OVERFLOW,
        Placement::Node { node_id, network } => {
            let id = u32::try_from(*node_id).unwrap_or(u32::MAX >> 1);
            id.saturating_mul(2) + u32::from(*network == Network::Testnet)
        }
    }
}

/// `fragments` packed for a segment row. The overflow copies' content ids
/// are not in it: they go to `overflow_pins`.
pub fn pack(fragments: &[FragmentRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fragments.iter().map(|f| 21 + 4 * f.placements.len()).sum());
    for f in fragments {
        out.extend_from_slice(&u32::try_from(f.size).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&f.md5);
        let copies = &f.placements[..f.placements.len().min(usize::from(u8::MAX))];
        out.push(u8::try_from(copies.len()).unwrap_or(u8::MAX));
        for p in copies {
            out.extend_from_slice(&copy_code(p).to_be_bytes());
        }
    }
    out
}

/// The fragments packed in a segment row, in index order; an overflow copy
/// comes back with an empty content id, for [`super::Index`] to fill in
/// from `overflow_pins`.
///
/// # Errors
/// [`GatewayError::Internal`] when the bytes are cut short.
pub fn unpack(bytes: &[u8]) -> Result<Vec<FragmentRow>, GatewayError> {
    let short = || GatewayError::Internal("a segment's packed fragments are cut short".into());
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], GatewayError> {
        if rest.len() < n {
            return Err(short());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut out = Vec::new();
    let mut index = 0u16;
    loop {
        let Ok(size) = take(4) else { break };
        let size = u32_of(size);
        let md5: [u8; 16] = take(16)?.try_into().map_err(|_| short())?;
        let copies = take(1)?[0];
        let mut placements = Vec::with_capacity(usize::from(copies));
        for _ in 0..copies {
            let code = u32_of(take(4)?);
            placements.push(if code == OVERFLOW {
                Placement::Overflow { cid: String::new() }
            } else {
                Placement::Node {
                    node_id: i64::from(code >> 1),
                    network: if code & 1 == 1 {
                        Network::Testnet
                    } else {
                        Network::Mainnet
                    },
                }
            });
        }
        out.push(FragmentRow {
            index,
            size: u64::from(size),
            md5,
            placements,
        });
        index = index.saturating_add(1);
    }
    // `take(4)` fails only at the end, or with 1-3 stray bytes left.
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(short())
    }
}

/// A segment's frame index as its row keeps it: `PLAIN:END,END,...`
/// (`1048576:4122` for a small object's one frame).
pub fn frames_text(frames: &FrameIndex) -> String {
    let ends: Vec<String> = frames.ends.iter().map(u64::to_string).collect();
    format!("{}:{}", frames.plain, ends.join(","))
}

/// A frame index from its row: the text [`frames_text`] writes, or the JSON
/// rows written before it.
pub fn frames_of(text: &str) -> Option<FrameIndex> {
    if text.starts_with('{') {
        return serde_json::from_str(text).ok();
    }
    let (plain, ends) = text.split_once(':')?;
    Some(FrameIndex {
        plain: plain.parse().ok()?,
        ends: if ends.is_empty() {
            Vec::new()
        } else {
            ends.split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?
        },
    })
}

/// Whether any copy of `fragments` is an overflow pin.
pub fn has_overflow(fragments: &[FragmentRow]) -> bool {
    fragments
        .iter()
        .any(|f| f.placements.iter().any(|p| p.cid().is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_stored_as_their_md5_and_read_back_as_they_were() {
        let md5 = "0123456789abcdef0123456789abcdef";
        for (etag, parts, stored_len) in [
            (md5.to_owned(), None, 16),
            (format!("{md5}-3"), Some(3), 16),
            // Not what its parts count says, upper case, too short, or
            // 16 bytes of text: kept as text.
            (format!("{md5}-3"), None, 34),
            (md5.to_owned(), Some(2), 32),
            (md5.to_uppercase(), None, 32),
            ("e".to_owned(), None, 1),
            ("sixteen-bytes-16".to_owned(), None, 17),
            (String::new(), None, 0),
        ] {
            let stored = etag_bytes(&etag, parts);
            assert_eq!(stored.len(), stored_len, "{etag}");
            assert_eq!(etag_text(&stored, parts), etag);
        }
    }

    fn node(node_id: i64, network: Network) -> Placement {
        Placement::Node { node_id, network }
    }

    #[test]
    fn fragments_pack_and_unpack() {
        let fragments = vec![
            FragmentRow {
                index: 0,
                size: 8 << 20,
                md5: [7; 16],
                placements: vec![
                    node(1, Network::Mainnet),
                    node(70_000, Network::Testnet),
                    Placement::Overflow { cid: "Qm".into() },
                ],
            },
            FragmentRow {
                index: 1,
                size: 0,
                md5: [0; 16],
                placements: Vec::new(),
            },
        ];
        let packed = pack(&fragments);
        assert_eq!(packed.len(), (21 + 12) + 21);
        let back = unpack(&packed).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].index, back[0].size, back[0].md5),
            (0, 8 << 20, [7; 16])
        );
        assert_eq!(back[0].placements[..2], fragments[0].placements[..2]);
        assert_eq!(
            back[0].placements[2],
            Placement::Overflow { cid: String::new() }
        );
        assert!(has_overflow(&back) && !has_overflow(&back[1..]));
        assert_eq!((back[1].index, back[1].placements.len()), (1, 0));
        assert!(unpack(&packed[..packed.len() - 1]).is_err());
        assert!(unpack(&[]).unwrap().is_empty());
    }

    #[test]
    fn frame_indexes_are_kept_short_and_old_ones_still_read() {
        let frames = FrameIndex {
            plain: 1 << 20,
            ends: vec![1_048_600, 2_097_200, 2_500_000],
        };
        let text = frames_text(&frames);
        assert_eq!(text, "1048576:1048600,2097200,2500000");
        assert_eq!(frames_of(&text), Some(frames.clone()));
        let json = serde_json::to_string(&frames).unwrap();
        assert_eq!(frames_of(&json), Some(frames));
        let none = FrameIndex {
            plain: 64,
            ends: Vec::new(),
        };
        assert_eq!(frames_of(&frames_text(&none)), Some(none));
        for bad in ["", "x:1", "1:2,y", "12"] {
            assert_eq!(frames_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn data_ids_are_stored_as_their_bytes() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(id_bytes(id).len(), 16);
        assert_eq!(id_text(&id_bytes(id)), id);
        // Byte order is the text's order: ranges of ids carry over.
        let (a, b) = (
            "0f00000000000000000000000000000a",
            "a000000000000000000000000000000f",
        );
        assert!(id_bytes(a) < id_bytes(b));
        // Anything else is kept as it is (and names no stored data).
        assert_eq!(id_bytes("data-x"), b"data-x");
        assert_eq!(id_text(b"data-x"), "data-x");
    }
}
