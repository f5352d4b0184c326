//! Databases through the whole path: API → coordinator → QUIC → agent → real MariaDB and
//! PostgreSQL servers started privately by the test. Create, list, dump (plain and zstd),
//! restore into a fresh database with the same rows, change the password, drop; bad input
//! refused before any task exists; an offline agent; a dump cut off midway.

use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::agent_crate as agent;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::agent_work::{INSTANCE, Setup, log_lines, setup};
use testkit::databases::{MariaDbServer, PostgresServer, available, postgres_bin, settings};

fn handlers(mariadb: Option<&MariaDbServer>, postgres: Option<&PostgresServer>) -> agent::Handlers {
    agent::Handlers::new()
        .with(agent::PingHandler)
        .with(agent::databases::Databases::new(settings(
            mariadb, postgres,
        )))
}

/// Runs SQL as the administrator of the private MariaDB server; returns standard output.
fn mariadb_sql(server: &MariaDbServer, database: &str, sql: &str) -> String {
    let output = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", server.socket.display()))
        .args(["-u", "root", "--batch", "--skip-column-names", database])
        .arg("-e")
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .expect("mariadb runs");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Feeds a dump into `database` of the private MariaDB server.
fn mariadb_restore(server: &MariaDbServer, database: &str, dump: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", server.socket.display()))
        .args(["-u", "root", database])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mariadb runs");
    child.stdin.take().unwrap().write_all(dump).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs SQL as `postgres` on the private PostgreSQL server.
fn postgres_sql(
    server: &PostgresServer,
    database: &str,
    sql: &str,
    input: Option<&[u8]>,
) -> String {
    use std::io::Write;
    let psql = postgres_bin("psql")
        .or_else(|| Some("psql".into()))
        .unwrap();
    let mut command = Command::new(psql);
    command
        .arg("-h")
        .arg(&server.socket_directory)
        .arg("-p")
        .arg(server.port.to_string())
        .args([
            "-U",
            "postgres",
            "-d",
            database,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
    if input.is_none() {
        command.arg("-c").arg(sql);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A dump through the API: the body, the task's result and the response headers.
async fn dump(
    setup: &Setup,
    path: &str,
    zstd: bool,
) -> (Vec<u8>, Value, reqwest::header::HeaderMap) {
    let mut request = setup
        .server
        .client
        .get(format!("{}{path}", setup.server.url))
        .header("x-api-key", &setup.key);
    if zstd {
        request = request.header("accept-encoding", "zstd");
    }
    let response = request.send().await.expect("the dump request is sent");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .expect("the whole dump arrives")
        .to_vec();
    let task_id = headers["x-task-id"].to_str().unwrap().to_string();
    let task = setup.ended(&task_id).await;
    (body, task, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_create_dump_restore_change_password_and_drop() {
    if !available(&["mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump"]) {
        return;
    }
    let server = MariaDbServer::start().expect("MariaDB starts");
    let setup = setup(handlers(Some(&server), None)).await;
    let base = format!("/api/v1/instance/{INSTANCE}/database");

    let created = setup
        .task(
            "POST",
            &format!("{base}/shop"),
            Some(json!({"engine": "mariadb", "password": "first-Password-1"})),
        )
        .await;
    assert_eq!(created["task"]["state"], "succeeded", "{created:?}");
    assert_eq!(created["task"]["kind"], "database.create");
    assert!(
        !created.to_string().contains("first-Password-1"),
        "the password shows in the task: {created}"
    );
    mariadb_sql(
        &server,
        "shop",
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64), price DECIMAL(10,2));
         INSERT INTO items SELECT seq, CONCAT('item-', seq), seq * 1.25 FROM seq_1_to_5000;",
    );

    let listed = setup.customer("GET", &base, None).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(
        listed.body["engines"],
        json!(["mariadb"]),
        "the engines present"
    );
    let shop = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|database| database["name"] == "shop")
        .cloned()
        .expect("shop is listed");
    assert_eq!(shop["engine"], "mariadb");
    assert_eq!(shop["owner"], "shop");
    let one = setup.customer("GET", &format!("{base}/shop"), None).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["name"], "shop");
    let missing = setup
        .customer("GET", &format!("{base}/nothing"), None)
        .await;
    assert_eq!(missing.status, 404);

    // Seed 000's form: GET with action=dump.
    let (plain, task, headers) = dump(&setup, &format!("{base}/shop?action=dump"), false).await;
    assert_eq!(task["task"]["state"], "succeeded", "{task:?}");
    assert_eq!(task["task"]["kind"], "database.dump");
    assert_eq!(
        task["task"]["result"]["sha256"],
        hex::encode(Sha256::digest(&plain)),
        "the task's SHA-256 is that of the bytes served"
    );
    assert_eq!(task["task"]["result"]["bytes"], plain.len() as u64);
    assert!(headers.get("content-encoding").is_none());
    let text = String::from_utf8_lossy(&plain);
    assert!(
        text.contains("CREATE TABLE `items`"),
        "{}",
        &text[..text.len().min(500)]
    );

    // Restored into a fresh database, the rows are the same.
    let copy = setup
        .task(
            "POST",
            &format!("{base}/shop_copy"),
            Some(json!({"engine": "mariadb", "user": "copy_owner", "password": "copy-Password-1"})),
        )
        .await;
    assert_eq!(copy["task"]["state"], "succeeded", "{copy:?}");
    mariadb_restore(&server, "shop_copy", &plain);
    let checksum = "SELECT COUNT(*), MD5(GROUP_CONCAT(id, name, price ORDER BY id)) FROM items";
    let original = mariadb_sql(&server, "shop", checksum);
    assert_eq!(mariadb_sql(&server, "shop_copy", checksum), original);
    assert!(original.starts_with("5000\t"), "{original}");

    // The same dump compressed, through the POST route.
    let (compressed, task, headers) = {
        let response = setup
            .server
            .client
            .post(format!("{}{base}/shop/dump", setup.server.url))
            .header("x-api-key", &setup.key)
            .header("accept-encoding", "zstd")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        let task = setup.ended(headers["x-task-id"].to_str().unwrap()).await;
        (body, task, headers)
    };
    assert_eq!(headers["content-encoding"], "zstd");
    assert_eq!(
        task["task"]["result"]["sha256"],
        hex::encode(Sha256::digest(&compressed))
    );
    let decompressed = zstd::decode_all(compressed.as_slice()).expect("a zstd stream");
    assert!(decompressed.len() > compressed.len());
    assert!(String::from_utf8_lossy(&decompressed).contains("CREATE TABLE `items`"));

    // The password changes; the old one stops working.
    let changed = setup
        .task(
            "PUT",
            &format!("{base}/shop"),
            Some(json!({"password": "second-Password-2"})),
        )
        .await;
    assert_eq!(changed["task"]["state"], "succeeded", "{changed:?}");
    let login = |password: &str| {
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", server.socket.display()))
            .args(["-u", "shop"])
            .arg(format!("-p{password}"))
            .args(["shop", "-e", "SELECT 1"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(login("second-Password-2"));
    assert!(!login("first-Password-1"));

    let dropped = setup.task("DELETE", &format!("{base}/shop"), None).await;
    assert_eq!(dropped["task"]["state"], "succeeded", "{dropped:?}");
    let listed = setup.customer("GET", &base, None).await;
    let names: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|database| database["name"].as_str())
        .collect();
    assert_eq!(names, vec!["shop_copy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_create_dump_and_restore_give_the_same_rows() {
    if !available(&["initdb", "postgres", "pg_dump", "psql", "pg_isready"]) {
        return;
    }
    let server = PostgresServer::start().expect("PostgreSQL starts");
    let setup = setup(handlers(None, Some(&server))).await;
    let base = format!("/api/v1/instance/{INSTANCE}/database");
    for name in ["blog", "blog_copy"] {
        let created = setup
            .task(
                "POST",
                &format!("{base}/{name}"),
                Some(json!({"engine": "postgresql", "password": "pg-Password-1"})),
            )
            .await;
        assert_eq!(created["task"]["state"], "succeeded", "{created:?}");
    }
    postgres_sql(
        &server,
        "blog",
        "CREATE TABLE posts (id int PRIMARY KEY, title text);
         INSERT INTO posts SELECT g, 'post ' || g FROM generate_series(1, 3000) g;",
        None,
    );
    let listed = setup
        .customer("GET", &format!("{base}?engine=postgresql"), None)
        .await;
    assert_eq!(listed.body["total"], 2, "{:?}", listed.body);
    let (plain, task, _) = dump(&setup, &format!("{base}/blog?action=dump"), false).await;
    assert_eq!(task["task"]["state"], "succeeded");
    assert_eq!(
        task["task"]["result"]["sha256"],
        hex::encode(Sha256::digest(&plain))
    );
    postgres_sql(&server, "blog_copy", "", Some(&plain));
    let checksum =
        "SELECT count(*) || ' ' || md5(string_agg(id || title, ',' ORDER BY id)) FROM posts";
    let original = postgres_sql(&server, "blog", checksum, None);
    assert_eq!(postgres_sql(&server, "blog_copy", checksum, None), original);
    assert!(original.starts_with("3000 "), "{original}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_any_task_exists() {
    if !available(&["mariadbd", "mariadb-install-db", "mariadb"]) {
        return;
    }
    let server = MariaDbServer::start().expect("MariaDB starts");
    let setup = setup(handlers(Some(&server), None)).await;
    let base = format!("/api/v1/instance/{INSTANCE}/database");
    let before = setup.task_count().await;
    let refusals = [
        (
            "POST",
            format!("{base}/bad;name"),
            json!({"engine": "mariadb", "password": "x-Password-1"}),
            422,
        ),
        (
            "POST",
            format!("{base}/mysql"),
            json!({"engine": "mariadb", "password": "x-Password-1"}),
            422,
        ),
        (
            "POST",
            format!("{base}/fine"),
            json!({"engine": "mariadb", "user": "root", "password": "x"}),
            422,
        ),
        (
            "POST",
            format!("{base}/fine"),
            json!({"engine": "mariadb"}),
            422,
        ),
        (
            "POST",
            format!("{base}/fine"),
            json!({"engine": "oracle", "password": "x"}),
            422,
        ),
        (
            "POST",
            format!("{base}/fine"),
            json!({"engine": "mariadb", "password": "line\nbreak"}),
            422,
        ),
        (
            "POST",
            format!("{base}/fine"),
            json!({"engine": "mariadb", "password": 5}),
            400,
        ),
        (
            "POST",
            format!("{base}/fine"),
            json!({"engine": "mariadb", "password": "x", "shell": "rm"}),
            422,
        ),
        (
            "PUT",
            format!("{base}/fine"),
            json!({"engine": "mariadb", "user": "fine"}),
            422,
        ),
        ("DELETE", format!("{base}/nothing"), json!({}), 404),
    ];
    for (method, path, body, status) in refusals {
        let answer = setup.customer(method, &path, Some(body.clone())).await;
        assert_eq!(
            answer.status, status,
            "{method} {path} {body}: {:?}",
            answer.body
        );
        assert!(
            answer.body["error"]["code"].is_string(),
            "{:?}",
            answer.body
        );
        assert!(!answer.body.to_string().contains("x-Password-1"));
    }
    assert_eq!(
        setup.task_count().await,
        before,
        "a refused request made a task"
    );

    // Another customer does not see the instance at all.
    let (_, other) = setup.server.customer("mallory").await;
    let answer = setup.server.call("GET", &base, Some(&other), None).await;
    assert_eq!(answer.status, 404);
    let answer = setup
        .server
        .call(
            "POST",
            &format!("{base}/theirs"),
            Some(&other),
            Some(json!({"engine": "mariadb", "password": "x-Password-1"})),
        )
        .await;
    assert_eq!(answer.status, 404);
    // An engine that is not installed is a clear error, not an empty success.
    let answer = setup
        .task(
            "POST",
            &format!("{base}/elsewhere"),
            Some(json!({"engine": "postgresql", "password": "x-Password-1"})),
        )
        .await;
    assert_eq!(answer["task"]["state"], "failed");
    assert_eq!(answer["task"]["error"]["code"], "unavailable", "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_agent_refuses_reads_and_its_tasks_wait_until_it_is_back() {
    if !available(&["mariadbd", "mariadb-install-db", "mariadb"]) {
        return;
    }
    let server = MariaDbServer::start().expect("MariaDB starts");
    let mut setup = setup(handlers(Some(&server), None)).await;
    let base = format!("/api/v1/instance/{INSTANCE}/database");
    setup.stop_agent().await;

    let read = setup.customer("GET", &base, None).await;
    assert_eq!(read.status, 503, "{:?}", read.body);
    assert_eq!(read.body["error"]["code"], "agent_offline");
    let dump = setup
        .customer("GET", &format!("{base}/x?action=dump&engine=mariadb"), None)
        .await;
    assert_eq!(dump.status, 503, "{:?}", dump.body);

    let queued = setup
        .customer(
            "POST",
            &format!("{base}/later"),
            Some(json!({"engine": "mariadb", "password": "later-Password-1"})),
        )
        .await;
    assert_eq!(queued.status, 202);
    let id = queued.body["task"]["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = setup
        .server
        .admin("GET", &format!("/api/v1/task/{id}"), None)
        .await;
    assert_eq!(
        waiting.body["task"]["state"], "queued",
        "{:?}",
        waiting.body
    );

    setup.start_agent(handlers(Some(&server), None)).await;
    let ended = setup.ended(&id).await;
    assert_eq!(ended["task"]["state"], "succeeded", "{ended:?}");
    assert!(mariadb_sql(&server, "information_schema", "SHOW DATABASES").contains("later"));

    // A task whose deadline passes while the agent is away expires instead of running late.
    setup.stop_agent().await;
    let app = setup.server.app();
    let operation = protocol::Operation::DatabaseCreate {
        engine: protocol::DatabaseEngine::MariaDb,
        name: "too_late".into(),
        user: "too_late".into(),
        password: protocol::Secret::new("late-Password-1"),
    };
    let new =
        coordinator::agentwork::new_task(&setup.user, INSTANCE, "database.create", &operation)
            .deadline(Duration::from_millis(500));
    let (task, _) = app.tasks.submit(new).unwrap();
    let ended = setup.ended(&task.id).await;
    assert_eq!(ended["task"]["state"], "expired", "{ended:?}");
    setup.start_agent(handlers(Some(&server), None)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!mariadb_sql(&server, "information_schema", "SHOW DATABASES").contains("too_late"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_cut_off_by_the_agent_going_away_is_an_error_not_a_short_success() {
    if !available(&["mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump"]) {
        return;
    }
    let server = MariaDbServer::start().expect("MariaDB starts");
    let mut setup = setup(handlers(Some(&server), None)).await;
    let base = format!("/api/v1/instance/{INSTANCE}/database");
    let created = setup
        .task(
            "POST",
            &format!("{base}/big"),
            Some(json!({"engine": "mariadb", "password": "big-Password-1"})),
        )
        .await;
    assert_eq!(created["task"]["state"], "succeeded");
    // About 40 MB of rows, far more than the path buffers.
    mariadb_sql(
        &server,
        "big",
        "CREATE TABLE blobs (id INT PRIMARY KEY, body TEXT);
         INSERT INTO blobs SELECT seq, REPEAT(MD5(seq), 128) FROM seq_1_to_10000;",
    );
    let mut response = setup
        .server
        .client
        .get(format!("{}{base}/big?action=dump", setup.server.url))
        .header("x-api-key", &setup.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let task_id = response.headers()["x-task-id"]
        .to_str()
        .unwrap()
        .to_string();
    let first = response.chunk().await.unwrap().expect("the dump starts");
    assert!(!first.is_empty());
    setup.stop_agent().await;
    let mut received = first.len();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received += chunk.len(),
                Ok(None) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("the body ends in time");
    assert!(
        outcome.is_err(),
        "the cut dump ended like a complete one after {received} bytes"
    );
    let task = setup.ended(&task_id).await;
    assert_eq!(task["task"]["state"], "failed", "{task:?}");
    assert!(log_lines(&task).len() < 1000);
}
