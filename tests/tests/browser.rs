//! What browsers send: HTML form uploads (S3's POST Object, with policies
//! made by boto3's `generate_presigned_post`, SigV2 and SigV4, checksums
//! included), cross-origin requests (bucket CORS rules, preflights, a page
//! on another origin), and the upload page.

use std::process::Command;
use std::time::Duration;

use tests::{Cluster, Curl, TempDir, presigned, run, sha256_file, write_file};

/// A presigned POST made by boto3 for `key` in `bucket`, with the policy's
/// extra `conditions` (a Python expression) and `fields`: the form's URL
/// and fields.
fn presigned_post(
    cluster: &Cluster,
    bucket: &str,
    key: &str,
    conditions: &str,
    fields: &str,
    sigv4: bool,
    expires: i64,
) -> (String, Vec<(String, String)>) {
    let config = if sigv4 {
        ", config=botocore.config.Config(signature_version='s3v4')"
    } else {
        ""
    };
    let script = format!(
        "import boto3, botocore.config, json\n\
         c = boto3.client('s3', endpoint_url='{ep}', region_name='us-east-1', \
           aws_access_key_id='{ak}', aws_secret_access_key='{sk}'{config})\n\
         p = c.generate_presigned_post('{bucket}', '{key}', Fields={fields}, Conditions={conditions}, ExpiresIn={expires})\n\
         print(json.dumps(p))",
        ep = cluster.endpoint,
        ak = tests::ACCESS_KEY,
        sk = tests::SECRET_KEY,
    );
    let out = run(Command::new("python3").args(["-c", &script]));
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let post: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fields = post["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (post["url"].as_str().unwrap().to_owned(), fields)
}

/// Posts `fields` and then `file` as a form with curl: status and body.
fn post_form(url: &str, fields: &[(String, String)], file: &std::path::Path) -> (u16, String) {
    let mut args: Vec<String> = vec!["-s".into(), "-w".into(), "\n%{http_code}".into()];
    for (k, v) in fields {
        args.push("--form-string".into());
        args.push(format!("{k}={v}"));
    }
    args.push("-F".into());
    args.push(format!("file=@{}", file.display()));
    args.push(url.into());
    let out = run(Command::new("curl").args(&args));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

fn with(fields: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut fields: Vec<_> = fields.iter().filter(|(k, _)| k != name).cloned().collect();
    fields.insert(0, (name.into(), value.into()));
    fields
}

#[test]
fn form_uploads_follow_their_signed_policy() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://forms"]);
    let tmp = TempDir::new("forms");
    let small = tmp.path().join("small.txt");
    write_file(&small, 100_000, false);
    let large = tmp.path().join("large.bin");
    write_file(&large, 2_000_000, false);
    let range = r#"[["content-length-range", 1, 1048576], ["starts-with", "$key", "in/"]]"#;

    for sigv4 in [false, true] {
        let (url, fields) = presigned_post(
            &cluster,
            "forms",
            "in/${filename}",
            r#"[["content-length-range", 1, 1048576], ["starts-with", "$Content-Type", "text/"], {"x-amz-meta-from": "form"}]"#,
            r#"{"Content-Type": "text/plain", "x-amz-meta-from": "form"}"#,
            sigv4,
            600,
        );
        assert_eq!(
            fields.iter().any(|(k, _)| k == "x-amz-signature"),
            sigv4,
            "{fields:?}"
        );
        let (status, body) = post_form(&url, &fields, &small);
        assert_eq!(status, 204, "sigv4={sigv4}: {body}");
        let got = tmp.path().join("got");
        aws.ok(&["s3", "cp", "s3://forms/in/small.txt", got.to_str().unwrap()]);
        assert_eq!(sha256_file(&small), sha256_file(&got));
        let head = aws.json(&[
            "s3api",
            "head-object",
            "--bucket",
            "forms",
            "--key",
            "in/small.txt",
        ]);
        assert_eq!(head["ContentType"], "text/plain", "{head}");
        assert_eq!(head["Metadata"]["from"], "form", "{head}");
        aws.ok(&["s3", "rm", "s3://forms/in/small.txt"]);
    }

    let (url, fields) = presigned_post(&cluster, "forms", "in/a", range, "{}", false, 600);
    // Asked for, the answer describes the object.
    let (status, body) = post_form(&url, &with(&fields, "success_action_status", "201"), &small);
    // `success_action_status` is not in the policy: refused as an extra field.
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Extra input fields"), "{body}");
    let (status, body) = post_form(&url, &fields, &large);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("<Code>EntityTooLarge</Code>"), "{body}");
    // Another key than the policy names.
    let (status, body) = post_form(&url, &with(&fields, "key", "out/a"), &small);
    assert_eq!(status, 403, "{body}");
    // A policy changed after it was signed.
    let (_, other) = presigned_post(&cluster, "forms", "in/b", range, "{}", false, 600);
    let policy = &other.iter().find(|(k, _)| k == "policy").unwrap().1;
    let (status, body) = post_form(&url, &with(&fields, "policy", policy), &small);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
    // An expired policy.
    let (old_url, old) = presigned_post(&cluster, "forms", "in/a", range, "{}", true, -10);
    let (status, body) = post_form(&old_url, &old, &small);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("expired"), "{body}");
    // No policy at all.
    let bare: Vec<_> = fields.iter().filter(|(k, _)| k == "key").cloned().collect();
    let (status, _) = post_form(&url, &bare, &small);
    assert_eq!(status, 403);
    for key in ["in/a", "out/a"] {
        assert!(
            !aws.run(&["s3api", "head-object", "--bucket", "forms", "--key", key])
                .status
                .success(),
            "a refused form left {key}"
        );
    }

    // `success_action_status` in the policy: 201 with a description.
    let (url, fields) = presigned_post(
        &cluster,
        "forms",
        "in/described",
        r#"[{"success_action_status": "201"}]"#,
        r#"{"success_action_status": "201"}"#,
        true,
        600,
    );
    let (status, body) = post_form(&url, &fields, &small);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("<Key>in/described</Key>"), "{body}");

    // A checksum the policy names: the file must match it.
    let sha = {
        use sha2::Digest;
        base64_simd::STANDARD.encode_to_string(sha2::Sha256::digest(std::fs::read(&small).unwrap()))
    };
    for (key, file, status) in [("in/summed", &small, 204), ("in/summed-bad", &large, 400)] {
        let (url, fields) = presigned_post(
            &cluster,
            "forms",
            key,
            &format!(r#"[{{"x-amz-checksum-sha256": "{sha}"}}]"#),
            &format!(r#"{{"x-amz-checksum-sha256": "{sha}"}}"#),
            true,
            600,
        );
        let (got, body) = post_form(&url, &fields, file);
        assert_eq!(got, status, "{key}: {body}");
        if status == 400 {
            assert!(body.contains("BadDigest"), "{body}");
            let absent = aws.run(&["s3api", "head-object", "--bucket", "forms", "--key", key]);
            assert!(
                !absent.status.success(),
                "a form with a wrong checksum stored {key}"
            );
        } else {
            let head = aws.json(&[
                "s3api",
                "head-object",
                "--bucket",
                "forms",
                "--key",
                key,
                "--checksum-mode",
                "ENABLED",
            ]);
            assert_eq!(head["ChecksumSHA256"], sha.as_str(), "{head}");
        }
    }

    // A large form is streamed, never held whole in memory.
    let big = tmp.path().join("big.bin");
    write_file(&big, 300 << 20, false);
    let (url, fields) = presigned_post(&cluster, "forms", "in/big", "[]", "{}", true, 600);
    let pid = cluster.gateway.0.id();
    let (status, body) = post_form(&url, &fields, &big);
    assert_eq!(status, 204, "{body}");
    let peak = tests::peak_rss_kib(pid);
    assert!(
        peak < 200 << 10,
        "the gateway's peak RSS reached {peak} KiB for a 300 MiB form"
    );
    let got = tmp.path().join("big.got");
    aws.ok(&["s3", "cp", "s3://forms/in/big", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&big), sha256_file(&got));
    assert!(!cluster.gateway_log().contains("panicked"));
}

#[test]
fn cors_rules_answer_preflights_and_decorate_responses() {
    let cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://cors"]);
    let tmp = TempDir::new("cors");
    let file = tmp.path().join("f");
    write_file(&file, 1000, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://cors/f"]);
    let preflight = |origin: &str, method: &str, headers: &str| {
        // `-i`: the answer's headers lead its body.
        let mut curl = Curl::new()
            .args(&["-i"])
            .method("OPTIONS")
            .header(&format!("Origin: {origin}"))
            .header(&format!("Access-Control-Request-Method: {method}"));
        if !headers.is_empty() {
            curl = curl.header(&format!("Access-Control-Request-Headers: {headers}"));
        }
        curl.fetch(&format!("{}/cors/f", cluster.endpoint))
    };
    // No rules: refused.
    assert_eq!(preflight("https://app.example", "GET", "").status, 403);
    let missing = aws.fails(&["s3api", "get-bucket-cors", "--bucket", "cors"]);
    assert!(missing.contains("NoSuchCORSConfiguration"), "{missing}");

    let rules = r#"{"CORSRules":[
        {"AllowedOrigins":["https://app.example"],"AllowedMethods":["GET","PUT"],"AllowedHeaders":["content-type","x-amz-*"],"ExposeHeaders":["ETag"],"MaxAgeSeconds":600},
        {"AllowedOrigins":["https://*.other.example"],"AllowedMethods":["GET"]}]}"#;
    aws.ok(&[
        "s3api",
        "put-bucket-cors",
        "--bucket",
        "cors",
        "--cors-configuration",
        rules,
    ]);
    let stored = aws.json(&["s3api", "get-bucket-cors", "--bucket", "cors"]);
    assert_eq!(stored["CORSRules"].as_array().unwrap().len(), 2, "{stored}");
    assert_eq!(stored["CORSRules"][0]["MaxAgeSeconds"], 600, "{stored}");

    let ok = preflight("https://app.example", "PUT", "Content-Type, X-Amz-Date");
    assert_eq!(ok.status, 200, "{ok:?}");
    let headers = ok.body.to_ascii_lowercase();
    assert!(
        headers.contains("access-control-allow-origin: https://app.example"),
        "{headers}"
    );
    assert!(headers.contains("access-control-max-age: 600"), "{headers}");
    assert!(
        headers.contains("access-control-allow-methods: get, put"),
        "{headers}"
    );
    assert_eq!(preflight("https://a.other.example", "GET", "").status, 200);
    for (origin, method, headers) in [
        ("https://evil.example", "PUT", ""),
        ("https://a.other.example", "PUT", ""),
        ("https://app.example", "DELETE", ""),
        ("https://app.example", "PUT", "authorization"),
    ] {
        let answer = preflight(origin, method, headers);
        assert_eq!(
            answer.status, 403,
            "{origin} {method} {headers}: {answer:?}"
        );
    }

    // A signed GET from an allowed origin is decorated; another is not.
    let url = aws.ok(&["s3", "presign", "s3://cors/f"]);
    let get = |origin: &str| {
        Curl::new()
            .args(&["-i"])
            .header(&format!("Origin: {origin}"))
            .fetch(url.trim())
    };
    let allowed = get("https://app.example");
    assert_eq!(allowed.status, 200);
    let headers = allowed.body.to_ascii_lowercase();
    assert!(
        headers.contains("access-control-allow-origin: https://app.example"),
        "{headers}"
    );
    assert!(
        headers.contains("access-control-expose-headers: etag"),
        "{headers}"
    );
    let other = get("https://evil.example");
    assert_eq!(other.status, 200);
    assert!(
        !other
            .body
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{other:?}"
    );

    // Rules S3 refuses are refused.
    let bad = aws.fails(&[
        "s3api",
        "put-bucket-cors",
        "--bucket",
        "cors",
        "--cors-configuration",
        r#"{"CORSRules":[{"AllowedOrigins":["*"],"AllowedMethods":["PATCH"]}]}"#,
    ]);
    assert!(bad.contains("InvalidRequest"), "{bad}");

    aws.ok(&["s3api", "delete-bucket-cors", "--bucket", "cors"]);
    assert_eq!(preflight("https://app.example", "GET", "").status, 403);
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// Runs the upload page driver (`tests/clients/upload_page.py`): its
/// output, or a panic with what the page showed (and a screenshot under
/// the target folder's `tmp/`).
fn upload_page(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/upload_page.py");
    let (mode, rest) = args.split_first().unwrap();
    let (url, rest) = rest.split_first().unwrap();
    let shots = shots_folder(mode, url);
    let out = run(Command::new("python3")
        .arg(script)
        .args([*mode, *url, shots.as_str()])
        .args(rest));
    assert!(
        out.status.success(),
        "the upload page failed (its states' screenshots in {shots}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let taken = std::fs::read_dir(&shots).map_or(0, Iterator::count);
    assert!(
        taken >= 2,
        "only {taken} screenshots of the page in {shots}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The folder of one run of the upload page driver in `mode` on `url`
/// (the link's token tells runs apart), emptied: a screenshot of each
/// state the page goes through lands there, kept as the test's artifacts.
fn shots_folder(mode: &str, url: &str) -> String {
    let token = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let shots = format!("{}/screenshots/{mode}-{token}", env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::remove_dir_all(&shots);
    shots
}

/// `tenfold share create BUCKET PREFIX --upload ARGS…`: the link's URL.
fn upload_link(cluster: &Cluster, bucket: &str, prefix: &str, args: &[&str]) -> String {
    let mut all = vec![bucket, prefix, "--upload"];
    all.extend_from_slice(args);
    let url = cluster.share_link(&all);
    assert!(url.contains("/_upload/"), "{url}");
    url
}

/// The hrefs of a share page's single-file downloads.
fn file_links(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(href, _)| href.to_owned()))
        .filter(|href| href.contains("/file/"))
        .collect()
}

#[test]
fn upload_links_take_files_and_folders_from_a_real_browser() {
    let cluster = Cluster::start(3, 1, "2GiB");
    cluster.aws().ok(&["s3", "mb", "s3://inbox"]);
    let url = upload_link(&cluster, "inbox", "drop/", &["--expires", "1h"]);
    let tmp = TempDir::new("upload-page");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(files.join("album/sub")).unwrap();
    let mut sent = vec![
        ("tiny.txt", 1024),
        ("big.bin", 20 << 20),
        ("résumé été.pdf", 5000),
    ];
    for (name, len) in &sent {
        write_file(&files.join(name), *len, false);
    }
    write_file(&files.join("album/a.jpg"), 3000, false);
    write_file(&files.join("album/sub/b.txt"), 100, false);
    sent.extend([("album/a.jpg", 3000), ("album/sub/b.txt", 100)]);

    let picked: Vec<String> = ["tiny.txt", "big.bin", "résumé été.pdf"]
        .iter()
        .map(|f| files.join(f).to_str().unwrap().to_owned())
        .collect();
    let folder = files.join("album");
    let mut args = vec!["upload", url.as_str(), "--folder", folder.to_str().unwrap()];
    args.extend(picked.iter().map(String::as_str));
    let out = upload_page(&args);
    let share = out
        .lines()
        .find_map(|l| l.strip_prefix("SHARE "))
        .unwrap_or_else(|| panic!("no share link: {out}"))
        .to_owned();
    assert!(out.contains("TEXT 100 %"), "{out}");

    // The share page lists every file, each downloadable by itself.
    let page = Curl::new().fetch(&share);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("5 files"), "{}", page.body);
    let links = file_links(&page.body);
    assert_eq!(links.len(), 5, "{links:?}");
    for (name, _) in &sent {
        let link = links
            .iter()
            .find(|l| {
                urlencoding::decode(l)
                    .unwrap()
                    .ends_with(&format!("/{name}"))
            })
            .unwrap_or_else(|| panic!("{name} not on the page: {links:?}"));
        let got = tmp.path().join("one");
        let status = Curl::new().save(&format!("{}{link}", cluster.endpoint), &got);
        assert_eq!(status, 200, "{link}");
        assert_eq!(sha256_file(&files.join(name)), sha256_file(&got), "{name}");
    }
    // And the zip holds them all, paths kept.
    let zip = tmp.path().join("t.zip");
    assert_eq!(Curl::new().save(&format!("{share}/zip"), &zip), 200);
    let unz = tmp.path().join("unz");
    let out = run(Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&unz));
    assert!(out.status.success());
    for (name, _) in &sent {
        assert_eq!(
            sha256_file(&files.join(name)),
            sha256_file(&unz.join(name)),
            "{name} in the zip"
        );
    }
    // The upload link opens no share page of what was sent.
    let token = url.rsplit('/').next().unwrap();
    let peek = Curl::new().fetch(&format!("{}/_share/{token}", cluster.endpoint));
    assert_eq!(peek.status, 404);
    assert!(!cluster.gateway_log().contains("panicked"));
}

#[test]
fn a_large_browser_upload_resumes_after_a_gateway_restart_and_a_reload() {
    let mut cluster = Cluster::start(3, 1, "4GiB");
    cluster.aws().ok(&["s3", "mb", "s3://inbox"]);
    let url = upload_link(&cluster, "inbox", "", &[]);
    let tmp = TempDir::new("upload-resume");
    let file = tmp.path().join("large.bin");
    write_file(&file, 300 << 20, false);
    let parts = (300usize << 20).div_ceil(16 << 20);

    // The page reloads at 60 % and picks the file again; meanwhile the
    // gateway is restarted once a few parts are stored.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/upload_page.py");
    let shots = shots_folder("resume", &url);
    let mut browser = Command::new("python3")
        .arg(script)
        .args(["upload", &url, &shots, "--reload-at", "60"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stored = |log: &str| log.matches("part stored").count();
    // Until three parts are stored, or the page has already given up.
    tests::eventually(Duration::from_secs(120), || {
        stored(&cluster.gateway_log()) >= 3 || browser.try_wait().is_ok_and(|s| s.is_some())
    });
    if stored(&cluster.gateway_log()) < 3 {
        let _ = browser.kill();
        let out = browser.wait_with_output().unwrap();
        panic!(
            "no part stored (screenshots in {shots}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = stored(&cluster.gateway_log());
    cluster.restart_gateway(|c| c).unwrap();
    let out = browser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the page failed (screenshots in {shots}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = stored(&cluster.gateway_log());
    // Every part once, but for the three in flight when the connection
    // was cut and when the page reloaded: nothing started over from zero.
    eprintln!("{before} parts stored before the restart, {after} after");
    assert!(
        before + after <= parts + 6,
        "{} parts stored for a {parts}-part file",
        before + after
    );
    let listed = cluster.aws().ok(&["s3", "ls", "--recursive", "s3://inbox"]);
    let key = listed
        .lines()
        .find(|l| l.ends_with("large.bin"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("not stored: {listed}"))
        .to_owned();
    let got = tmp.path().join("got");
    cluster.aws().ok(&[
        "s3",
        "cp",
        &format!("s3://inbox/{key}"),
        got.to_str().unwrap(),
    ]);
    assert_eq!(sha256_file(&file), sha256_file(&got));
    assert!(!cluster.gateway_log().contains("panicked"));
}

#[test]
fn upload_links_say_when_they_are_expired_revoked_or_full() {
    let cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://inbox"]);
    let tmp = TempDir::new("upload-refused");
    let small = tmp.path().join("small.txt");
    write_file(&small, 1000, false);
    let large = tmp.path().join("large.bin");
    write_file(&large, 2 << 20, false);
    let put = |url: &str, file: &std::path::Path| {
        Curl::new()
            .method("PUT")
            .args(&["--data-binary", &format!("@{}", file.display())])
            .fetch(&format!(
                "{url}/file/20260101-000000-abcdef/{}",
                file.file_name().unwrap().to_str().unwrap()
            ))
    };

    // Full: more bytes than --max-size, or more files than --max-files,
    // are refused before anything is stored.
    let sized = upload_link(&cluster, "inbox", "sized/", &["--max-size", "1MiB"]);
    let text = upload_page(&["message", &sized, large.to_str().unwrap()]);
    assert!(text.contains("full"), "{text}");
    assert_eq!(put(&sized, &large).status, 413);
    assert_eq!(put(&sized, &small).status, 200);
    let counted = upload_link(&cluster, "inbox", "counted/", &["--max-files", "1"]);
    assert_eq!(put(&counted, &small).status, 200);
    assert_eq!(put(&counted, &small).status, 413);
    let text = upload_page(&["message", &counted]);
    assert!(text.contains("full"), "{text}");
    let listed = aws.ok(&["s3", "ls", "--recursive", "s3://inbox"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(!listed.contains("large.bin"), "{listed}");

    // Revoked and expired.
    let revoked = upload_link(&cluster, "inbox", "revoked/", &[]);
    let out = cluster.admin(&["share", "revoke", &revoked]);
    assert!(out.status.success());
    let expired = upload_link(&cluster, "inbox", "expired/", &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    for url in [&revoked, &expired] {
        let text = upload_page(&["message", url]);
        assert!(text.contains("expired or was revoked"), "{url}: {text}");
        assert_eq!(put(url, &small).status, 403);
    }
    let listed = aws.ok(&["s3", "ls", "--recursive", "s3://inbox"]);
    assert!(
        !listed.contains("revoked/") && !listed.contains("expired/"),
        "{listed}"
    );
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// The upload page on a phone-sized screen, with the keyboard and a drag
/// and drop: nothing scrolls sideways, the first Tab stop is the file
/// picker (with a visible focus ring), files dropped on the drop zone are
/// stored, and "Copy link" works from the keyboard.
#[test]
fn the_upload_page_works_on_a_phone_with_keyboard_and_drag_and_drop() {
    let cluster = Cluster::start(3, 1, "2GiB");
    cluster.aws().ok(&["s3", "mb", "s3://inbox"]);
    let url = upload_link(&cluster, "inbox", "phone/", &["--expires", "1h"]);
    let out = upload_page(&["phone", url.as_str()]);
    let share = out
        .lines()
        .find_map(|l| l.strip_prefix("SHARE "))
        .unwrap_or_else(|| panic!("no share link: {out}"))
        .to_owned();
    assert!(out.lines().any(|l| l.starts_with("COPIED ")), "{out}");
    let page = Curl::new().fetch(&share);
    assert_eq!(page.status, 200);
    let links = file_links(&page.body);
    assert_eq!(links.len(), 2, "{links:?}");
    let tmp = TempDir::new("phone");
    let b: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for (name, want) in [
        ("a.txt", "dropped a\n".repeat(1000).into_bytes()),
        ("b.bin", b),
    ] {
        let link = links
            .iter()
            .find(|l| l.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not on the page: {links:?}"));
        let got = tmp.path().join(name);
        let status = Curl::new().save(&format!("{}{link}", cluster.endpoint), &got);
        assert_eq!(status, 200, "{link}");
        assert!(
            std::fs::read(&got).unwrap() == want,
            "{name} came back otherwise than dropped"
        );
    }
}

/// The AWS SDK for JavaScript's `createPresignedPost`, unchanged, posted
/// with `fetch` and `FormData` as a browser would: the object is stored as
/// signed (bytes, type, metadata, the 201 answer with its key); a file over
/// the policy's range, another type, another key and a forged metadata
/// field get S3's errors, and store nothing.
#[test]
fn the_aws_js_sdk_presigned_post_works_unchanged() {
    let cluster = Cluster::start(3, 1, "2GiB");
    cluster.aws().ok(&["s3", "mb", "s3://js-forms"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js_presigned_post.mjs");
    let out = run(Command::new("node")
        .arg("--no-warnings")
        .arg(script)
        .args([
            &cluster.endpoint,
            tests::ACCESS_KEY,
            tests::SECRET_KEY,
            "js-forms",
        ])
        .env("NODE_PATH", tests::js_sdk_modules()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let accepted = &seen["accepted"];
    assert_eq!(accepted["status"], 201, "{seen}");
    assert_eq!(accepted["key"], "js/accepted.txt", "{seen}");
    assert_eq!(accepted["same"], true, "{seen}");
    assert_eq!(
        accepted["head"],
        serde_json::json!({"size": 3700, "type": "text/plain", "origin": "js-sdk"}),
        "{seen}"
    );
    for (case, status, code) in [
        ("too_large", 400, "EntityTooLarge"),
        ("wrong_type", 403, "AccessDenied"),
        ("other_key", 403, "AccessDenied"),
        ("forged", 403, "AccessDenied"),
    ] {
        assert_eq!(seen[case]["status"], status, "{case}: {seen}");
        assert_eq!(seen[case]["code"], code, "{case}: {seen}");
        assert!(
            seen[case]["head"].is_null(),
            "{case} stored something: {seen}"
        );
    }
}

/// What a page on another origin (`http://127.0.0.1:PORT`) gets from its
/// `fetch` PUT to `put` and GET of `get` in a real Chromium.
fn fetch_from_another_origin(port: u16, put: &str, get: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/cross_origin.py");
    let out = run(Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .args([put, get]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

/// A web application on another site, in a real browser: without CORS
/// rules its cross-origin PUT and GET are blocked (and nothing is stored);
/// with rules for its origin they go through, the ETag readable as the
/// rules expose it; a third origin stays blocked.
#[test]
fn a_page_on_another_origin_uses_the_bucket_as_its_cors_rules_allow() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://web"]);
    let tmp = TempDir::new("cross-origin");
    let hello = tmp.path().join("hello");
    std::fs::write(&hello, "hello from the bucket").unwrap();
    aws.ok(&["s3", "cp", hello.to_str().unwrap(), "s3://web/hello"]);
    let put = presigned(&cluster.endpoint, "put_object", "web", "from-browser");
    let get = presigned(&cluster.endpoint, "get_object", "web", "hello");
    let (site, other) = (tests::free_port(), tests::free_port());

    let blocked = fetch_from_another_origin(site, &put, &get);
    assert_eq!(blocked["put"], "blocked", "{blocked}");
    assert_eq!(blocked["get"], "blocked", "{blocked}");
    let absent = aws.run(&[
        "s3api",
        "head-object",
        "--bucket",
        "web",
        "--key",
        "from-browser",
    ]);
    assert!(!absent.status.success(), "a blocked PUT stored something");

    let rules = format!(
        r#"{{"CORSRules":[{{"AllowedOrigins":["http://127.0.0.1:{site}"],"AllowedMethods":["GET","PUT"],"AllowedHeaders":["*"],"ExposeHeaders":["ETag"]}}]}}"#
    );
    aws.ok(&[
        "s3api",
        "put-bucket-cors",
        "--bucket",
        "web",
        "--cors-configuration",
        &rules,
    ]);
    let allowed = fetch_from_another_origin(site, &put, &get);
    assert_eq!(allowed["put"], 200, "{allowed}");
    assert_eq!(allowed["get"], "hello from the bucket", "{allowed}");
    assert!(
        allowed["etag"].as_str().is_some_and(|e| e.len() > 2),
        "{allowed}"
    );
    let stored = tmp.path().join("stored");
    aws.ok(&[
        "s3",
        "cp",
        "s3://web/from-browser",
        stored.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), "from a browser");

    let elsewhere = fetch_from_another_origin(other, &put, &get);
    assert_eq!(elsewhere["put"], "blocked", "{elsewhere}");
    assert_eq!(elsewhere["get"], "blocked", "{elsewhere}");
}
