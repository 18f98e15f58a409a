//! s3s-e2e, a public S3 conformance runner, against a Tenfold gateway.
//! Every case must pass but STS (AssumeRole), which Tenfold does not
//! offer.

use std::process::Command;

use tests::{ACCESS_KEY, Cluster, SECRET_KEY, TempDir, run};

/// Fixtures allowed to fail, and why.
const NOT_OFFERED: &[&str] = &["STS"];

#[test]
fn s3s_e2e_passes_but_for_sts() {
    let cluster = Cluster::start(4, 2, "1GiB");
    let tmp = TempDir::new("s3s-e2e");
    let report = tmp.path().join("report.json");
    let out = run(Command::new("s3s-e2e")
        .args(["--json", report.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &cluster.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap_or_else(|e| {
            panic!(
                "s3s-e2e wrote no report ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }))
        .expect("report JSON");
    let (mut passed, mut unexpected) = (Vec::new(), Vec::new());
    for suite in report["suites"].as_array().expect("suites") {
        for fixture in suite["fixtures"].as_array().expect("fixtures") {
            let name = fixture["name"].as_str().unwrap_or_default();
            for case in fixture["cases"].as_array().expect("cases") {
                let case_name = format!("{name}/{}", case["name"].as_str().unwrap_or_default());
                if case["passed"].as_bool() == Some(true) {
                    passed.push(case_name);
                } else if !NOT_OFFERED.contains(&name) {
                    unexpected.push(case_name);
                }
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "s3s-e2e cases failed: {unexpected:?}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        passed.iter().any(|c| c.starts_with("Multipart/"))
            && passed.iter().any(|c| c.starts_with("Tagging/"))
            && passed.len() >= 15,
        "too few cases ran: {passed:?}"
    );
}
