//! Frame indexes as read back from the index (any numbers): planning a
//! range must return a plan inside the fragments, or none, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenfold::fragment::FrameIndex;

fuzz_target!(|data: &[u8]| {
    let numbers: Vec<u64> = data
        .chunks(4)
        .map(|c| c.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
        .collect();
    let [plain, segment, start, len, count, rest @ ..] = numbers.as_slice() else {
        return;
    };
    let count = usize::try_from(*count % 12).unwrap_or(0);
    let (payloads, ends) = rest.split_at(count.min(rest.len()));
    let frames = FrameIndex {
        plain: *plain,
        ends: ends.to_vec(),
    };
    if let Some(plan) = frames.plan(*start..start.saturating_add(*len), *segment, payloads) {
        assert!(plan.fragments.end <= payloads.len(), "{plan:?}");
        assert!(plan.frames.end <= frames.ends.len(), "{plan:?}");
    }
});
