//! The Rust AWS SDK as a client: it streams `aws-chunked` bodies with the
//! checksum in a trailer, which the gateway verifies and keeps.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use tests::{ACCESS_KEY, Cluster, SECRET_KEY, TempDir, write_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_checksum_trailers_are_verified_and_kept() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(3, 1, "2GiB"))
        .await
        .unwrap();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&cluster.endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
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
    let got = s3
        .get_object()
        .bucket("sdk")
        .key("streamed")
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.as_ref(), data.as_slice());

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
    let code = err
        .as_service_error()
        .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
        .map(str::to_owned);
    assert_eq!(code.as_deref(), Some("BadDigest"), "{err:?}");
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

fn base64_crc32(data: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(crc32fast::hash(data).to_be_bytes())
}
