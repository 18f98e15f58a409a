//! Names that come from clients: zip entry names must stay inside the
//! archive's folder, listing tokens must decode or be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenfold::zip_stream::entry_name;
use tenfold_common::listing::decode_token;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = decode_token(&text);
    let split = data.first().map_or(0, |b| usize::from(*b)) % (text.len() + 1);
    let (prefix, key) = text.split_at(text.floor_char_boundary(split));
    let name = entry_name(key, prefix);
    assert!(!name.is_empty());
    assert!(!name.starts_with('/') && !name.contains('\\'), "{name:?}");
    assert!(name.split('/').all(|p| !p.is_empty() && p != "." && p != ".."), "{name:?}");
    assert!(!name.chars().any(char::is_control), "{name:?}");
});
