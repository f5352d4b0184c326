//! The HTTP API probed as a hostile client would: half-open connections, connection floods from
//! one address, made-up methods, password guessing, logins that keep the CPU busy, forged
//! `X-Forwarded-For`, duplicate JSON keys, and email changes that would tell who is registered.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::coordinator::TestServer;
use testkit::process::Started;

const BINARY: &str = env!("CARGO_BIN_EXE_hostplane-coordinator");

/// A `hostplane-coordinator serve --dev` process, killed when dropped.
struct Process {
    started: Started,
    url: String,
    admin_key: String,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts the real binary on port 0 with `limits` as the `[limits]` table of its file.
    fn start(limits: &str) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("coordinator.toml");
        std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
        let data = dir.path().join("data");
        let mut command = Command::new(BINARY);
        command
            .arg("--config")
            .arg(&config)
            .args([
                "serve",
                "--dev",
                "--http-listen",
                "127.0.0.1:0",
                "--quic-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .stderr(Stdio::null());
        let started = Started::spawn(command);
        let url = started.field("http=");
        let admin_key = std::fs::read_to_string(data.join("admin.key"))
            .unwrap()
            .trim()
            .to_string();
        Process {
            started,
            url,
            admin_key,
            _dir: dir,
        }
    }

    fn address(&self) -> SocketAddr {
        self.url.strip_prefix("http://").unwrap().parse().unwrap()
    }

    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.started.child.id()))
            .unwrap()
            .count()
    }
}

/// Raises this process's soft descriptor limit (children inherit it) to at least `wanted`.
fn raise_descriptor_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= wanted,
        "the descriptor limit {soft} is below {wanted}"
    );
}

/// Waits until `done` holds, checking every 100 ms for at most `limit`.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// One `GET /healthz` on a fresh connection from `from`; its status and how long it took.
async fn healthz_from(url: &str, from: Option<IpAddr>) -> (u16, Duration) {
    let client = reqwest::Client::builder()
        .local_address(from)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let status = client
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0);
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_at_the_timeout_while_healthz_answers() {
    const CONNECTIONS: usize = 3_000;
    raise_descriptor_limit(CONNECTIONS as u64 + 1_000);
    let process = Process::start(
        "http_header_timeout_seconds = 2\nhttp_idle_timeout_seconds = 2\n\
         http_max_connections = 20000\nhttp_max_connections_per_address = 20000",
    );
    let (status, _) = healthz_from(&process.url, None).await;
    assert_eq!(status, 200);
    let baseline = process.descriptors();
    let address = process.address();
    // Half a request header each, then silence.
    let held = tokio::task::spawn_blocking(move || {
        (0..CONNECTIONS)
            .map(|_| {
                let mut stream = TcpStream::connect(address).unwrap();
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
                stream
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let peak = process.descriptors();
    let (status, took) = healthz_from(&process.url, None).await;
    assert_eq!(status, 200, "/healthz answers while {CONNECTIONS} are held");
    println!(
        "descriptors: baseline {baseline}, with {CONNECTIONS} half-open connections {peak}; \
         /healthz meanwhile took {took:?}"
    );
    let started = Instant::now();
    let back = wait_until(Duration::from_secs(60), || {
        process.descriptors() <= baseline + 5
    });
    println!(
        "descriptors back to {} after {:?}",
        process.descriptors(),
        started.elapsed()
    );
    assert!(
        back,
        "the half-open connections are closed: {} descriptors, baseline {baseline}",
        process.descriptors()
    );
    let (status, _) = healthz_from(&process.url, None).await;
    assert_eq!(status, 200);
    drop(held);
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_and_others_still_served() {
    let server = TestServer::start_with(|config| {
        config.limits.http_max_connections_per_address = 4;
    })
    .await;
    let address: SocketAddr = server.url.strip_prefix("http://").unwrap().parse().unwrap();
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    // Accepting happens in order, so once a request on the fifth gets an answer or is closed,
    // the first four were counted.
    let mut extra = TcpStream::connect(address).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "the connection over the cap is closed without an answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let (status, _) = healthz_from(&server.url, Some(other)).await;
    assert_eq!(status, 200, "another address is still served");
    drop(held);
}

/// The exposition with every sample's value removed: the series, not their counts.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| match line.rsplit_once(' ') {
            Some((name, _)) if !line.starts_with('#') => name.to_string(),
            _ => line.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn made_up_methods_leave_metrics_the_same_size() {
    let server = TestServer::start().await;
    let client = &server.client;
    let send = |index: usize| {
        let method = reqwest::Method::from_bytes(format!("M{index}X").as_bytes()).unwrap();
        client
            .request(method, format!("{}/api/v1/user/{index}", server.url))
            .send()
    };
    send(0).await.unwrap();
    // A first scrape, so that the scrapes themselves are already a series.
    client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    let before = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for index in 1..=5_000 {
        let answer = send(index).await.unwrap();
        assert!(answer.status().is_client_error());
    }
    let after = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(series(&before), series(&after));
    assert!(
        after.len() < before.len() + 200,
        "{} bytes before, {} after",
        before.len(),
        after.len()
    );
    assert!(after.contains("method=\"OTHER\""));
    assert!(!after.contains("M17X"));
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let token = "a-long-scrape-token-0123456789";
    let server = TestServer::start_with(|config| {
        config.limits.metrics_token = Some(token.to_string());
    })
    .await;
    let url = format!("{}/metrics", server.url);
    let without = server.client.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let wrong = server
        .client
        .get(&url)
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let with = server
        .client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
}

async fn login(
    server: &TestServer,
    from: IpAddr,
    forwarded_for: Option<&str>,
    password: &str,
) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(from)
        .build()
        .unwrap();
    let mut request = client
        .post(format!("{}/api/v1/ticket", server.url))
        .json(&json!({"username": "alice", "password": password}));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn wrong_passwords_from_one_address_do_not_stop_the_owner_logging_in_from_another() {
    let server = TestServer::start().await;
    server.customer("alice").await;
    let attacker: IpAddr = "127.0.0.3".parse().unwrap();
    let owner: IpAddr = "127.0.0.4".parse().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(login(&server, attacker, None, "guess").await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        login(&server, attacker, None, "secret-password").await,
        429,
        "the guessing address waits even with the right password"
    );
    assert_eq!(login(&server, owner, None, "secret-password").await, 201);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // Without trusted proxies, a forged header does not give a guesser fresh addresses.
    let server = TestServer::start().await;
    server.customer("alice").await;
    let client: IpAddr = "127.0.0.5".parse().unwrap();
    let mut statuses = Vec::new();
    for index in 0..8 {
        let forged = format!("198.51.100.{index}");
        statuses.push(login(&server, client, Some(&forged), "guess").await);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // Behind a trusted proxy, each client is throttled on its own address.
    let server = TestServer::start_with(|config| {
        config.limits.trusted_proxies = vec!["127.0.0.6".parse().unwrap()];
    })
    .await;
    server.customer("alice").await;
    let proxy: IpAddr = "127.0.0.6".parse().unwrap();
    for _ in 0..8 {
        login(&server, proxy, Some("198.51.100.1"), "guess").await;
    }
    assert_eq!(
        login(&server, proxy, Some("198.51.100.1"), "secret-password").await,
        429
    );
    assert_eq!(
        login(&server, proxy, Some("198.51.100.2"), "secret-password").await,
        201,
        "another client behind the same proxy logs in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_quickly_during_sixty_parallel_logins() {
    let process = Process::start("");
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/api/v1/user", process.url))
        .header("x-api-key", &process.admin_key)
        .json(&json!({"username": "alice", "password": "secret-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let logins: Vec<_> = (0..60)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/api/v1/ticket", process.url);
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"username": "alice", "password": "secret-password"}))
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut samples = 0;
    while !logins.iter().all(|login| login.is_finished()) && samples < 200 {
        let (status, took) = healthz_from(&process.url, None).await;
        assert_eq!(status, 200);
        slowest = slowest.max(took);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut statuses = Vec::new();
    for login in logins {
        statuses.push(login.await.unwrap());
    }
    println!("slowest /healthz during 60 parallel logins: {slowest:?} over {samples} samples");
    assert!(samples > 0);
    assert!(
        statuses
            .iter()
            .all(|status| *status == 201 || *status == 503),
        "{statuses:?}"
    );
    // The stated criterion is 50 ms; the bound leaves room for a loaded machine.
    assert!(
        slowest < Duration::from_millis(300),
        "/healthz took {slowest:?} while logins were hashed"
    );
}

#[tokio::test]
async fn duplicate_keys_in_a_json_body_are_refused() {
    let server = TestServer::start().await;
    let answer = server
        .client
        .post(format!("{}/api/v1/user", server.url))
        .header("x-api-key", &server.admin_key)
        .header("content-type", "application/json")
        .body(r#"{"username": "carol", "password": "secret-password", "username": "admin2"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let users = server.admin("GET", "/api/v1/user", None).await;
    assert_eq!(users.body["total"], 1, "nothing was created");
}

#[tokio::test]
async fn an_email_change_does_not_tell_whether_the_address_is_registered() {
    let server = TestServer::start().await;
    let created = server
        .admin(
            "POST",
            "/api/v1/user",
            Some(json!({"username": "bob", "password": "secret-password", "email": "bob@example.org"})),
        )
        .await;
    assert_eq!(created.status, 201);
    let (alice, key) = server.customer("alice").await;
    let path = format!("/api/v1/user/{alice}");
    let taken = server
        .call(
            "PUT",
            &path,
            Some(&key),
            Some(json!({"email": "BOB@example.org"})),
        )
        .await;
    let free = server
        .call(
            "PUT",
            &path,
            Some(&key),
            Some(json!({"email": "alice@example.org"})),
        )
        .await;
    assert_eq!(
        taken.status, free.status,
        "{:?} / {:?}",
        taken.body, free.body
    );
    assert!(!taken.body.to_string().contains("in use"));
    let owner = server
        .admin("GET", "/api/v1/user?email=bob@example.org", None)
        .await;
    assert_eq!(owner.body["total"], 1);
    assert_eq!(owner.body["data"][0]["username"], "bob");
}

/// A task that runs until it is cancelled.
async fn until_cancelled(
    context: coordinator::tasks::TaskContext,
) -> Result<serde_json::Value, coordinator::tasks::TaskFailure> {
    context.cancelled().cancelled().await;
    Ok(serde_json::Value::Null)
}

#[tokio::test]
async fn event_streams_and_waiting_requests_are_capped_per_user() {
    let server = TestServer::start_with(|config| {
        config.limits.max_event_streams_per_user = 2;
        config.limits.max_waiting_requests_per_user = 1;
    })
    .await;
    let (alice, alice_key) = server.customer("alice").await;
    let app = server.app().clone();
    app.tasks.register("test.endless", until_cancelled);
    let (task, _) = app
        .tasks
        .submit(coordinator::tasks::NewTask::new("test.endless", &alice))
        .unwrap();
    let path = format!("{}/api/v1/task/{}/events", server.url, task.id);
    let open = |key: String| {
        let request = server.client.get(&path).header("x-api-key", key);
        async move { request.send().await.unwrap() }
    };
    let first = open(alice_key.clone()).await;
    let second = open(alice_key.clone()).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(open(alice_key.clone()).await.status(), 429);
    drop(first);
    let mut reopened = 0;
    for _ in 0..100 {
        reopened = open(alice_key.clone()).await.status().as_u16();
        if reopened == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reopened, 200, "a closed stream gives its place back");

    // One waiting request per user: the second is refused before any task exists.
    let request = |user: &str| {
        let mut request = coordinator::api::ApiRequest::new(
            http::Method::POST,
            "/api/v1/instance/101/status/start".into(),
            "wait=30",
            http::HeaderMap::new(),
            bytes::Bytes::new(),
            None,
        );
        request.principal = Some(coordinator::auth::Principal {
            user_id: user.to_string(),
            username: user.to_string(),
            role: coordinator::store::records::Role::Customer,
            credential: coordinator::auth::Credential::ApiKey("test".into()),
            instance_scope: None,
        });
        request
    };
    let first_request = request("u1");
    let mut first = Box::pin(coordinator::api::tasks::respond_with_task(
        &app,
        &first_request,
        coordinator::tasks::NewTask::new("test.endless", "u1"),
    ));
    // Driven until it waits for the task, so it holds its place; kept alive below.
    let still_waiting = tokio::time::timeout(Duration::from_millis(300), &mut first).await;
    assert!(still_waiting.is_err(), "the first request waits");
    let second = coordinator::api::tasks::respond_with_task(
        &app,
        &request("u1"),
        coordinator::tasks::NewTask::new("test.endless", "u1"),
    )
    .await;
    assert_eq!(
        second.err().map(|error| error.status.as_u16()),
        Some(429),
        "a second waiting request of u1 is refused"
    );
    let other = coordinator::api::tasks::respond_with_task(
        &app,
        &request("u2"),
        coordinator::tasks::NewTask::new("test.echo.none", "u2"),
    )
    .await;
    assert!(
        other
            .as_ref()
            .map_or_else(|error| error.status != 429, |_| true),
        "another user may wait"
    );
    drop(first);
}
