//! rclone, s3cmd and more of the aws CLI (sync, presign) against a Tenfold
//! gateway.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tests::{ACCESS_KEY, Cluster, Curl, SECRET_KEY, TempDir, run, sha256_file, write_file};

fn assert_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    write_file(&dir.join("a.bin"), 200_000, false);
    write_file(&dir.join("b.txt"), 50_000, true);
    write_file(&dir.join("sub/c.bin"), 1 << 20, false);
    write_file(&dir.join("sub/deeper/d.txt"), 10, true);
    write_file(&dir.join("empty"), 0, false);
}

fn same_tree(a: &Path, b: &Path) {
    for rel in ["a.bin", "b.txt", "sub/c.bin", "sub/deeper/d.txt", "empty"] {
        assert_eq!(
            sha256_file(&a.join(rel)),
            sha256_file(&b.join(rel)),
            "{rel}"
        );
    }
}

fn rclone(cluster: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new("rclone");
    cmd.args(args)
        .args([
            "--s3-upload-cutoff",
            "5M",
            "--s3-chunk-size",
            "5M",
            "--retries",
            "1",
            "--low-level-retries",
            "1",
        ])
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_TF_TYPE", "s3")
        .env("RCLONE_CONFIG_TF_PROVIDER", "Other")
        .env("RCLONE_CONFIG_TF_ACCESS_KEY_ID", ACCESS_KEY)
        .env("RCLONE_CONFIG_TF_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("RCLONE_CONFIG_TF_ENDPOINT", &cluster.endpoint)
        .env("RCLONE_CONFIG_TF_REGION", "us-east-1")
        .env("RCLONE_CONFIG_TF_FORCE_PATH_STYLE", "true")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE");
    cmd
}

#[test]
fn rclone_copy_check_sync_cat_rcat_delete() {
    let cluster = Cluster::start(3, 1, "4GiB");
    let tmp = TempDir::new("rclone");
    let src = tmp.path().join("src");
    tree(&src);
    let src_s = src.to_str().unwrap();
    assert_ok(
        &run(&mut rclone(&cluster, &["mkdir", "tf:rclone-bkt"])),
        "rclone mkdir",
    );
    assert_ok(
        &run(&mut rclone(&cluster, &["copy", src_s, "tf:rclone-bkt/dir"])),
        "rclone copy",
    );
    assert_ok(
        &run(&mut rclone(
            &cluster,
            &["check", src_s, "tf:rclone-bkt/dir"],
        )),
        "rclone check",
    );
    let listed = assert_ok(
        &run(&mut rclone(&cluster, &["lsf", "-R", "tf:rclone-bkt/dir"])),
        "rclone lsf",
    );
    for name in ["a.bin", "b.txt", "sub/c.bin", "sub/deeper/d.txt", "empty"] {
        assert!(
            listed.lines().any(|l| l == name),
            "{name} missing from {listed}"
        );
    }
    let part = assert_ok(
        &run(&mut rclone(
            &cluster,
            &[
                "cat",
                "--offset",
                "1000",
                "--count",
                "64",
                "tf:rclone-bkt/dir/b.txt",
            ],
        )),
        "rclone cat",
    );
    assert_eq!(
        part.as_bytes(),
        &std::fs::read(src.join("b.txt")).unwrap()[1000..1064]
    );

    // sync removes what the source no longer has.
    std::fs::remove_file(src.join("a.bin")).unwrap();
    assert_ok(
        &run(&mut rclone(&cluster, &["sync", src_s, "tf:rclone-bkt/dir"])),
        "rclone sync",
    );
    let listed = assert_ok(
        &run(&mut rclone(&cluster, &["lsf", "tf:rclone-bkt/dir"])),
        "rclone lsf",
    );
    assert!(!listed.contains("a.bin"), "{listed}");
    let back = tmp.path().join("back");
    assert_ok(
        &run(&mut rclone(
            &cluster,
            &["copy", "tf:rclone-bkt/dir", back.to_str().unwrap()],
        )),
        "rclone copy back",
    );
    assert_eq!(
        sha256_file(&back.join("sub/c.bin")),
        sha256_file(&src.join("sub/c.bin"))
    );

    // rcat of a stream over the upload cutoff goes multipart.
    let stream = tmp.path().join("stream");
    write_file(&stream, 12 << 20, false);
    let mut child = rclone(&cluster, &["rcat", "tf:rclone-bkt/streamed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&stream).unwrap())
        .unwrap();
    assert_ok(&child.wait_with_output().unwrap(), "rclone rcat");
    let got = tmp.path().join("got");
    assert_ok(
        &run(&mut rclone(
            &cluster,
            &["copyto", "tf:rclone-bkt/streamed", got.to_str().unwrap()],
        )),
        "rclone copyto",
    );
    assert_eq!(sha256_file(&stream), sha256_file(&got));
    let head = cluster.aws().json(&[
        "s3api",
        "head-object",
        "--bucket",
        "rclone-bkt",
        "--key",
        "streamed",
    ]);
    assert!(
        head["ETag"].as_str().unwrap().contains('-'),
        "rcat should have gone multipart: {head}"
    );

    assert_ok(
        &run(&mut rclone(&cluster, &["delete", "tf:rclone-bkt/dir"])),
        "rclone delete",
    );
    let listed = assert_ok(
        &run(&mut rclone(&cluster, &["lsf", "-R", "tf:rclone-bkt/dir"])),
        "rclone lsf",
    );
    assert!(listed.trim().is_empty(), "{listed}");
}

#[test]
fn s3cmd_mb_put_get_ls_del() {
    let cluster = Cluster::start(3, 1, "4GiB");
    let tmp = TempDir::new("s3cmd");
    let host = cluster.endpoint.trim_start_matches("http://");
    let cfg = tmp.path().join("s3cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nhost_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| {
        run(Command::new("s3cmd")
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE"))
    };
    assert_ok(&s3cmd(&["mb", "s3://s3cmd"]), "s3cmd mb");
    let big = tmp.path().join("big");
    write_file(&big, 12 << 20, false);
    assert_ok(
        &s3cmd(&[
            "put",
            "--multipart-chunk-size-mb=5",
            big.to_str().unwrap(),
            "s3://s3cmd/big",
        ]),
        "s3cmd put",
    );
    let small = tmp.path().join("small");
    write_file(&small, 1234, true);
    assert_ok(
        &s3cmd(&["put", small.to_str().unwrap(), "s3://s3cmd/dir/small"]),
        "s3cmd put small",
    );
    let listed = assert_ok(&s3cmd(&["ls", "-r", "s3://s3cmd"]), "s3cmd ls");
    assert!(
        listed.contains("s3://s3cmd/big") && listed.contains("s3://s3cmd/dir/small"),
        "{listed}"
    );
    let got = tmp.path().join("got");
    assert_ok(
        &s3cmd(&["get", "s3://s3cmd/big", got.to_str().unwrap()]),
        "s3cmd get",
    );
    assert_eq!(sha256_file(&big), sha256_file(&got));
    let head = cluster
        .aws()
        .json(&["s3api", "head-object", "--bucket", "s3cmd", "--key", "big"]);
    assert!(
        head["ETag"].as_str().unwrap().ends_with("-3\""),
        "s3cmd put should be multipart: {head}"
    );
    assert_ok(&s3cmd(&["del", "s3://s3cmd/big"]), "s3cmd del");
    assert_ok(&s3cmd(&["del", "s3://s3cmd/dir/small"]), "s3cmd del");
    let listed = assert_ok(&s3cmd(&["ls", "-r", "s3://s3cmd"]), "s3cmd ls");
    assert!(listed.trim().is_empty(), "{listed}");
    assert_ok(&s3cmd(&["rb", "s3://s3cmd"]), "s3cmd rb");
}

#[test]
fn aws_sync_both_ways_large_cp_and_presign() {
    let cluster = Cluster::start(4, 2, "8GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("sync");
    let src = tmp.path().join("src");
    tree(&src);
    aws.ok(&["s3", "mb", "s3://sync"]);
    aws.ok(&["s3", "sync", src.to_str().unwrap(), "s3://sync/tree"]);
    let back = tmp.path().join("back");
    aws.ok(&["s3", "sync", "s3://sync/tree", back.to_str().unwrap()]);
    same_tree(&src, &back);
    // A second sync has nothing to do.
    let again = aws.ok(&["s3", "sync", src.to_str().unwrap(), "s3://sync/tree"]);
    assert!(again.trim().is_empty(), "{again}");
    let listed = aws.ok(&["s3", "ls", "--recursive", "s3://sync/tree/"]);
    assert_eq!(listed.lines().count(), 5, "{listed}");

    // More than 100 MiB through `s3 cp` (multipart), compared whole and by
    // ranges against slices of the source.
    let big = tmp.path().join("big");
    write_file(&big, 110 << 20, false);
    aws.ok(&["s3", "cp", big.to_str().unwrap(), "s3://sync/big"]);
    let got = tmp.path().join("got");
    aws.ok(&["s3", "cp", "s3://sync/big", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&big), sha256_file(&got));
    let source = std::fs::read(&big).unwrap();
    for (start, end) in [
        (0usize, 0usize),
        (8 << 20, (16 << 20) + 5),
        ((110 << 20) - 7, (110 << 20) - 1),
    ] {
        let part = tmp.path().join("part");
        aws.ok(&[
            "s3api",
            "get-object",
            "--bucket",
            "sync",
            "--key",
            "big",
            "--range",
            &format!("bytes={start}-{end}"),
            part.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(&part).unwrap(),
            &source[start..=end],
            "range {start}-{end}"
        );
    }

    let url = aws.ok(&[
        "s3",
        "presign",
        "s3://sync/tree/b.txt",
        "--expires-in",
        "300",
    ]);
    let fetched = tmp.path().join("fetched");
    let status = Curl::new().save(url.trim(), &fetched);
    assert_eq!(status, 200, "curl of a presigned URL");
    assert_eq!(sha256_file(&fetched), sha256_file(&src.join("b.txt")));

    aws.ok(&["s3", "rm", "--recursive", "s3://sync/"]);
    let listed = aws.ok(&["s3", "ls", "--recursive", "s3://sync/"]);
    assert!(listed.trim().is_empty(), "{listed}");
}

#[test]
fn aws_cli_v2_round_trips_and_multipart() {
    let cluster = Cluster::start(3, 1, "4GiB");
    let v2 = cluster.aws().with_program("/usr/bin/aws");
    let version = v2.ok(&["--version"]);
    assert!(version.starts_with("aws-cli/2"), "{version}");
    let tmp = TempDir::new("awsv2");
    v2.ok(&["s3", "mb", "s3://cli-v2"]);
    for (i, size) in [0usize, 1024, 20 << 20].into_iter().enumerate() {
        let src = tmp.path().join(format!("src{i}"));
        write_file(&src, size, i == 1);
        let url = format!("s3://cli-v2/o{i}");
        v2.ok(&["s3", "cp", src.to_str().unwrap(), &url]);
        let dst = tmp.path().join(format!("dst{i}"));
        v2.ok(&["s3", "cp", &url, dst.to_str().unwrap()]);
        assert_eq!(sha256_file(&src), sha256_file(&dst), "size {size}");
    }
    let head = v2.json(&["s3api", "head-object", "--bucket", "cli-v2", "--key", "o2"]);
    assert!(
        head["ETag"].as_str().unwrap().contains('-'),
        "20 MiB through aws v2 goes multipart: {head}"
    );
    let listed = v2.ok(&["s3", "ls", "s3://cli-v2/"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    v2.ok(&["s3", "rm", "--recursive", "s3://cli-v2/"]);
    v2.ok(&["s3", "rb", "s3://cli-v2"]);
}
