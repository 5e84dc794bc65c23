//! Far sides that are real programs: Python (`JOBPLANE_PYTHON`, which `scripts/test` points at
//! a venv holding the pinned tools) and moto's server as a local SES v2.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region};
use serde_json::Value;

use crate::support::free_port;

/// The region and credentials every SES test uses, with the emulator or the receiver.
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "AKIDJOBPLANETEST";
pub const SECRET_KEY: &str = "jobplane-test-secret";

/// The Python the tests run: `JOBPLANE_PYTHON`, else the venv `scripts/test` makes
/// (`.jobplane/py`), else `python3`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("JOBPLANE_PYTHON").filter(|p| !p.is_empty()) {
        return python.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.jobplane/py/bin/python");
    if venv.exists() { venv } else { "python3".into() }
}

/// Fails the test, naming the module, when `python()` cannot import `module`: a missing tool
/// is a broken set-up, never a reason to skip.
pub fn require_python_module(module: &str) -> PathBuf {
    let python = python();
    let output = Command::new(&python).args(["-c", &format!("import {module}")]).output();
    let why = match output {
        Ok(output) if output.status.success() => return python,
        Ok(output) => String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default().to_owned(),
        Err(e) => e.to_string(),
    };
    panic!(
        "Python module `{module}` is not importable with {} ({why}); run scripts/test, which installs the \
         pinned tools into .jobplane/py and sets JOBPLANE_PYTHON, or point JOBPLANE_PYTHON at a Python that has it",
        python.display()
    );
}

/// A moto server (a local SES v2, among others) on a free port of its own, killed on drop.
pub struct Moto {
    pub port: u16,
    child: Child,
    /// moto's own output, shown when it fails to come up.
    log: PathBuf,
}

impl Moto {
    pub async fn start() -> Self {
        let python = require_python_module("moto.server");
        let port = free_port();
        let log = std::env::temp_dir().join(format!("jobplane-moto-{port}-{}.log", uuid::Uuid::now_v7().simple()));
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(output)
            .spawn()
            .unwrap();
        let mut moto = Self { port, child, log };
        moto.wait_until_up().await;
        moto
    }

    async fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("moto.server exited before answering ({status}):\n{}", self.output());
            }
            if reqwest::get(self.data_url()).await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto.server on port {} did not answer within 30 s:\n{}", self.port, self.output());
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn data_url(&self) -> String {
        format!("{}/moto-api/data.json", self.url())
    }

    /// An SES v2 client of the test's own against this server.
    pub fn ses(&self) -> aws_sdk_sesv2::Client {
        let config = aws_sdk_sesv2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .endpoint_url(self.url())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        aws_sdk_sesv2::Client::from_conf(config)
    }

    /// Makes `identity` (an address or a domain) a verified sender.
    pub async fn verify_sender(&self, identity: &str) {
        self.ses().create_email_identity().email_identity(identity).send().await.unwrap();
    }

    /// The messages SES v2 sent: moto keeps them with SES's (v1) models, as
    /// `{"id", "source", "subject", "body", "destinations": {"ToAddresses", ...}}`; the body is
    /// the HTML part when there is one, else the text part.
    pub async fn sent(&self) -> Vec<Value> {
        let data: Value = reqwest::get(self.data_url()).await.unwrap().json().await.unwrap();
        data["ses"]["Message"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Worker settings for SES at `endpoint`: a test region and keys, no instance metadata and no
/// profile files, so nothing outside the machine is ever asked.
pub fn ses_worker_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WORKER_KINDS", "email".into()),
        ("EMAIL_PROVIDER", "ses".into()),
        ("EMAIL_FROM", "Jobplane Test <sender@example.org>".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_ENDPOINT_URL_SESV2", endpoint.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("RETRY_JITTER", "none".into()),
        ("RETRY_BASE_MS_EMAIL", "300".into()),
        ("RETRY_CAP_MS_EMAIL", "60000".into()),
    ]
}
