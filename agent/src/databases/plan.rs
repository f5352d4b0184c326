//! Planning database work: connection settings, the client command lines, the SQL scripts sent
//! on standard input (with every name quoted and every password a quoted literal), reading the
//! clients' answers, and what a client's error means. Pure: nothing here runs anything.
//!
//! Invariant: a password appears only inside a script, which travels on the client's standard
//! input; never in an argument or an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use protocol::{DatabaseEngine, DatabaseInfo, Secret};

use super::names::{
    check_user, mariadb_grant_database, mariadb_identifier, mariadb_string, postgres_identifier,
    postgres_string,
};
use crate::process::{CommandSpec, Input};

/// How to reach the MariaDB (or MySQL) server; the defaults suit a stock Debian container,
/// where root logs in over the unix socket without a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaDbSettings {
    /// The command line client (`mariadb`, or `mysql`).
    pub client: String,
    /// The dump program (`mysqldump` or `mariadb-dump`).
    pub dump: String,
    /// The server's unix socket.
    pub socket: PathBuf,
    /// The administrative user the client logs in as.
    pub admin_user: String,
    /// The host part of the users this agent creates (`'user'@'host'`).
    pub user_host: String,
    /// How long one client run may take.
    pub timeout: Duration,
}

impl Default for MariaDbSettings {
    fn default() -> Self {
        MariaDbSettings {
            client: "mariadb".to_string(),
            dump: "mysqldump".to_string(),
            socket: PathBuf::from("/run/mysqld/mysqld.sock"),
            admin_user: "root".to_string(),
            user_host: "localhost".to_string(),
            timeout: Duration::from_secs(300),
        }
    }
}

/// How to reach the PostgreSQL server; the defaults suit a stock Debian container, where the
/// `postgres` system user logs in as the `postgres` role by peer authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The command line client.
    pub client: String,
    /// The dump program.
    pub dump: String,
    /// The folder of the server's unix socket.
    pub socket_directory: PathBuf,
    /// The server's port (it names the socket file, `.s.PGSQL.<port>`).
    pub port: u16,
    /// The administrative role the client logs in as; it must be a superuser.
    pub admin_user: String,
    /// The system user the clients run as (through `runuser`), or `None` to run them as the
    /// agent's own user.
    pub run_as: Option<String>,
    /// How long one client run may take.
    pub timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            client: "psql".to_string(),
            dump: "pg_dump".to_string(),
            socket_directory: PathBuf::from("/var/run/postgresql"),
            port: 5432,
            admin_user: "postgres".to_string(),
            run_as: Some("postgres".to_string()),
            timeout: Duration::from_secs(300),
        }
    }
}

impl PostgresSettings {
    /// The path of the server's socket file.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_directory
            .join(format!(".s.PGSQL.{}", self.port))
    }
}

/// Settings for both engines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseSettings {
    /// MariaDB or MySQL.
    pub mariadb: MariaDbSettings,
    /// PostgreSQL.
    pub postgres: PostgresSettings,
}

/// The system databases that lists leave out.
const MARIADB_SYSTEM: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// Makes backslash escapes in string literals work whatever the server's SQL mode says.
const MARIADB_PRELUDE: &str =
    "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '');\n";

/// Server messages in English, so failures can be recognised (needs a superuser).
const POSTGRES_PRELUDE: &str = "SET lc_messages TO 'C';\n";

/// The client command that reads a script from standard input and answers one row per line,
/// fields separated by tabs, without headers.
pub fn client_command(
    engine: DatabaseEngine,
    settings: &DatabaseSettings,
    script: String,
) -> CommandSpec {
    match engine {
        DatabaseEngine::MariaDb => {
            let mariadb = &settings.mariadb;
            CommandSpec::new(&mariadb.client)
                .arg(format!("--socket={}", mariadb.socket.display()))
                .arg(format!("--user={}", mariadb.admin_user))
                .args([
                    "--protocol=socket",
                    "--batch",
                    "--skip-column-names",
                    "--default-character-set=utf8mb4",
                ])
                .env("LC_ALL", "C")
                .stdin(Input::new(format!("{MARIADB_PRELUDE}{script}")))
                .timeout(mariadb.timeout)
                .stdout_limit(16 * 1024 * 1024)
        }
        DatabaseEngine::PostgreSql => {
            let postgres = &settings.postgres;
            as_user(postgres.run_as.as_deref(), &postgres.client)
                .args(["-X", "-q", "-A", "-t", "-w", "-F", "\t"])
                .args(["-v", "ON_ERROR_STOP=1"])
                .arg("-h")
                .arg(postgres.socket_directory.display().to_string())
                .arg("-p")
                .arg(postgres.port.to_string())
                .arg("-U")
                .arg(&postgres.admin_user)
                .args(["-d", "postgres", "-f", "-"])
                .env("LC_ALL", "C")
                .stdin(Input::new(format!("{POSTGRES_PRELUDE}{script}")))
                .timeout(postgres.timeout)
                .stdout_limit(16 * 1024 * 1024)
        }
    }
}

/// The dump command for database `name`; it writes the dump as SQL text on standard output.
pub fn dump_command(
    engine: DatabaseEngine,
    settings: &DatabaseSettings,
    name: &str,
) -> CommandSpec {
    match engine {
        DatabaseEngine::MariaDb => {
            let mariadb = &settings.mariadb;
            CommandSpec::new(&mariadb.dump)
                .arg(format!("--socket={}", mariadb.socket.display()))
                .arg(format!("--user={}", mariadb.admin_user))
                .args([
                    "--protocol=socket",
                    "--single-transaction",
                    "--routines",
                    "--events",
                    "--skip-dump-date",
                    "--default-character-set=utf8mb4",
                    "--",
                    name,
                ])
                .env("LC_ALL", "C")
        }
        DatabaseEngine::PostgreSql => {
            let postgres = &settings.postgres;
            as_user(postgres.run_as.as_deref(), &postgres.dump)
                .arg("-w")
                .arg("-h")
                .arg(postgres.socket_directory.display().to_string())
                .arg("-p")
                .arg(postgres.port.to_string())
                .arg("-U")
                .arg(&postgres.admin_user)
                .args(["--", name])
                .env("LC_ALL", "C")
        }
    }
}

fn as_user(user: Option<&str>, program: &str) -> CommandSpec {
    match user {
        Some(user) => CommandSpec::new("runuser").args(["-u", user, "--", program]),
        None => CommandSpec::new(program),
    }
}

/// The script that lists databases as `name, size in bytes, owner` rows.
pub fn list_script(engine: DatabaseEngine) -> String {
    match engine {
        // The owner is the first user granted privileges on the database (exactly, or with
        // its wildcards escaped as this agent grants them).
        DatabaseEngine::MariaDb => format!(
            "SELECT s.SCHEMA_NAME, \
             COALESCE((SELECT SUM(t.DATA_LENGTH + t.INDEX_LENGTH) FROM information_schema.TABLES t \
             WHERE t.TABLE_SCHEMA = s.SCHEMA_NAME), 0), \
             COALESCE((SELECT d.User FROM mysql.db d WHERE d.Db IN (s.SCHEMA_NAME, \
             REPLACE(s.SCHEMA_NAME, '_', '\\\\_')) ORDER BY d.User LIMIT 1), '') \
             FROM information_schema.SCHEMATA s WHERE s.SCHEMA_NAME NOT IN ({MARIADB_SYSTEM}) \
             ORDER BY s.SCHEMA_NAME;\n"
        ),
        DatabaseEngine::PostgreSql => "SELECT d.datname, pg_database_size(d.oid), \
             pg_get_userbyid(d.datdba) FROM pg_database d \
             WHERE NOT d.datistemplate AND d.datname <> 'postgres' ORDER BY d.datname;\n"
            .to_string(),
    }
}

/// Reads the rows of [`list_script`].
pub fn parse_list(engine: DatabaseEngine, stdout: &str) -> Vec<DatabaseInfo> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?;
            let size = fields.next()?.trim();
            let owner = fields.next().unwrap_or("");
            Some(DatabaseInfo {
                name: name.to_string(),
                engine,
                // MariaDB answers a DECIMAL sum; a fraction never occurs but is tolerated.
                size_bytes: size
                    .split('.')
                    .next()
                    .and_then(|whole| whole.parse().ok())
                    .unwrap_or(0),
                owner: owner.to_string(),
            })
        })
        .filter(|database| !database.name.is_empty())
        .collect()
}

/// Creates database `name` owned by `user` (created if missing; an existing user gets
/// `password` as its new password, so the password the caller holds is the one that works).
pub fn create_script(
    engine: DatabaseEngine,
    settings: &DatabaseSettings,
    name: &str,
    user: &str,
    password: &Secret,
) -> String {
    match engine {
        DatabaseEngine::MariaDb => {
            let account = mariadb_account(user, &settings.mariadb.user_host);
            let password = mariadb_string(password.expose());
            format!(
                "CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n\
                 CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {password};\n\
                 ALTER USER {account} IDENTIFIED BY {password};\n\
                 GRANT ALL PRIVILEGES ON {grant}.* TO {account};\n",
                database = mariadb_identifier(name),
                grant = mariadb_grant_database(name),
            )
        }
        DatabaseEngine::PostgreSql => {
            let role = postgres_identifier(user);
            let password = postgres_string(password.expose());
            format!(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {user_literal}) AS role_exists \\gset\n\
                 \\if :role_exists\n\
                 ALTER ROLE {role} WITH LOGIN PASSWORD {password};\n\
                 \\else\n\
                 CREATE ROLE {role} WITH LOGIN PASSWORD {password};\n\
                 \\endif\n\
                 CREATE DATABASE {database} OWNER {role};\n\
                 REVOKE ALL ON DATABASE {database} FROM PUBLIC;\n",
                user_literal = postgres_string(user),
                database = postgres_identifier(name),
            )
        }
    }
}

/// Sets the password of `user`; fails when the user does not exist.
pub fn change_password_script(
    engine: DatabaseEngine,
    settings: &DatabaseSettings,
    user: &str,
    password: &Secret,
) -> String {
    match engine {
        DatabaseEngine::MariaDb => format!(
            "ALTER USER {} IDENTIFIED BY {};\n",
            mariadb_account(user, &settings.mariadb.user_host),
            mariadb_string(password.expose())
        ),
        DatabaseEngine::PostgreSql => format!(
            "ALTER ROLE {} WITH PASSWORD {};\n",
            postgres_identifier(user),
            postgres_string(password.expose())
        ),
    }
}

/// Asks whether database `name` exists and who owns it, as rows `database<TAB>count` and
/// `owner<TAB>user<TAB>host<TAB>other databases of that user`.
pub fn owners_script(engine: DatabaseEngine, name: &str) -> String {
    match engine {
        DatabaseEngine::MariaDb => {
            let exact = mariadb_string(name);
            let escaped = mariadb_string(&name.replace('_', "\\_"));
            format!(
                "SELECT 'database', COUNT(*) FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME = {exact};\n\
                 SELECT 'owner', d.User, d.Host, (SELECT COUNT(*) FROM mysql.db o \
                 WHERE o.User = d.User AND o.Host = d.Host AND o.Db NOT IN ({exact}, {escaped})) \
                 FROM mysql.db d WHERE d.Db IN ({exact}, {escaped}) ORDER BY d.User, d.Host;\n"
            )
        }
        DatabaseEngine::PostgreSql => {
            let literal = postgres_string(name);
            format!(
                "SELECT 'database', count(*) FROM pg_database WHERE datname = {literal};\n\
                 SELECT 'owner', pg_get_userbyid(d.datdba), '', (SELECT count(*) FROM pg_database o \
                 WHERE o.datdba = d.datdba AND o.oid <> d.oid) \
                 FROM pg_database d WHERE d.datname = {literal};\n"
            )
        }
    }
}

/// A user that has rights on a database about to be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The user name.
    pub user: String,
    /// The host part (MariaDB only; empty for PostgreSQL).
    pub host: String,
    /// How many other databases the user has rights on (MariaDB) or owns (PostgreSQL).
    pub other_databases: u64,
}

/// What [`owners_script`] found: whether the database exists, and its owners.
pub fn parse_owners(stdout: &str) -> (bool, Vec<Owner>) {
    let mut exists = false;
    let mut owners = Vec::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["database", count] => exists = count.trim() != "0",
            ["owner", user, host, others] => owners.push(Owner {
                user: user.to_string(),
                host: host.to_string(),
                other_databases: others.trim().parse().unwrap_or(u64::MAX),
            }),
            _ => {}
        }
    }
    (exists, owners)
}

/// Drops database `name`. For MariaDB the same script drops each owner that has no other
/// database, and takes the grant away from the others. PostgreSQL roles are dropped by
/// [`drop_role_script`] afterwards, because a role can still own objects elsewhere.
///
/// Owners whose names this agent would not have created (administrative or malformed names)
/// are never touched.
pub fn drop_script(engine: DatabaseEngine, name: &str, owners: &[Owner]) -> String {
    match engine {
        DatabaseEngine::MariaDb => {
            let mut script = format!("DROP DATABASE {};\n", mariadb_identifier(name));
            for owner in owners
                .iter()
                .filter(|owner| check_user(engine, &owner.user).is_ok())
            {
                let account = mariadb_account(&owner.user, &owner.host);
                if owner.other_databases == 0 {
                    script.push_str(&format!("DROP USER IF EXISTS {account};\n"));
                } else {
                    script.push_str(&format!(
                        "REVOKE ALL PRIVILEGES ON {}.* FROM {account};\n",
                        mariadb_grant_database(name)
                    ));
                }
            }
            script
        }
        DatabaseEngine::PostgreSql => {
            format!(
                "DROP DATABASE {} WITH (FORCE);\n",
                postgres_identifier(name)
            )
        }
    }
}

/// Drops the PostgreSQL role that owned a dropped database, if this agent may and it owns no
/// other database; `None` when the role stays.
pub fn drop_role_script(owner: &Owner) -> Option<String> {
    (owner.other_databases == 0 && check_user(DatabaseEngine::PostgreSql, &owner.user).is_ok())
        .then(|| {
            format!(
                "DROP ROLE IF EXISTS {};\n",
                postgres_identifier(&owner.user)
            )
        })
}

fn mariadb_account(user: &str, host: &str) -> String {
    format!("{}@{}", mariadb_string(user), mariadb_string(host))
}

/// What a failed client run means, judged from its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// The thing to create exists already.
    Exists,
    /// The thing named does not exist.
    Missing,
    /// The server cannot be reached.
    Unreachable,
    /// The server refused the administrative login.
    Refused,
    /// Anything else.
    Other,
}

/// Classifies a failed client run by its standard error.
pub fn classify_failure(engine: DatabaseEngine, stderr: &str) -> ClientFailure {
    let has = |needle: &str| stderr.contains(needle);
    match engine {
        DatabaseEngine::MariaDb => {
            if has("ERROR 1007 ") {
                ClientFailure::Exists
            } else if has("ERROR 1008 ") || has("ERROR 1049 ") || has("ERROR 1396 ") {
                ClientFailure::Missing
            } else if has("ERROR 2002 ") || has("ERROR 2003 ") || has("ERROR 2013 ") {
                ClientFailure::Unreachable
            } else if has("ERROR 1045 ") || has("ERROR 1698 ") {
                ClientFailure::Refused
            } else {
                ClientFailure::Other
            }
        }
        DatabaseEngine::PostgreSql => {
            if has("already exists") {
                ClientFailure::Exists
            } else if has("could not connect") || has("connection to server") {
                ClientFailure::Unreachable
            } else if has("does not exist") {
                ClientFailure::Missing
            } else if has("authentication failed") || has("must be superuser") {
                ClientFailure::Refused
            } else {
                ClientFailure::Other
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use DatabaseEngine::{MariaDb, PostgreSql};

    fn settings() -> DatabaseSettings {
        DatabaseSettings {
            mariadb: MariaDbSettings {
                socket: PathBuf::from("/tmp/t/s"),
                ..MariaDbSettings::default()
            },
            postgres: PostgresSettings {
                socket_directory: PathBuf::from("/tmp/p"),
                port: 5433,
                run_as: None,
                ..PostgresSettings::default()
            },
        }
    }

    #[test]
    fn client_commands_never_carry_the_script() {
        let secret = Secret::new("s3cr3t'pw");
        for engine in [MariaDb, PostgreSql] {
            let script = create_script(engine, &settings(), "shop", "shop_user", &secret);
            let command = client_command(engine, &settings(), script);
            assert!(
                !command.args.iter().any(|arg| arg.contains("s3cr3t")),
                "{command:?}"
            );
            assert!(
                !command
                    .env
                    .iter()
                    .any(|(_, value)| value.contains("s3cr3t"))
            );
            let input = String::from_utf8(command.stdin.unwrap().expose().to_vec()).unwrap();
            assert!(input.contains("s3cr3t''pw"), "{input}");
        }
    }

    #[test]
    fn client_command_lines() {
        let mariadb = client_command(MariaDb, &settings(), String::new());
        assert_eq!(mariadb.program, "mariadb");
        assert_eq!(
            mariadb.args,
            vec![
                "--socket=/tmp/t/s",
                "--user=root",
                "--protocol=socket",
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4"
            ]
        );
        let postgres = client_command(PostgreSql, &settings(), String::new());
        assert_eq!(postgres.program, "psql");
        assert_eq!(
            postgres.args,
            vec![
                "-X",
                "-q",
                "-A",
                "-t",
                "-w",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "/tmp/p",
                "-p",
                "5433",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-f",
                "-"
            ]
        );
        let default = DatabaseSettings::default();
        let peer = client_command(PostgreSql, &default, String::new());
        assert_eq!(peer.program, "runuser");
        assert_eq!(&peer.args[..4], ["-u", "postgres", "--", "psql"]);
    }

    #[test]
    fn dump_command_lines() {
        let mariadb = dump_command(MariaDb, &settings(), "shop");
        assert_eq!(mariadb.program, "mysqldump");
        assert!(mariadb.args.contains(&"--single-transaction".to_string()));
        assert!(mariadb.args.contains(&"--routines".to_string()));
        assert!(mariadb.args.contains(&"--events".to_string()));
        assert_eq!(&mariadb.args[mariadb.args.len() - 2..], ["--", "shop"]);
        let postgres = dump_command(PostgreSql, &settings(), "shop");
        assert_eq!(postgres.program, "pg_dump");
        assert_eq!(&postgres.args[postgres.args.len() - 2..], ["--", "shop"]);
    }

    #[test]
    fn create_scripts() {
        let password = Secret::new("a'b\\c");
        assert_eq!(
            create_script(MariaDb, &settings(), "shop_db", "shop", &password),
            "CREATE DATABASE `shop_db` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n\
             CREATE USER IF NOT EXISTS 'shop'@'localhost' IDENTIFIED BY 'a''b\\\\c';\n\
             ALTER USER 'shop'@'localhost' IDENTIFIED BY 'a''b\\\\c';\n\
             GRANT ALL PRIVILEGES ON `shop\\_db`.* TO 'shop'@'localhost';\n"
        );
        let postgres = create_script(PostgreSql, &settings(), "shop_db", "shop", &password);
        assert!(postgres.contains("CREATE ROLE \"shop\" WITH LOGIN PASSWORD E'a''b\\\\c';\n"));
        assert!(postgres.contains("CREATE DATABASE \"shop_db\" OWNER \"shop\";\n"));
        assert!(postgres.contains("REVOKE ALL ON DATABASE \"shop_db\" FROM PUBLIC;\n"));
    }

    #[test]
    fn change_password_scripts() {
        let password = Secret::new("new");
        assert_eq!(
            change_password_script(MariaDb, &settings(), "shop", &password),
            "ALTER USER 'shop'@'localhost' IDENTIFIED BY 'new';\n"
        );
        assert_eq!(
            change_password_script(PostgreSql, &settings(), "shop", &password),
            "ALTER ROLE \"shop\" WITH PASSWORD E'new';\n"
        );
    }

    #[test]
    fn drop_scripts_spare_shared_and_administrative_users() {
        let owners = vec![
            Owner {
                user: "shop".into(),
                host: "localhost".into(),
                other_databases: 0,
            },
            Owner {
                user: "shared".into(),
                host: "localhost".into(),
                other_databases: 2,
            },
            Owner {
                user: "root".into(),
                host: "localhost".into(),
                other_databases: 0,
            },
        ];
        assert_eq!(
            drop_script(MariaDb, "shop_db", &owners),
            "DROP DATABASE `shop_db`;\n\
             DROP USER IF EXISTS 'shop'@'localhost';\n\
             REVOKE ALL PRIVILEGES ON `shop\\_db`.* FROM 'shared'@'localhost';\n"
        );
        assert_eq!(
            drop_script(PostgreSql, "shop_db", &owners),
            "DROP DATABASE \"shop_db\" WITH (FORCE);\n"
        );
        assert_eq!(
            drop_role_script(&owners[0]).as_deref(),
            Some("DROP ROLE IF EXISTS \"shop\";\n")
        );
        assert_eq!(drop_role_script(&owners[1]), None);
        let postgres_owner = Owner {
            user: "postgres".into(),
            host: String::new(),
            other_databases: 0,
        };
        assert_eq!(drop_role_script(&postgres_owner), None);
    }

    #[test]
    fn answers_are_read() {
        let listed = parse_list(MariaDb, "shop\t16384\tshop\nempty\t0\t\n");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].size_bytes, 16384);
        assert_eq!(listed[0].owner, "shop");
        assert_eq!(listed[1].owner, "");
        let (exists, owners) = parse_owners("database\t1\nowner\tshop\tlocalhost\t0\n");
        assert!(exists);
        assert_eq!(owners[0].user, "shop");
        assert_eq!(parse_owners("database\t0\n"), (false, Vec::new()));
    }

    #[test]
    fn failures_are_classified() {
        let cases = [
            (
                MariaDb,
                "ERROR 1007 (HY000) at line 2: Can't create database 'x'; database exists",
                ClientFailure::Exists,
            ),
            (
                MariaDb,
                "ERROR 1396 (HY000) at line 2: Operation ALTER USER failed for 'x'@'localhost'",
                ClientFailure::Missing,
            ),
            (
                MariaDb,
                "ERROR 2002 (HY000): Can't connect to local server through socket '/x' (2)",
                ClientFailure::Unreachable,
            ),
            (
                MariaDb,
                "ERROR 1698 (28000): Access denied for user 'root'@'localhost'",
                ClientFailure::Refused,
            ),
            (
                MariaDb,
                "ERROR 1064 (42000) at line 1: You have an error in your SQL syntax",
                ClientFailure::Other,
            ),
            (
                PostgreSql,
                "psql:<stdin>:8: ERROR:  database \"x\" already exists",
                ClientFailure::Exists,
            ),
            (
                PostgreSql,
                "psql:<stdin>:2: ERROR:  role \"x\" does not exist",
                ClientFailure::Missing,
            ),
            (
                PostgreSql,
                "psql: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed: No such file or directory",
                ClientFailure::Unreachable,
            ),
        ];
        for (engine, stderr, expected) in cases {
            assert_eq!(classify_failure(engine, stderr), expected, "{stderr}");
        }
    }
}
