//! Database operations against real MariaDB and PostgreSQL servers, each test starting its own
//! private servers in a temporary folder: create, list, change a password, drop, dump and
//! restore, compressed dumps, refused names, missing engines and a dump killed midway.

use std::time::Duration;

use agent::databases::{DatabaseError, DatabaseSettings, Databases, Dump, plan};
use agent::process::{self, CommandSpec, Output, Stream};
use futures_util::StreamExt;
use protocol::{DatabaseEngine, ErrorCode, Operation, OperationOutput, Secret};
use sha2::{Digest, Sha256};
use testkit::databases::{MariaDbServer, PostgresServer, available, settings};
use tokio::io::AsyncReadExt;

const MARIADB_PROGRAMS: [&str; 4] = ["mariadb", "mysqldump", "mariadbd", "mariadb-install-db"];
const POSTGRES_PROGRAMS: [&str; 4] = ["psql", "pg_dump", "initdb", "postgres"];

fn quiet() -> impl FnMut(Stream, &str) + Send {
    |_: Stream, _: &str| {}
}

/// Runs `script` as the administrator and returns its output; panics on failure.
async fn admin(engine: DatabaseEngine, settings: &DatabaseSettings, script: &str) -> String {
    let command = plan::client_command(engine, settings, script.to_string());
    let output = process::run(&command, None).await.unwrap();
    assert!(
        output.success(),
        "{script}\nfailed: {}",
        output.stderr_text()
    );
    output.stdout_text()
}

/// Whether `user` can log in to `database` with `password`.
async fn login(
    engine: DatabaseEngine,
    settings: &DatabaseSettings,
    user: &str,
    password: &str,
    database: &str,
) -> bool {
    let command = match engine {
        DatabaseEngine::MariaDb => CommandSpec::new("mariadb")
            .arg(format!("--socket={}", settings.mariadb.socket.display()))
            .arg(format!("--user={user}"))
            .args(["--protocol=socket", "--batch", "-e", "SELECT 1", database])
            .env("MYSQL_PWD", password),
        DatabaseEngine::PostgreSql => CommandSpec::new("psql")
            .args(["-X", "-w", "-q", "-h"])
            .arg(settings.postgres.socket_directory.display().to_string())
            .arg("-p")
            .arg(settings.postgres.port.to_string())
            .args(["-U", user, "-d", database, "-c", "SELECT 1"])
            .env("PGPASSWORD", password),
    };
    let output: Output = process::run(&command.timeout(Duration::from_secs(30)), None)
        .await
        .unwrap();
    output.success()
}

async fn names(databases: &Databases, engine: DatabaseEngine) -> Vec<String> {
    databases
        .list(engine)
        .await
        .unwrap()
        .into_iter()
        .map(|database| database.name)
        .collect()
}

/// Create, list, change the password, drop: the whole life of one database and its user.
async fn lifecycle(engine: DatabaseEngine, settings: DatabaseSettings) {
    let databases = Databases::new(settings.clone());
    assert!(databases.engines().await.contains(&engine));
    let first = Secret::new("first 'password' with \\ and \"quotes\" and $HOME :x");
    let second = Secret::new("second-pass\u{e4}word;DROP DATABASE shop_db;--");

    databases
        .create(engine, "shop_db", "shop_user", &first, &mut quiet())
        .await
        .unwrap();
    let again = databases
        .create(engine, "shop_db", "shop_user", &first, &mut quiet())
        .await
        .unwrap_err();
    assert_eq!(again.to_error_data().code, ErrorCode::Conflict, "{again}");

    let listed = databases.list(engine).await.unwrap();
    let shop = listed
        .iter()
        .find(|database| database.name == "shop_db")
        .unwrap_or_else(|| panic!("shop_db is not listed: {listed:?}"));
    assert_eq!(shop.owner, "shop_user");
    assert_eq!(shop.engine, engine);
    if engine == DatabaseEngine::PostgreSql {
        assert!(shop.size_bytes > 1_000_000, "{shop:?}");
    }
    assert!(
        !listed.iter().any(
            |database| ["mysql", "postgres", "template1", "information_schema"]
                .contains(&database.name.as_str())
        ),
        "system databases are listed: {listed:?}"
    );

    assert!(login(engine, &settings, "shop_user", first.expose(), "shop_db").await);
    assert!(!login(engine, &settings, "shop_user", "wrong", "shop_db").await);

    databases
        .change_password(engine, "shop_user", &second, &mut quiet())
        .await
        .unwrap();
    assert!(login(engine, &settings, "shop_user", second.expose(), "shop_db").await);
    assert!(!login(engine, &settings, "shop_user", first.expose(), "shop_db").await);

    let nobody = databases
        .change_password(engine, "nobody_here", &second, &mut quiet())
        .await
        .unwrap_err();
    assert_eq!(nobody.to_error_data().code, ErrorCode::NotFound, "{nobody}");

    // Bad names are refused and change nothing.
    let before = names(&databases, engine).await;
    for (name, user) in [("bad-name", "fine"), ("fine", "bad user"), ("x`y", "fine")] {
        let error = databases
            .create(engine, name, user, &first, &mut quiet())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_error_data().code,
            ErrorCode::InvalidInput,
            "{error}"
        );
    }
    assert_eq!(names(&databases, engine).await, before);

    let mut lines = Vec::new();
    let outcome = databases
        .perform(
            &Operation::DatabaseDrop {
                engine,
                name: "shop_db".to_string(),
            },
            &mut |_: Stream, line: &str| lines.push(line.to_string()),
        )
        .await;
    assert_eq!(outcome, Some(Ok(OperationOutput::Done)), "{lines:?}");
    assert!(
        !names(&databases, engine)
            .await
            .contains(&"shop_db".to_string())
    );
    // The user went with its only database.
    let check_user = match engine {
        DatabaseEngine::MariaDb => "SELECT COUNT(*) FROM mysql.user WHERE User = 'shop_user';",
        DatabaseEngine::PostgreSql => "SELECT count(*) FROM pg_roles WHERE rolname = 'shop_user';",
    };
    assert_eq!(admin(engine, &settings, check_user).await.trim(), "0");
    let gone = databases
        .drop(engine, "shop_db", &mut quiet())
        .await
        .unwrap_err();
    assert_eq!(gone.to_error_data().code, ErrorCode::NotFound, "{gone}");
    // No log line carries a password.
    assert!(
        !lines.iter().any(|line| line.contains("second-pass")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn mariadb_create_list_change_password_drop() {
    if !available(&MARIADB_PROGRAMS) {
        return;
    }
    let server = MariaDbServer::start().unwrap();
    lifecycle(DatabaseEngine::MariaDb, settings(Some(&server), None)).await;
}

#[tokio::test]
async fn postgres_create_list_change_password_drop() {
    if !available(&POSTGRES_PROGRAMS) {
        return;
    }
    let server = PostgresServer::start().unwrap();
    lifecycle(DatabaseEngine::PostgreSql, settings(None, Some(&server))).await;
}

/// A script that switches the administrator's session to `database`.
fn use_database(engine: DatabaseEngine, database: &str) -> String {
    match engine {
        DatabaseEngine::MariaDb => format!("USE `{database}`;\n"),
        DatabaseEngine::PostgreSql => format!("\\connect {database}\n"),
    }
}

/// Fills table `items` of `database` with `rows` rows.
async fn fill(engine: DatabaseEngine, settings: &DatabaseSettings, database: &str, rows: u32) {
    let body = match engine {
        DatabaseEngine::MariaDb => format!(
            "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(12,2), \
             note TEXT);\n\
             INSERT INTO items SELECT seq, CONCAT('item ', seq, ' \\'quoted\\' \\\\ tab\\there'), \
             seq * 1.5, REPEAT('x', seq % 50) FROM seq_1_to_{rows};\n\
             CREATE PROCEDURE item_count() SELECT COUNT(*) FROM items;\n"
        ),
        DatabaseEngine::PostgreSql => format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12,2), note text);\n\
             INSERT INTO items SELECT g, 'item ' || g || E' \\'quoted\\' \\\\ tab\\there', \
             g * 1.5, repeat('x', g % 50) FROM generate_series(1, {rows}) g;\n\
             CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS \
             'SELECT count(*) FROM items';\n"
        ),
    };
    admin(
        engine,
        settings,
        &format!("{}{body}", use_database(engine, database)),
    )
    .await;
}

/// A checksum of every row of `items` in `database`.
async fn checksum(engine: DatabaseEngine, settings: &DatabaseSettings, database: &str) -> String {
    let query = match engine {
        DatabaseEngine::MariaDb => {
            "SET SESSION group_concat_max_len = 1073741824;\n\
             SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS(',', id, name, price, note) \
             ORDER BY id SEPARATOR ';')) FROM items;\n"
        }
        DatabaseEngine::PostgreSql => {
            "SELECT count(*), md5(string_agg(concat_ws(',', id, name, price, note), ';' \
             ORDER BY id)) FROM items;\n"
        }
    };
    admin(
        engine,
        settings,
        &format!("{}{query}", use_database(engine, database)),
    )
    .await
}

/// Reads a dump to its end: the bytes, the error it ended with (if any), and its summary.
async fn drain(mut dump: Dump) -> (Vec<u8>, Option<agent::databases::DumpError>) {
    let mut data = Vec::new();
    while let Some(item) = dump.next().await {
        match item {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(error) => return (data, Some(error)),
        }
    }
    let summary = dump
        .finished()
        .expect("a dump that ended cleanly has a summary");
    assert_eq!(summary.bytes, data.len() as u64);
    assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    (data, None)
}

/// PostgreSQL 15.14 and later put a random `\restrict` key in every dump; everything else in
/// two dumps of an unchanged database is the same.
fn without_restrict_keys(dump: &[u8]) -> String {
    String::from_utf8_lossy(dump)
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn dump_and_restore(engine: DatabaseEngine, settings: DatabaseSettings) {
    let databases = Databases::new(settings.clone());
    let password = Secret::new("dump test password");
    databases
        .create(engine, "source", "source_user", &password, &mut quiet())
        .await
        .unwrap();
    fill(engine, &settings, "source", 20_000).await;
    let original = checksum(engine, &settings, "source").await;
    assert!(original.starts_with("20000\t"), "{original}");

    let (plain, error) = drain(databases.dump(engine, "source", false).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(
        plain.len() > 500_000,
        "the dump has only {} bytes",
        plain.len()
    );

    databases
        .create(engine, "restored", "source_user", &password, &mut quiet())
        .await
        .unwrap();
    let mut script = use_database(engine, "restored");
    script.push_str(&String::from_utf8(plain.clone()).unwrap());
    admin(engine, &settings, &script).await;
    assert_eq!(checksum(engine, &settings, "restored").await, original);
    // Routines came along.
    let count = match engine {
        DatabaseEngine::MariaDb => "CALL item_count();\n",
        DatabaseEngine::PostgreSql => "SELECT item_count();\n",
    };
    let counted = admin(
        engine,
        &settings,
        &format!("{}{count}", use_database(engine, "restored")),
    )
    .await;
    assert_eq!(counted.trim(), "20000");

    // A compressed dump decompresses to the same dump.
    let (compressed, error) = drain(databases.dump(engine, "source", true).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(
        compressed.len() * 3 < plain.len(),
        "{} vs {}",
        compressed.len(),
        plain.len()
    );
    let mut decompressed = Vec::new();
    async_compression::tokio::bufread::ZstdDecoder::new(&compressed[..])
        .read_to_end(&mut decompressed)
        .await
        .unwrap();
    assert_eq!(
        without_restrict_keys(&decompressed),
        without_restrict_keys(&plain)
    );

    let missing = databases
        .dump(engine, "no_such_db", false)
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_error_data().code,
        ErrorCode::NotFound,
        "{missing}"
    );
}

#[tokio::test]
async fn mariadb_dump_restores_the_same_rows() {
    if !available(&MARIADB_PROGRAMS) {
        return;
    }
    let server = MariaDbServer::start().unwrap();
    dump_and_restore(DatabaseEngine::MariaDb, settings(Some(&server), None)).await;
}

#[tokio::test]
async fn postgres_dump_restores_the_same_rows() {
    if !available(&POSTGRES_PROGRAMS) {
        return;
    }
    let server = PostgresServer::start().unwrap();
    dump_and_restore(DatabaseEngine::PostgreSql, settings(None, Some(&server))).await;
}

/// The state letter of a process in `/proc/<pid>/stat` (`S` sleeping, `Z` ended, ...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

async fn killed_dump_is_an_error(engine: DatabaseEngine, settings: DatabaseSettings) {
    let databases = Databases::new(settings.clone());
    databases
        .create(
            engine,
            "big",
            "big_user",
            &Secret::new("big password"),
            &mut quiet(),
        )
        .await
        .unwrap();
    fill(engine, &settings, "big", 200_000).await;

    let mut dump = databases.dump(engine, "big", false).await.unwrap();
    let pid = dump.process_id().unwrap();
    let first = dump.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // Nobody reads: the dump program must be waiting for its pipe, not racing ahead into memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = process_state(pid);
    assert!(
        matches!(state, Some('S' | 'D' | 'R')),
        "the dump program should still be running, blocked on its pipe: {state:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (_, error) = drain(dump).await;
    let error = error.expect("a killed dump must end with an error");
    assert!(error.to_string().contains("signal 9"), "{error}");
    assert_eq!(error.to_error_data().code, ErrorCode::CommandFailed);
}

#[tokio::test]
async fn mariadb_dump_killed_midway_ends_as_an_error() {
    if !available(&MARIADB_PROGRAMS) {
        return;
    }
    let server = MariaDbServer::start().unwrap();
    killed_dump_is_an_error(DatabaseEngine::MariaDb, settings(Some(&server), None)).await;
}

#[tokio::test]
async fn postgres_dump_killed_midway_ends_as_an_error() {
    if !available(&POSTGRES_PROGRAMS) {
        return;
    }
    let server = PostgresServer::start().unwrap();
    killed_dump_is_an_error(DatabaseEngine::PostgreSql, settings(None, Some(&server))).await;
}

#[tokio::test]
async fn a_missing_engine_gives_a_clear_error() {
    // No servers at all: the sockets point at a folder that does not exist.
    let databases = Databases::new(settings(None, None));
    assert_eq!(databases.engines().await, Vec::new());
    for engine in [DatabaseEngine::MariaDb, DatabaseEngine::PostgreSql] {
        let error = databases.list(engine).await.unwrap_err();
        assert!(
            matches!(error, DatabaseError::EngineMissing { .. }),
            "{error}"
        );
        let data = error.to_error_data();
        assert_eq!(data.code, ErrorCode::Unavailable);
        assert!(data.message.contains("not available here"), "{data}");
        assert!(
            data.message.contains("/nonexistent-socket-folder"),
            "{data}"
        );
        assert!(databases.dump(engine, "shop", false).await.is_err());
    }

    // A client program that is not installed is named.
    let mut missing_client = settings(None, None);
    missing_client.mariadb.client = "no-such-mariadb-client".to_string();
    let error = Databases::new(missing_client)
        .list(DatabaseEngine::MariaDb)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no-such-mariadb-client is not installed"),
        "{error}"
    );
}

#[tokio::test]
async fn both_engines_are_found_when_both_servers_run() {
    if !available(&MARIADB_PROGRAMS) || !available(&POSTGRES_PROGRAMS) {
        return;
    }
    let mariadb = MariaDbServer::start().unwrap();
    let postgres = PostgresServer::start().unwrap();
    let databases = Databases::new(settings(Some(&mariadb), Some(&postgres)));
    assert_eq!(
        databases.engines().await,
        vec![DatabaseEngine::MariaDb, DatabaseEngine::PostgreSql]
    );
}
