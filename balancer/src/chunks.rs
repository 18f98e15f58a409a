//! A fragment's bytes as they arrived from a node: the chunks of its
//! answer, kept apart rather than gathered into one buffer, so that a
//! reader who copies them anyway (the gateway opening a segment's frames)
//! copies every byte once.

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};

/// Bytes in one or more chunks, read in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunks {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    /// No bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `chunk` (an empty one is dropped).
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Bytes in all chunks together.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order, none empty.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// MD5 of all the bytes.
    pub fn md5(&self) -> [u8; 16] {
        let mut md5 = Md5::new();
        for chunk in &self.chunks {
            md5.update(chunk);
        }
        md5.finalize().into()
    }

    /// The bytes in one buffer: the only chunk as it is, several copied
    /// together.
    pub fn into_bytes(mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.swap_remove(0),
            _ => {
                let mut all = BytesMut::with_capacity(self.len);
                for chunk in &self.chunks {
                    all.extend_from_slice(chunk);
                }
                all.freeze()
            }
        }
    }
}

impl From<Bytes> for Chunks {
    fn from(bytes: Bytes) -> Self {
        let mut chunks = Self::new();
        chunks.push(bytes);
        chunks
    }
}

impl FromIterator<Bytes> for Chunks {
    fn from_iter<I: IntoIterator<Item = Bytes>>(iter: I) -> Self {
        let mut chunks = Self::new();
        for chunk in iter {
            chunks.push(chunk);
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_their_bytes_in_order() {
        let whole = Bytes::from_static(b"tenfold fragment bytes");
        let split: Chunks = [
            whole.slice(..3),
            Bytes::new(),
            whole.slice(3..10),
            whole.slice(10..),
        ]
        .into_iter()
        .collect();
        assert_eq!(split.len(), whole.len());
        assert_eq!(split.chunks().len(), 3, "the empty chunk is dropped");
        assert_eq!(split.md5(), <[u8; 16]>::from(Md5::digest(&whole)));
        assert_eq!(split.into_bytes(), whole);
        let one = Chunks::from(whole.clone());
        assert_eq!(one.chunks().len(), 1);
        assert_eq!(
            one.into_bytes().as_ptr(),
            whole.as_ptr(),
            "one chunk is not copied"
        );
        assert!(Chunks::new().is_empty());
        assert_eq!(Chunks::new().into_bytes(), Bytes::new());
    }
}
