//! The clients tests drive the servers with: the `aws` CLI, the Rust SDK and
//! curl signing with SigV4.

use std::process::{Command, Output};

use crate::process::run;

/// curl arguments that sign a request with SigV4 (for an empty body).
pub fn sigv4_args(access_key: &str, secret_key: &str) -> Vec<String> {
    vec![
        "--aws-sigv4".into(),
        "aws:amz:us-east-1:s3".into(),
        "--user".into(),
        format!("{access_key}:{secret_key}"),
        "-H".into(),
        "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .into(),
    ]
}

/// `curl` arguments that sign a request with SigV4 and send its body
/// unsigned, as a streaming client does (`-s -f`: an HTTP error fails).
pub fn unsigned_payload(access_key: &str, secret_key: &str) -> Vec<String> {
    vec![
        "-s".into(),
        "-f".into(),
        "--aws-sigv4".into(),
        "aws:amz:us-east-1:s3".into(),
        "--user".into(),
        format!("{access_key}:{secret_key}"),
        "-H".into(),
        "x-amz-content-sha256: UNSIGNED-PAYLOAD".into(),
    ]
}

/// A SigV4 presigned URL (boto3, test credentials) for `method`
/// (`put_object`, `get_object`) on `bucket`/`key` at `endpoint`.
pub fn presigned(endpoint: &str, method: &str, bucket: &str, key: &str) -> String {
    let out = run(Command::new("python3")
        .args([
            "-c",
            "import boto3,sys,botocore.config as c; print(boto3.client('s3', \
             endpoint_url=sys.argv[1], region_name='us-east-1', \
             config=c.Config(signature_version='s3v4')).generate_presigned_url(sys.argv[2], \
             Params={'Bucket': sys.argv[3], 'Key': sys.argv[4]}, ExpiresIn=600))",
            endpoint,
            method,
            bucket,
            key,
        ])
        .env("AWS_ACCESS_KEY_ID", crate::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"));
    let url = String::from_utf8(out.stdout)
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        url.contains("X-Amz-Signature="),
        "boto3 presigned no URL: {url}"
    );
    url
}

/// The `aws` CLI pointed at one endpoint with one set of credentials.
#[derive(Debug, Clone)]
pub struct Aws {
    program: String,
    endpoint: String,
    access_key: String,
    secret_key: String,
    /// Environment variables set for every run, beside the credentials.
    env: Vec<(String, String)>,
}

impl Aws {
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str) -> Self {
        Self {
            program: "aws".into(),
            endpoint: endpoint.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            env: Vec::new(),
        }
    }

    /// The same, with `key=value` in the environment of every run.
    #[must_use]
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The same, with another `aws` executable (Debian's v2 is `/usr/bin/aws`).
    #[must_use]
    pub fn with_program(mut self, program: &str) -> Self {
        self.program = program.into();
        self
    }

    /// Runs `aws --endpoint-url E ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        run(Command::new(&self.program)
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_PAGER", "")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Plain-http endpoints: some clients choke on a CA bundle here.
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE"))
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, asserts failure, and returns stderr (which names the S3 error).
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "aws {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs an `s3api` call that prints JSON, and parses it.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        if out.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out).expect("aws JSON output")
    }
}

/// An `aws-sdk-s3` client for `endpoint` (path style, plain HTTP, pooled
/// connections, checksums when the operation supports them).
pub fn sdk_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    sdk_client_at(endpoint, access_key, secret_key, None)
}

/// Like [`sdk_client`], signing with a clock set to `now` (to send requests
/// dated in the past or the future). Such a client does not retry: the SDK
/// would otherwise correct its clock from the refusal's `Date` and succeed.
pub fn sdk_client_at(
    endpoint: &str,
    access_key: &str,
    secret_key: &str,
    now: Option<std::time::SystemTime>,
) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
    let mut config = aws_sdk_s3::Config::builder();
    if let Some(now) = now {
        config = config
            .time_source(aws_smithy_async::time::StaticTimeSource::new(now))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
    }
    let config = config
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "tests",
        ))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// One request with `curl -s`: built up, then fetched or saved.
#[derive(Debug, Clone, Default)]
pub struct Curl {
    args: Vec<String>,
}

/// What a [`Curl`] request got: the HTTP status (0 when no HTTP answer
/// came) and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Curl {
    pub fn new() -> Self {
        Self::default()
    }

    /// The request method (GET by default).
    #[must_use]
    pub fn method(self, method: &str) -> Self {
        self.args(&["-X", method])
    }

    /// A request header, `Name: value`.
    #[must_use]
    pub fn header(self, header: &str) -> Self {
        self.args(&["-H", header])
    }

    /// Signs the request with SigV4 (for an empty body). curl 7.88 signs
    /// the query as written: give its parameters in sorted order.
    #[must_use]
    pub fn signed(mut self, access_key: &str, secret_key: &str) -> Self {
        self.args.extend(sigv4_args(access_key, secret_key));
        self
    }

    /// Any other curl arguments (`--cacert FILE`, `-k`, ...).
    #[must_use]
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Requests `url`; answers its status and body.
    pub fn fetch(&self, url: &str) -> Answer {
        let out = run(Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(&self.args)
            .arg(url));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        Answer {
            status: status.parse().unwrap_or(0),
            body: body.to_owned(),
        }
    }

    /// Requests `url`, writing its body to `dest`; answers its status.
    pub fn save(&self, url: &str, dest: &std::path::Path) -> u16 {
        let out = run(Command::new("curl")
            .args(["-s", "-w", "%{http_code}", "-o"])
            .arg(dest)
            .args(&self.args)
            .arg(url));
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    }
}

/// The AWS SDK for JavaScript's modules (`tests/jssdk`): `TENFOLD_JSSDK`,
/// or where `tests/run.sh` installs them; for `NODE_PATH`.
pub fn js_sdk_modules() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("TENFOLD_JSSDK") {
        return std::path::PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let path = std::path::Path::new(&home).join(".cache/tenfold/jssdk/node_modules");
    assert!(
        path.join("@aws-sdk/s3-presigned-post").exists(),
        "{} is missing: tests/run.sh installs the AWS SDK for JavaScript",
        path.display()
    );
    path
}
