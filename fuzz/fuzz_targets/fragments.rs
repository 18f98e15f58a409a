//! Stored fragments as a node might return them: any bytes. Decoding must
//! fail cleanly, never panic, whatever the headers, frame index and key.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tenfold::crypto::{Keyring, MasterKey};
use tenfold::fragment::{Chunks, FragmentHeader, FrameIndex, decode_frames, decode_segment};

fuzz_target!(|data: &[u8]| {
    let _ = FragmentHeader::decode(&Bytes::copy_from_slice(data).into());
    if data.len() < 8 {
        return;
    }
    // First bytes: how to cut the rest into fragments and what to expect.
    let (control, rest) = data.split_at(8);
    let count = usize::from(control[0] % 6) + 1;
    let plain_len = usize::from(u16::from_le_bytes([control[1], control[2]]));
    let frame = u64::from(u16::from_le_bytes([control[3], control[4]]));
    let encrypted = control[5] & 1 == 1;
    let piece = rest.len() / count + 1;
    // Each fragment in chunks of one size, as a node's answer arrives.
    let cut = usize::from(control[5] >> 1) + 1;
    let stored: Vec<Chunks> = rest
        .chunks(piece)
        .map(|f| {
            let f = Bytes::copy_from_slice(f);
            (0..f.len())
                .step_by(cut)
                .map(|at| f.slice(at..(at + cut).min(f.len())))
                .collect()
        })
        .collect();
    let ends: Vec<u64> = rest
        .chunks(4)
        .take(usize::from(control[6] % 8))
        .map(|c| u64::from(c[0]) * 97 + u64::from(c.len() as u8))
        .collect();
    let frames = FrameIndex { plain: frame, ends };
    let keyring = Keyring::new(MasterKey::parse(&"11".repeat(32)).unwrap(), Vec::new());
    let key = encrypted.then(|| keyring.new_data_key().unwrap().0);
    let _ = decode_segment(u32::from(control[7]), &stored, plain_len, Some(&frames), key.as_ref());
    let payloads: Vec<u64> = stored.iter().map(|s| s.len().saturating_sub(24) as u64).collect();
    let wanted = u64::from(control[6])..u64::from(control[6]) + u64::from(control[7]) + 1;
    if let Some(plan) = frames.plan(wanted, plain_len as u64, &payloads) {
        let count = u16::try_from(stored.len()).unwrap_or(u16::MAX);
        if let Some(part) = stored.get(plan.fragments.clone()) {
            let _ = decode_frames(u32::from(control[7]), count, part, &plan, &frames, key.as_ref());
        }
    }
});
