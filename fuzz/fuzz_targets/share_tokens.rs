//! Share-link tokens come from anyone: arbitrary text must be refused
//! without a panic, and only a token signed with the key verifies.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tenfold::crypto::{Keyring, MasterKey};
use tenfold::share::{ID_LEN, Token};

static KEYRING: LazyLock<Keyring> =
    LazyLock::new(|| Keyring::new(MasterKey::parse(&"ab".repeat(32)).unwrap(), vec![]));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(token) = Token::decode(&KEYRING, &text) {
        // Only what the key signed verifies: the same token re-encodes to
        // the same text.
        assert_eq!(token.encode(&KEYRING), text);
    }
    if let Some(raw) = data.get(..ID_LEN + 8) {
        let token = Token {
            id: raw[..ID_LEN].try_into().unwrap(),
            expires_at: i64::from_be_bytes(raw[ID_LEN..].try_into().unwrap()),
        };
        assert_eq!(Token::decode(&KEYRING, &token.encode(&KEYRING)), Some(token));
    }
});
