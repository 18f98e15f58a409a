//! What browsers send: HTML form uploads (S3's POST Object, with policies
//! made by boto3's `generate_presigned_post`, SigV2 and SigV4) and
//! cross-origin requests (bucket CORS rules, preflights).

use std::process::Command;

use tests::{Cluster, Curl, TempDir, run, sha256_file, write_file};

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
