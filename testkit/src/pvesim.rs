//! The simulator in-process for tests of its API: start it on 127.0.0.1:0, call it, read
//! reason phrases, and wait for its tasks.

use std::time::{Duration, Instant};

use pvesim::{SimConfig, Simulator};
use serde_json::Value;

pub const TOKEN: &str = "root@pam!hostplane=5f1d8c2e-1111-4222-8333-000000000001";
pub const USER: &str = "root@pam";
pub const PASSWORD: &str = "sim-password";
pub const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// One answer: status, reason phrase, parsed body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub body: Value,
    pub raw: String,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

pub struct Harness {
    pub sim: Simulator,
    pub client: reqwest::Client,
    pub base: String,
}

pub fn config() -> SimConfig {
    SimConfig {
        tokens: vec![TOKEN.to_string()],
        users: vec![(USER.to_string(), PASSWORD.to_string())],
        auth_failure_delay: Duration::ZERO,
        task_duration: Duration::from_millis(30),
        ..SimConfig::default()
    }
}

pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub async fn start(config: SimConfig) -> Harness {
    install_crypto();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(config, listener).await.unwrap();
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .tls_info(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = sim.base_url();
    Harness { sim, client, base }
}

pub async fn read(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let reason = response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|reason| String::from_utf8_lossy(reason.as_bytes()).into_owned())
        .or_else(|| response.status().canonical_reason().map(String::from))
        .unwrap_or_default();
    let raw = response.text().await.unwrap();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        reason,
        body,
        raw,
    }
}

impl Harness {
    fn request(
        &self,
        method: &str,
        path: &str,
        parameters: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        let method: reqwest::Method = method.parse().unwrap();
        let builder = self.client.request(method.clone(), url);
        if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            builder.query(parameters)
        } else {
            builder.form(parameters)
        }
    }

    /// Calls with the API token.
    pub async fn call(&self, method: &str, path: &str, parameters: &[(&str, &str)]) -> Answer {
        let response = self
            .request(method, path, parameters)
            .header("Authorization", format!("PVEAPIToken={TOKEN}"))
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// Calls with a JSON body and the API token.
    pub async fn call_json(&self, method: &str, path: &str, body: Value) -> Answer {
        let method: reqwest::Method = method.parse().unwrap();
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("PVEAPIToken={TOKEN}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// Calls without credentials, with extra headers.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        parameters: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut builder = self.request(method, path, parameters);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        read(builder.send().await.unwrap()).await
    }

    /// Creates a container and returns the UPID.
    pub async fn create(&self, vmid: u32, extra: &[(&str, &str)]) -> String {
        let vmid = vmid.to_string();
        let mut parameters = vec![
            ("vmid", vmid.as_str()),
            ("ostemplate", TEMPLATE),
            ("rootfs", "local-lvm:8"),
        ];
        parameters.extend_from_slice(extra);
        let answer = self.call("POST", "/nodes/pve1/lxc", &parameters).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.data().as_str().unwrap().to_string()
    }

    /// Polls a task until it stops and returns its status object.
    pub async fn wait(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self
                .call(
                    "GET",
                    &format!("/nodes/{node}/tasks/{}/status", encode(upid)),
                    &[],
                )
                .await;
            assert_eq!(answer.status, 200, "{answer:?}");
            if answer.data()["status"] == "stopped" {
                return answer.data().clone();
            }
            assert!(Instant::now() < deadline, "task {upid} did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates a container and waits until the create task succeeded.
    pub async fn create_ok(&self, vmid: u32, extra: &[(&str, &str)]) {
        let upid = self.create(vmid, extra).await;
        let status = self.wait(&upid).await;
        assert_eq!(status["exitstatus"], "OK", "{status}");
    }

    /// Runs a power action and waits for success.
    pub async fn power_ok(&self, vmid: u32, action: &str) {
        let answer = self
            .call(
                "POST",
                &format!("/nodes/pve1/lxc/{vmid}/status/{action}"),
                &[],
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let status = self.wait(answer.data().as_str().unwrap()).await;
        assert_eq!(status["exitstatus"], "OK", "{status}");
    }

    /// The task log lines.
    pub async fn log(&self, upid: &str) -> Vec<String> {
        let node = upid.split(':').nth(1).unwrap();
        let answer = self
            .call(
                "GET",
                &format!("/nodes/{node}/tasks/{}/log", encode(upid)),
                &[("limit", "500")],
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer
            .data()
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line["t"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Percent-encodes a path segment (UPIDs contain `:` `@` `!`).
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A `multipart/form-data` body with text fields and one file part named `filename`, as
/// Proxmox clients send uploads. Returns the content type and the body.
pub fn multipart(fields: &[(&str, &str)], file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "pvesim-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Harness {
    /// Uploads a file to a storage with the API token.
    pub async fn upload(
        &self,
        storage: &str,
        fields: &[(&str, &str)],
        file_name: &str,
        bytes: &[u8],
    ) -> Answer {
        let (content_type, body) = multipart(fields, file_name, bytes);
        let response = self
            .client
            .post(format!("{}/nodes/pve1/storage/{storage}/upload", self.base))
            .header("Authorization", format!("PVEAPIToken={TOKEN}"))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        read(response).await
    }
}
