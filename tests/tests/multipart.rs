//! Multipart uploads through the `aws` CLI: `s3 cp` of large files, and
//! every multipart call by hand, with the errors S3 gives.

use std::path::Path;
use std::time::Duration;

use md5_digest::{Digest, Md5};
use tests::{Cluster, TempDir, assert_placements, eventually, sha256_file, write_file};

/// The arguments of `s3api op` on upload `id` of `bucket`/`key`, then
/// `rest`.
fn on_upload<'a>(
    op: &'a str,
    (bucket, key, id): (&'a str, &'a str, &'a str),
    rest: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "s3api",
        op,
        "--bucket",
        bucket,
        "--key",
        key,
        "--upload-id",
        id,
    ];
    args.extend_from_slice(rest);
    args
}

/// The arguments of `s3api upload-part` sending `body` as part `number` of
/// upload `id`.
fn upload_part<'a>(
    bucket: &'a str,
    key: &'a str,
    id: &'a str,
    number: &'a str,
    body: &'a Path,
) -> Vec<&'a str> {
    let body = body.to_str().expect("a UTF-8 path");
    on_upload(
        "upload-part",
        (bucket, key, id),
        &["--part-number", number, "--body", body],
    )
}

/// The arguments of `s3api complete-multipart-upload` of upload `id` with
/// `parts` (its `--multipart-upload` JSON).
fn complete<'a>(bucket: &'a str, key: &'a str, id: &'a str, parts: &'a str) -> Vec<&'a str> {
    on_upload(
        "complete-multipart-upload",
        (bucket, key, id),
        &["--multipart-upload", parts],
    )
}

fn etag_of(v: &serde_json::Value) -> String {
    v["ETag"]
        .as_str()
        .expect("ETag")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn s3_cp_of_a_large_file_goes_multipart_and_round_trips() {
    let cluster = Cluster::start(4, 2, "4GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("mpcp");
    aws.ok(&["s3", "mb", "s3://mpcp"]);
    let src = tmp.path().join("src");
    write_file(&src, 40 << 20, false);
    // aws s3 cp switches to multipart above 8 MiB, in 8 MiB parts.
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://mpcp/big"]);
    let head = aws.json(&["s3api", "head-object", "--bucket", "mpcp", "--key", "big"]);
    assert_eq!(head["ContentLength"], 40 << 20);
    assert!(etag_of(&head).ends_with("-5"), "multipart ETag: {head}");
    let dst = tmp.path().join("dst");
    aws.ok(&["s3", "cp", "s3://mpcp/big", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));
    let report = cluster.inspect("mpcp", "big");
    assert_eq!(
        assert_placements(&report, 3, 1),
        50,
        "five parts of ten fragments"
    );
    // A range across the boundary of parts 1 and 2.
    let part = tmp.path().join("range");
    let start = (8 << 20) - 1000;
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "mpcp",
        "--key",
        "big",
        "--range",
        &format!("bytes={start}-{}", start + 1999),
        part.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&part).unwrap(),
        std::fs::read(&src).unwrap()[start..start + 2000]
    );
    // Overwriting it with a small object frees every part's fragments.
    let before = cluster.stored_replicas();
    let small = tmp.path().join("small");
    write_file(&small, 1000, false);
    aws.ok(&["s3", "cp", small.to_str().unwrap(), "s3://mpcp/big"]);
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas()
            < before / 10),
        "old parts stay on the nodes"
    );
    // The same 40 MiB in one PUT: 50 fragments and 200 placements are
    // recorded by multi-row INSERTs of at most 64 rows, on both engines.
    aws.ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "mpcp",
        "--key",
        "single",
        "--body",
        src.to_str().unwrap(),
    ]);
    let report = cluster.inspect("mpcp", "single");
    assert_eq!(assert_placements(&report, 3, 1), 50, "{report}");
    let single = tmp.path().join("single");
    aws.ok(&["s3", "cp", "s3://mpcp/single", single.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&single));
}

#[test]
fn multipart_calls_by_hand() {
    let cluster = Cluster::start(3, 1, "4GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("mphand");
    aws.ok(&["s3", "mb", "s3://hand"]);
    let create = aws.json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "hand",
        "--key",
        "obj",
        "--content-type",
        "text/x-parts",
        "--metadata",
        "k=v",
    ]);
    let id = create["UploadId"].as_str().unwrap().to_owned();
    let p1 = tmp.path().join("p1");
    let p2 = tmp.path().join("p2");
    write_file(&p1, 5 << 20, true);
    write_file(&p2, 1 << 20, false);
    let e1 = etag_of(&aws.json(&upload_part("hand", "obj", &id, "1", &p1)));
    // Re-uploading a part replaces it.
    let e2_first = etag_of(&aws.json(&upload_part("hand", "obj", &id, "2", &p1)));
    let e2 = etag_of(&aws.json(&upload_part("hand", "obj", &id, "2", &p2)));
    assert_eq!(e1, e2_first);
    assert_eq!(e1, hex::encode(Md5::digest(std::fs::read(&p1).unwrap())));

    let parts = aws.json(&on_upload("list-parts", ("hand", "obj", &id), &[]));
    let listed: Vec<(u64, u64)> = parts["Parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["PartNumber"].as_u64().unwrap(),
                p["Size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(1, 5 << 20), (2, 1 << 20)]);
    let uploads = aws.json(&["s3api", "list-multipart-uploads", "--bucket", "hand"]);
    assert_eq!(uploads["Uploads"][0]["UploadId"], id.as_str());
    assert_eq!(uploads["Uploads"][0]["Key"], "obj");

    // Not visible before completion.
    assert!(
        aws.fails(&["s3api", "head-object", "--bucket", "hand", "--key", "obj"])
            .contains("404")
    );
    let wrong = format!(
        r#"{{"Parts":[{{"PartNumber":1,"ETag":"{e1}"}},{{"PartNumber":2,"ETag":"{e1}"}}]}}"#
    );
    let err = aws.fails(&complete("hand", "obj", &id, &wrong));
    assert!(err.contains("InvalidPart"), "{err}");
    let disordered = format!(
        r#"{{"Parts":[{{"PartNumber":2,"ETag":"{e2}"}},{{"PartNumber":1,"ETag":"{e1}"}}]}}"#
    );
    let err = aws.fails(&complete("hand", "obj", &id, &disordered));
    assert!(err.contains("InvalidPartOrder"), "{err}");
    let good = format!(
        r#"{{"Parts":[{{"PartNumber":1,"ETag":"{e1}"}},{{"PartNumber":2,"ETag":"{e2}"}}]}}"#
    );
    let done = aws.json(&complete("hand", "obj", &id, &good));
    // Completing again with the same list answers the same object; another
    // list does not.
    let again = aws.json(&complete("hand", "obj", &id, &good));
    assert_eq!(etag_of(&again), etag_of(&done));
    let other = format!(r#"{{"Parts":[{{"PartNumber":1,"ETag":"{e1}"}}]}}"#);
    let err = aws.fails(&complete("hand", "obj", &id, &other));
    assert!(err.contains("NoSuchUpload"), "{err}");
    let mut md5s = Vec::new();
    md5s.extend(hex::decode(&e1).unwrap());
    md5s.extend(hex::decode(&e2).unwrap());
    assert_eq!(
        etag_of(&done),
        format!("{}-2", hex::encode(Md5::digest(&md5s)))
    );

    let dst = tmp.path().join("dst");
    let got = aws.json(&[
        "s3api",
        "get-object",
        "--bucket",
        "hand",
        "--key",
        "obj",
        dst.to_str().unwrap(),
    ]);
    let mut expected = std::fs::read(&p1).unwrap();
    expected.extend(std::fs::read(&p2).unwrap());
    assert_eq!(std::fs::read(&dst).unwrap(), expected);
    assert_eq!(got["ContentType"], "text/x-parts");
    assert_eq!(got["Metadata"]["k"], "v");
    let uploads = aws.json(&["s3api", "list-multipart-uploads", "--bucket", "hand"]);
    assert!(
        uploads
            .get("Uploads")
            .is_none_or(|u| u.as_array().unwrap().is_empty()),
        "{uploads}"
    );
    let err = aws.fails(&upload_part("hand", "obj", &id, "3", &p2));
    assert!(err.contains("NoSuchUpload"), "{err}");

    // Small parts but the last are refused.
    let small = aws.json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "hand",
        "--key",
        "small",
    ]);
    let sid = small["UploadId"].as_str().unwrap().to_owned();
    let s1 = etag_of(&aws.json(&upload_part("hand", "small", &sid, "1", &p2)));
    let s2 = etag_of(&aws.json(&upload_part("hand", "small", &sid, "2", &p2)));
    let list = format!(
        r#"{{"Parts":[{{"PartNumber":1,"ETag":"{s1}"}},{{"PartNumber":2,"ETag":"{s2}"}}]}}"#
    );
    let err = aws.fails(&complete("hand", "small", &sid, &list));
    assert!(err.contains("EntityTooSmall"), "{err}");
    let err = aws.fails(&upload_part("hand", "small", &sid, "0", &p2));
    assert!(err.contains("InvalidArgument"), "{err}");

    // Abort frees every fragment the upload placed.
    let before_abort = cluster.stored_replicas();
    aws.ok(&on_upload(
        "abort-multipart-upload",
        ("hand", "small", &sid),
        &[],
    ));
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas()
            < before_abort),
        "aborted parts stay on the nodes"
    );
    let err = aws.fails(&on_upload("list-parts", ("hand", "small", &sid), &[]));
    assert!(err.contains("NoSuchUpload"), "{err}");
    aws.ok(&["s3", "rm", "s3://hand/obj"]);
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas() == 0),
        "{} fragments left",
        cluster.stored_replicas()
    );
}

#[test]
fn abandoned_uploads_are_cleaned_up() {
    // The older key, a number of seconds, still works.
    let cluster = Cluster::build(3, 1, "4GiB")
        .storage("abandoned_upload_seconds", "20")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("abandon");
    aws.ok(&["s3", "mb", "s3://gone"]);
    let create = aws.json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "gone",
        "--key",
        "k",
    ]);
    let id = create["UploadId"].as_str().unwrap().to_owned();
    let p = tmp.path().join("p");
    write_file(&p, 1 << 20, false);
    aws.ok(&upload_part("gone", "k", &id, "1", &p));
    // 20 s of age: room for a slow machine to get here first.
    assert!(cluster.stored_replicas() > 0);
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas() == 0),
        "the abandoned upload's fragments were never removed"
    );
    let uploads = aws.json(&["s3api", "list-multipart-uploads", "--bucket", "gone"]);
    assert!(
        uploads
            .get("Uploads")
            .is_none_or(|u| u.as_array().unwrap().is_empty()),
        "{uploads}"
    );
}
