//! The Rust AWS SDK as a client: it streams `aws-chunked` bodies with the
//! checksum in a trailer, which the gateway verifies and keeps.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use tests::{ACCESS_KEY, Cluster, SECRET_KEY, TempDir, sdk_client, write_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_checksum_trailers_are_verified_and_kept() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(3, 1, "2GiB"))
        .await
        .unwrap();
    let s3 = sdk_client(&cluster.endpoint, ACCESS_KEY, SECRET_KEY);
    s3.create_bucket().bucket("sdk").send().await.unwrap();
    let tmp = TempDir::new("sdk");
    let file = tmp.path().join("body");
    write_file(&file, 3 << 20, false);
    let data = std::fs::read(&file).unwrap();
    let expected = base64_crc32(&data);

    let put = s3
        .put_object()
        .bucket("sdk")
        .key("streamed")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .content_encoding("gzip")
        .body(ByteStream::from_path(&file).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(put.checksum_crc32(), Some(expected.as_str()));
    let head = s3
        .head_object()
        .bucket("sdk")
        .key("streamed")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.checksum_crc32(),
        Some(expected.as_str()),
        "the CRC32 is kept with the object"
    );
    // The body's real encoding is kept; its framing (`aws-chunked`) is not.
    assert_eq!(head.content_encoding(), Some("gzip"));
    let got = s3
        .get_object()
        .bucket("sdk")
        .key("streamed")
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.as_ref(), data.as_slice());

    // CRC32C in a trailer: the SDK computes it, the gateway verifies it,
    // keeps it and returns it; a wrong one is refused.
    let put = s3
        .put_object()
        .bucket("sdk")
        .key("crc32c")
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let sent = put.checksum_crc32_c().expect("CRC32C echoed").to_owned();
    let head = s3
        .head_object()
        .bucket("sdk")
        .key("crc32c")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_crc32_c(), Some(sent.as_str()));
    let err = s3
        .put_object()
        .bucket("sdk")
        .key("crc32c-wrong")
        .checksum_crc32_c("AAAAAA==")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some("BadDigest"), "{err:?}");

    // A checksum that does not match the body is refused and stores nothing.
    let err = s3
        .put_object()
        .bucket("sdk")
        .key("wrong")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some("BadDigest"), "{err:?}");
    assert!(
        s3.head_object()
            .bucket("sdk")
            .key("wrong")
            .send()
            .await
            .is_err()
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_get_part_and_composite_checksums() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

    let cluster = tokio::task::spawn_blocking(|| Cluster::start(3, 1, "2GiB"))
        .await
        .unwrap();
    let s3 = sdk_client(&cluster.endpoint, ACCESS_KEY, SECRET_KEY);
    s3.create_bucket().bucket("composite").send().await.unwrap();
    let parts: Vec<Vec<u8>> = vec![vec![b'a'; 5 << 20], vec![b'b'; 1000]];
    let create = s3
        .create_multipart_upload()
        .bucket("composite")
        .key("obj")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap();
    let id = create.upload_id().unwrap();
    let mut completed = Vec::new();
    let mut raw = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let number = i32::try_from(i + 1).unwrap();
        let out = s3
            .upload_part()
            .bucket("composite")
            .key("obj")
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let crc = out.checksum_crc32().expect("the part's CRC32");
        assert_eq!(crc, base64_crc32(data), "part {number}");
        raw.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
        completed.push((number, out.e_tag().unwrap().to_owned(), crc.to_owned()));
    }
    let list = |wrong: bool| {
        let parts = completed
            .iter()
            .map(|(n, etag, crc)| {
                let crc = if wrong && *n == 2 { "AAAAAA==" } else { crc };
                CompletedPart::builder()
                    .part_number(*n)
                    .e_tag(etag)
                    .checksum_crc32(crc)
                    .build()
            })
            .collect();
        CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build()
    };
    // A part listed with a checksum that is not its own is refused.
    let err = s3
        .complete_multipart_upload()
        .bucket("composite")
        .key("obj")
        .upload_id(id)
        .multipart_upload(list(true))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some("InvalidPart"), "{err:?}");
    let done = s3
        .complete_multipart_upload()
        .bucket("composite")
        .key("obj")
        .upload_id(id)
        .multipart_upload(list(false))
        .send()
        .await
        .unwrap();
    let composite = format!("{}-2", base64_crc32(&raw));
    assert_eq!(done.checksum_crc32(), Some(composite.as_str()));
    let head = s3
        .head_object()
        .bucket("composite")
        .key("obj")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_crc32(), Some(composite.as_str()));
    let got = s3
        .get_object()
        .bucket("composite")
        .key("obj")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.len(), (5 << 20) + 1000);
    drop(cluster);
}

/// The S3 error code of a failed SDK call.
fn error_code<E: aws_sdk_s3::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_s3::error::SdkError<E, R>,
) -> Option<&str> {
    err.as_service_error()
        .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
}

fn base64_crc32(data: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(crc32fast::hash(data).to_be_bytes())
}
