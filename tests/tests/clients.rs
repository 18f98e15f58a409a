//! Real S3 clients against a Tenfold gateway: a boto3 suite (conditional
//! requests, headers, copy, batch delete, big listings, parts, presigned
//! URLs, checksums).

use std::process::Command;

use tests::{
    ACCESS_KEY, Cluster, SECRET_KEY, TempDir, presigned, run, sha256_file, unsigned_payload,
    write_file,
};

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
/// multipart checksums, `x-amz-expected-bucket-owner`.
#[test]
fn boto3_modern_requests() {
    let cluster = Cluster::start(3, 1, "2GiB");
    boto3(
        &cluster,
        &[
            "conditional_writes",
            "attributes_and_tags",
            "bucket_pages_and_full_object_checksums",
            "expected_bucket_owner",
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

    // The aws CLI v2: part checksums, and the expected bucket owner.
    let v2 = aws.clone().with_program("/usr/bin/aws");
    let attrs = v2.json(&[
        "s3api",
        "get-object-attributes",
        "--bucket",
        "page-a",
        "--key",
        "full-CRC32",
        "--object-attributes",
        "ObjectParts",
    ]);
    let parts = attrs["ObjectParts"]["Parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{attrs}");
    assert!(
        parts.iter().all(|p| p["ChecksumCRC32"].is_string()),
        "{attrs}"
    );
    let owner = v2.json(&["s3api", "list-buckets"])["Owner"]["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let head = |owner: &str| {
        let args = ["s3api", "head-object", "--bucket", "owned", "--key", "k"];
        v2.run(&[&args[..], &["--expected-bucket-owner", owner]].concat())
    };
    assert!(head(&owner).status.success());
    let refused = head("111122223333");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "another owner's id was accepted");
    assert!(err.contains("403"), "{err}");
}

/// curl PUTs `file` from its standard input (`-T -`: `Transfer-Encoding:
/// chunked`, no Content-Length) with `args`; returns the HTTP status and
/// the response body.
fn curl_streamed(args: &[String], file: &std::path::Path, url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(args)
        .args(["-w", "\n%{http_code}", "-T", "-", url])
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// Bodies without a Content-Length (`curl -T -`, chunked): PutObject and
/// UploadPart signed with UNSIGNED-PAYLOAD and a presigned PUT are stored
/// whole; a body signed by its SHA-256 still needs its length (411), as in
/// S3; a bad signature is refused.
#[test]
fn curl_streams_puts_without_a_length() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://streamed"]);
    let dir = TempDir::new("streamed");
    // Three segments, the last one short.
    let big = dir.path().join("big");
    write_file(&big, (17 << 20) + 5, false);
    let mut args = unsigned_payload(ACCESS_KEY, SECRET_KEY);
    args.retain(|a| a != "-f");
    let url = format!("{}/streamed/big", cluster.endpoint);
    assert_eq!(curl_streamed(&args, &big, &url).0, "200");
    let back = dir.path().join("big.back");
    aws.ok(&["s3", "cp", "s3://streamed/big", back.to_str().unwrap()]);
    assert_eq!(sha256_file(&back), sha256_file(&big));
    let head = aws.json(&[
        "s3api",
        "head-object",
        "--bucket",
        "streamed",
        "--key",
        "big",
    ]);
    assert_eq!(head["ContentLength"], (17 << 20) + 5, "{head}");

    // An empty streamed body is an empty object.
    let empty = dir.path().join("empty");
    write_file(&empty, 0, false);
    let url = format!("{}/streamed/empty", cluster.endpoint);
    assert_eq!(curl_streamed(&args, &empty, &url).0, "200");
    let head = aws.json(&[
        "s3api",
        "head-object",
        "--bucket",
        "streamed",
        "--key",
        "empty",
    ]);
    assert_eq!(head["ContentLength"], 0, "{head}");

    // A part of a multipart upload.
    let upload = aws.json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "streamed",
        "--key",
        "parts",
    ]);
    let id = upload["UploadId"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/streamed/parts?partNumber=1&uploadId={id}",
        cluster.endpoint
    );
    let (code, _) = curl_streamed(&args, &big, &url);
    assert_eq!(code, "200");
    let parts = aws.json(&[
        "s3api",
        "list-parts",
        "--bucket",
        "streamed",
        "--key",
        "parts",
        "--upload-id",
        &id,
    ]);
    assert_eq!(parts["Parts"][0]["Size"], (17 << 20) + 5, "{parts}");
    let etag = parts["Parts"][0]["ETag"].as_str().unwrap().to_owned();
    aws.ok(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "streamed",
        "--key",
        "parts",
        "--upload-id",
        &id,
        "--multipart-upload",
        &format!(r#"{{"Parts":[{{"PartNumber":1,"ETag":{etag:?}}}]}}"#),
    ]);
    aws.ok(&["s3", "cp", "s3://streamed/parts", back.to_str().unwrap()]);
    assert_eq!(sha256_file(&back), sha256_file(&big));

    // A presigned PUT (boto3 signs it; curl streams the body).
    let url = presigned(&cluster.endpoint, "put_object", "streamed", "presigned");
    assert_eq!(curl_streamed(&["-s".into()], &big, &url).0, "200");
    aws.ok(&[
        "s3",
        "cp",
        "s3://streamed/presigned",
        back.to_str().unwrap(),
    ]);
    assert_eq!(sha256_file(&back), sha256_file(&big));

    // A body signed by its SHA-256 needs its length, as in S3.
    let mut signed = args.clone();
    signed.pop();
    signed.push(format!("x-amz-content-sha256: {}", sha256_file(&big)));
    let url = format!("{}/streamed/signed", cluster.endpoint);
    let (code, body) = curl_streamed(&signed, &big, &url);
    assert_eq!(code, "411", "{body}");
    assert!(body.contains("MissingContentLength"), "{body}");

    // A wrong secret is refused, and nothing is stored.
    let mut wrong = unsigned_payload(ACCESS_KEY, "not-the-secret");
    wrong.retain(|a| a != "-f");
    let url = format!("{}/streamed/forged", cluster.endpoint);
    let (code, body) = curl_streamed(&wrong, &big, &url);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
    aws.fails(&[
        "s3api",
        "head-object",
        "--bucket",
        "streamed",
        "--key",
        "forged",
    ]);
}

/// Non-ASCII user metadata, as S3 documents it: a value sent as UTF-8 or
/// RFC 2047-encoded is stored decoded, and returned RFC 2047-encoded (HTTP
/// headers are ASCII) — which current SDKs decode back to what was sent.
#[test]
fn non_ascii_metadata_is_kept_and_returned_mail_safe() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://meta"]);
    let dir = TempDir::new("meta");
    let body = dir.path().join("body");
    write_file(&body, 10, false);
    let mut args = unsigned_payload(ACCESS_KEY, SECRET_KEY);
    args.retain(|a| a != "-f");
    for (key, sent) in [
        ("raw", "Zürich 東京"),
        ("encoded", "=?UTF-8?B?WsO8cmljaCDmnbHkuqw=?="),
    ] {
        let out = run(Command::new("curl")
            .args(&args)
            .args(["-w", "%{http_code}", "-o", "/dev/null"])
            .args(["-H", &format!("x-amz-meta-city: {sent}"), "-T"])
            .arg(&body)
            .arg(format!("{}/meta/{key}", cluster.endpoint)));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "PUT {key}");
        let head = aws.json(&["s3api", "head-object", "--bucket", "meta", "--key", key]);
        let value = head["Metadata"]["city"].as_str().unwrap().to_owned();
        assert!(
            value.is_ascii() && value.starts_with("=?UTF-8?"),
            "{key}: {value}"
        );
        let decoded = run(Command::new("python3").args([
            "-c",
            "import email.header,sys; print(str(email.header.make_header(\
             email.header.decode_header(sys.argv[1]))))",
            &value,
        ]));
        assert_eq!(
            String::from_utf8_lossy(&decoded.stdout).trim(),
            "Zürich 東京",
            "{key}: {value}"
        );
    }
}
