//! Test data: files of a given size, and their hashes.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Writes `len` bytes to `path`: random, or compressible text.
pub fn write_file(path: &Path, len: usize, compressible: bool) {
    let data: Vec<u8> = if compressible {
        b"Tenfold keeps ten fragments of everything. "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    } else {
        let mut data = vec![0u8; len];
        rand::Rng::fill(&mut rand::rng(), data.as_mut_slice());
        data
    };
    std::fs::write(path, data).expect("write test file");
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}
