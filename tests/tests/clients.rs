//! Real S3 clients against a Tenfold gateway: a boto3 suite (conditional
//! requests, headers, copy, batch delete, big listings, parts, presigned
//! URLs, checksums).

use std::process::Command;

use tests::{ACCESS_KEY, Cluster, SECRET_KEY, run};

fn boto3(cluster: &Cluster, cases: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/boto3_suite.py");
    let out = run(Command::new("python3")
        .arg(script)
        .args(cases)
        .env("TENFOLD_ENDPOINT", &cluster.endpoint)
        .env("TENFOLD_BASE_DOMAIN", "s3.tenfold.test")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE"));
    assert!(
        out.status.success(),
        "boto3 {cases:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn boto3_conditional_requests_and_headers() {
    let cluster = Cluster::start(3, 1, "2GiB");
    boto3(
        &cluster,
        &[
            "conditional_requests",
            "headers_and_overrides",
            "not_implemented",
        ],
    );
}

#[test]
fn boto3_copy_and_batch_delete() {
    let cluster = Cluster::start(3, 1, "2GiB");
    boto3(&cluster, &["copy_and_batch_delete"]);
}

#[test]
fn boto3_listing_of_more_than_a_thousand_keys() {
    let cluster = Cluster::start(3, 1, "2GiB");
    boto3(&cluster, &["big_listing"]);
}

#[test]
fn boto3_parts_and_presigned_urls() {
    let cluster = Cluster::start(3, 1, "2GiB");
    boto3(&cluster, &["parts_and_presign"]);
}

#[test]
fn boto3_checksums() {
    let cluster = Cluster::start(3, 1, "2GiB");
    boto3(&cluster, &["checksums"]);
}

#[test]
fn boto3_upload_part_copy_and_virtual_hosts() {
    let cluster = Cluster::build(3, 1, "2GiB")
        .config("base_domain", "s3.tenfold.test")
        .start();
    boto3(&cluster, &["part_copy", "virtual_hosted"]);
}

/// S3 round 2: conditional writes (PUT and CompleteMultipartUpload),
/// GetObjectAttributes, object tags, ListBuckets pages, FULL_OBJECT
/// multipart checksums.
#[test]
fn boto3_modern_requests() {
    let cluster = Cluster::start(3, 1, "2GiB");
    boto3(
        &cluster,
        &[
            "conditional_writes",
            "attributes_and_tags",
            "bucket_pages_and_full_object_checksums",
        ],
    );
    // The aws CLI too: tags and attributes.
    let aws = cluster.aws();
    aws.ok(&[
        "s3api",
        "put-object-tagging",
        "--bucket",
        "attrs",
        "--key",
        "mp",
        "--tagging",
        "TagSet=[{Key=cli,Value=yes}]",
    ]);
    let tags = aws.json(&[
        "s3api",
        "get-object-tagging",
        "--bucket",
        "attrs",
        "--key",
        "mp",
    ]);
    assert_eq!(tags["TagSet"][0]["Key"], "cli", "{tags}");
    let attrs = aws.json(&[
        "s3api",
        "get-object-attributes",
        "--bucket",
        "attrs",
        "--key",
        "mp",
        "--object-attributes",
        "ObjectSize",
        "ETag",
    ]);
    assert_eq!(attrs["ObjectSize"], (10 << 20) + 100, "{attrs}");
}
