//! Vhosts, certificates and caches through the whole path: API → coordinator → QUIC → agent →
//! a real private nginx, checked with HTTP(S) requests carrying the vhost's Host header. Hostile
//! input is refused with 422 before any task exists; a change that breaks the configuration is
//! rolled back with the other vhosts still answering; an uploaded certificate is checked, served
//! and verified with the test CA; ACME issuance and renewal run against pebble on loopback; a
//! cached answer is a HIT until a purge.

use std::time::Duration;
use testkit::agent_crate as agent;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use testkit::agent_work::{INSTANCE, Setup, log_lines, setup, setup_with};
use testkit::net::free_port;
use testkit::vhosts::{HandlerSite, upstream};

fn base() -> String {
    format!("/api/v1/instance/{INSTANCE}")
}

fn handlers(site: &HandlerSite) -> agent::Handlers {
    agent::Handlers::new()
        .with(agent::PingHandler)
        .with(site.handler.clone())
}

fn static_vhost(names: &[&str], root: &str) -> Value {
    json!({ "server_names": names, "root": root })
}

fn state(task: &Value) -> &str {
    task["task"]["state"].as_str().unwrap_or("")
}

/// The reasons of a 422, by field.
fn fields(body: &Value) -> Vec<String> {
    body["error"]["details"]["fields"]
        .as_object()
        .map(|fields| fields.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_created_served_changed_rolled_back_and_deleted() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let setup = setup(handlers(&site)).await;
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");

    for (id, names) in [
        ("a", ["a.example", "www.a.example"]),
        ("b", ["b.example", "www.b.example"]),
    ] {
        let created = setup
            .task(
                "POST",
                &format!("{}/vhost/{id}", base()),
                Some(static_vhost(&names, id)),
            )
            .await;
        assert_eq!(state(&created), "succeeded", "{created:?}");
        assert_eq!(created["task"]["kind"], "vhost.create");
        assert_eq!(created["task"]["result"]["vhost"]["version"], 1);
    }
    assert_eq!(site.body("a.example").await, "site a\n");
    assert_eq!(site.body("www.b.example").await, "site b\n");

    let listed = setup
        .customer("GET", &format!("{}/vhost", base()), None)
        .await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["total"], 2);
    let one = setup
        .customer("GET", &format!("{}/vhost/a", base()), None)
        .await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(
        one.body["server_names"],
        json!(["a.example", "www.a.example"])
    );
    assert_eq!(one.body["version"], 1);
    assert_eq!(one.body["hash"].as_str().unwrap().len(), 64);
    assert!(one.body.get("extra").is_none(), "customers see no block");

    // Hostile names and paths are refused per field before any task exists.
    let before = setup.task_count().await;
    let hostile = setup
        .customer(
            "POST",
            &format!("{}/vhost/c", base()),
            Some(json!({
                "server_names": ["c.example;", "c.example\n}", "{c}.example", "..", "ok.example"],
                "root": "../../etc",
                "proxy_pass": null,
            })),
        )
        .await;
    assert_eq!(hostile.status, 422, "{:?}", hostile.body);
    for field in [
        "server_names[0]",
        "server_names[1]",
        "server_names[2]",
        "server_names[3]",
        "root",
    ] {
        assert!(
            fields(&hostile.body).contains(&field.to_string()),
            "{field}: {:?}",
            hostile.body
        );
    }
    let bad_id = setup
        .customer(
            "POST",
            &format!("{}/vhost/a;b", base()),
            Some(static_vhost(&["d.example"], "a")),
        )
        .await;
    assert_eq!(bad_id.status, 422, "{:?}", bad_id.body);
    let unknown_field = setup
        .customer(
            "POST",
            &format!("{}/vhost/d", base()),
            Some(json!({"server_names": ["d.example"], "root": "a", "include": "/etc/passwd"})),
        )
        .await;
    assert_eq!(unknown_field.status, 400, "{:?}", unknown_field.body);
    assert_eq!(setup.task_count().await, before, "nothing was submitted");

    // A proxy vhost whose application is not running yet is created: nginx serves it (with
    // 502 from the application, reported in the task's log) and the other vhosts keep answering.
    let closed = free_port();
    let app = setup
        .task(
            "POST",
            &format!("{}/vhost/app", base()),
            Some(json!({
                "server_names": ["app.example"],
                "proxy_pass": format!("http://127.0.0.1:{closed}"),
            })),
        )
        .await;
    assert_eq!(state(&app), "succeeded", "{app:?}");
    assert!(
        log_lines(&app)
            .iter()
            .any(|line| line.contains("status 502") && line.contains("Connection refused")),
        "the task log reports the application's answer: {:?}",
        log_lines(&app)
    );
    assert_eq!(site.body("app.example").await, "status 502");
    assert_eq!(site.body("a.example").await, "site a\n");
    assert_eq!(site.body("b.example").await, "site b\n");

    // An administrator's block nginx refuses fails the configuration test and changes nothing;
    // a good one survives a customer's change. Customers cannot set it.
    let extra = format!("{}/vhost/a/extra", base());
    let denied = setup
        .customer("PUT", &extra, Some(json!({"extra": "add_header X-A 1;"})))
        .await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    let refused = setup
        .server
        .admin(
            "PUT",
            &format!("{extra}?wait=30"),
            Some(json!({"extra": "no_such_directive on;"})),
        )
        .await;
    assert_eq!(
        refused.body["task"]["state"], "failed",
        "{:?}",
        refused.body
    );
    assert!(
        refused.body["task"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ConfigTest"),
        "{:?}",
        refused.body
    );
    let unbalanced = setup
        .server
        .admin("PUT", &extra, Some(json!({"extra": "} server {"})))
        .await;
    assert_eq!(unbalanced.status, 422, "{:?}", unbalanced.body);
    let set = setup
        .server
        .admin(
            "PUT",
            &format!("{extra}?wait=30"),
            Some(json!({"extra": "add_header X-Admin kept always;"})),
        )
        .await;
    assert_eq!(set.body["task"]["state"], "succeeded", "{:?}", set.body);
    let changed = setup
        .task(
            "PUT",
            &format!("{}/vhost/a", base()),
            Some(json!({"server_names": ["a.example", "www.a.example"], "root": "a", "limits": {"max_body_bytes": 4096}})),
        )
        .await;
    assert_eq!(state(&changed), "succeeded", "{changed:?}");
    let answer = site.get("a.example", "/").await.unwrap();
    assert_eq!(
        (answer.status, answer.header("x-admin")),
        (200, Some("kept"))
    );
    let seen = setup
        .server
        .admin("GET", &format!("{}/vhost/a", base()), None)
        .await;
    assert_eq!(seen.body["extra"], "add_header X-Admin kept always;");
    assert_eq!(seen.body["version"], 3);
    assert_eq!(seen.body["history"].as_array().unwrap().len(), 3);

    // Creating an existing vhost is a conflict; deleting one leaves the other.
    let again = setup
        .task(
            "POST",
            &format!("{}/vhost/b", base()),
            Some(static_vhost(&["b2.example"], "b")),
        )
        .await;
    assert_eq!(again["task"]["error"]["code"], "conflict", "{again:?}");
    let deleted = setup
        .task("DELETE", &format!("{}/vhost/a", base()), None)
        .await;
    assert_eq!(state(&deleted), "succeeded", "{deleted:?}");
    assert!(site.get("a.example", "/").await.is_err());
    assert_eq!(site.body("b.example").await, "site b\n");
    let gone = setup
        .customer("GET", &format!("{}/vhost/a", base()), None)
        .await;
    assert_eq!(gone.status, 404, "{:?}", gone.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_the_agent_and_changes_wait_for_it() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let mut setup = setup(handlers(&site)).await;
    site.document_root("a", "site a\n");
    setup.stop_agent().await;
    let offline = setup
        .customer("GET", &format!("{}/vhost", base()), None)
        .await;
    assert_eq!(offline.status, 503, "{:?}", offline.body);
    let queued = setup
        .customer(
            "POST",
            &format!("{}/vhost/a", base()),
            Some(static_vhost(&["a.example"], "a")),
        )
        .await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    let id = queued.body["task"]["id"].as_str().unwrap().to_string();
    setup.start_agent(handlers(&site)).await;
    let ended = setup.ended(&id).await;
    assert_eq!(state(&ended), "succeeded", "{ended:?}");
    assert_eq!(site.body("a.example").await, "site a\n");
}

struct TestCa {
    root: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Hostplane Route Test Root");
        TestCa {
            root: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf for `names`, valid from `from` to `to` days around now: (certificate, key) PEM.
    fn leaf(&self, names: &[&str], from: i64, to: i64) -> (String, String) {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.root).unwrap();
        (certificate.pem(), key.serialize_pem())
    }
}

fn https_client(root_pem: &str, host: &str, site: &HandlerSite) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, site.layout().https_listen)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn https_get(
    client: &reqwest::Client,
    host: &str,
    site: &HandlerSite,
) -> Result<String, String> {
    let url = format!("https://{host}:{}/", site.layout().https_listen.port());
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| format!("{error:?}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|error| error.to_string())?;
    status
        .is_success()
        .then_some(body)
        .ok_or_else(|| format!("status {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_certificates_are_checked_served_and_removed() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let setup = setup(handlers(&site)).await;
    site.document_root("s", "secure\n");
    let created = setup
        .task(
            "POST",
            &format!("{}/vhost/s", base()),
            Some(static_vhost(&["s.example"], "s")),
        )
        .await;
    assert_eq!(state(&created), "succeeded", "{created:?}");
    let ssl = format!("/api/v1/service/ssl/instance/{INSTANCE}/vhost/s");
    let ca = TestCa::new();

    let (good, good_key) = ca.leaf(&["s.example"], -1, 90);
    let (expired, expired_key) = ca.leaf(&["s.example"], -90, -1);
    let (other_name, other_name_key) = ca.leaf(&["t.example"], -1, 90);
    let (_, unrelated_key) = ca.leaf(&["s.example"], -1, 90);
    let before = setup.task_count().await;
    let cases = [
        (
            "key of another certificate",
            &good,
            &unrelated_key,
            "private_key",
        ),
        ("expired", &expired, &expired_key, "certificate"),
        (
            "for another name",
            &other_name,
            &other_name_key,
            "certificate",
        ),
        ("not PEM", &"hello".to_string(), &good_key, "certificate"),
    ];
    for (name, certificate, key, field) in cases {
        let refused = setup
            .customer(
                "POST",
                &ssl,
                Some(json!({"certificate": certificate, "private_key": key})),
            )
            .await;
        assert_eq!(refused.status, 422, "{name}: {:?}", refused.body);
        assert!(
            fields(&refused.body).contains(&field.to_string()),
            "{name}: {:?}",
            refused.body
        );
    }
    assert_eq!(
        setup.task_count().await,
        before,
        "refused uploads start no task"
    );

    let deployed = setup
        .task(
            "POST",
            &ssl,
            Some(json!({"certificate": good, "private_key": good_key, "redirect_http": true})),
        )
        .await;
    assert_eq!(state(&deployed), "succeeded", "{deployed:?}");
    let client = https_client(&ca.root.pem(), "s.example", &site);
    assert_eq!(
        https_get(&client, "s.example", &site).await,
        Ok("secure\n".to_string())
    );
    assert_eq!(
        site.get("s.example", "/").await.unwrap().status,
        301,
        "HTTP goes to HTTPS"
    );
    let status = setup.customer("GET", &ssl, None).await;
    assert_eq!(status.status, 200, "{:?}", status.body);
    assert_eq!(status.body["enabled"], true);
    assert_eq!(status.body["source"], "upload");
    assert_eq!(status.body["names"], json!(["s.example"]));
    assert!(
        status.body["issuer"]
            .as_str()
            .unwrap()
            .contains("Route Test Root")
    );
    assert!(status.body["not_after"].as_str().unwrap().ends_with('Z'));
    assert_eq!(status.body["last_attempt"]["succeeded"], true);
    assert_eq!(status.body["acme"], Value::Null);

    let removed = setup.task("DELETE", &ssl, None).await;
    assert_eq!(state(&removed), "succeeded", "{removed:?}");
    assert!(https_get(&client, "s.example", &site).await.is_err());
    assert_eq!(site.body("s.example").await, "secure\n");
    let status = setup.customer("GET", &ssl, None).await;
    assert_eq!(status.body["enabled"], false, "{:?}", status.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_issues_renews_and_keeps_the_certificate_when_renewal_fails() {
    if !testkit::pebble::pebble_available() {
        return;
    }
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mut pebble =
        testkit::pebble::start_pebble(work.path(), site.layout().http_listen.port()).await;
    let directory = pebble.directory.clone();
    let root = pebble.listener_root.clone();
    let setup: Setup = setup_with(handlers(&site), move |config| {
        config.acme.directory = directory;
        config.acme.ca_file = Some(root);
        // Everything pebble issues is due at once; the test starts each check itself.
        config.acme.renew_before = Duration::from_secs(3650 * 86400);
        config.acme.check_interval = Duration::from_secs(3600);
    })
    .await;
    site.document_root("shop", "shop\n");
    let created = setup
        .task(
            "POST",
            &format!("{}/vhost/shop", base()),
            Some(static_vhost(
                &["shop.example.com", "www.shop.example.com"],
                "shop",
            )),
        )
        .await;
    assert_eq!(state(&created), "succeeded", "{created:?}");
    let ssl = format!("/api/v1/service/ssl/instance/{INSTANCE}/vhost/shop");

    let issued = setup
        .task(
            "POST",
            &ssl,
            Some(json!({"acme": true, "redirect_http": true})),
        )
        .await;
    assert_eq!(
        state(&issued),
        "succeeded",
        "{issued:?} {:?}",
        log_lines(&issued)
    );
    assert_eq!(issued["task"]["kind"], "ssl.acme");
    let first = setup.customer("GET", &ssl, None).await.body;
    assert_eq!(first["source"], "acme", "{first:?}");
    assert_eq!(
        first["names"],
        json!(["shop.example.com", "www.shop.example.com"])
    );
    assert!(
        first["issuer"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("pebble"),
        "{first:?}"
    );
    assert!(first["acme"]["renews_at"].is_string(), "{first:?}");
    let issuing_root = pebble.issuing_root().await;
    let client = https_client(&issuing_root, "www.shop.example.com", &site);
    assert_eq!(
        https_get(&client, "www.shop.example.com", &site).await,
        Ok("shop\n".to_string())
    );
    assert!(
        !site
            .layout()
            .tls_dir()
            .join("shop")
            .join("pending-key.pem")
            .exists(),
        "the key made on the agent is in service, not waiting"
    );

    // The renewal loop finds it due and renews it: a new certificate serves.
    let app = setup.server.app().clone();
    let started = coordinator::acme::renewal::check(&app).unwrap();
    assert_eq!(started.len(), 1, "one certificate is due");
    assert!(
        coordinator::acme::renewal::check(&app).unwrap().is_empty(),
        "a renewal under way is not started twice"
    );
    let renewed = setup.ended(&started[0]).await;
    assert_eq!(
        state(&renewed),
        "succeeded",
        "{renewed:?} {:?}",
        log_lines(&renewed)
    );
    let second = setup.customer("GET", &ssl, None).await.body;
    assert_ne!(second["fingerprint_sha256"], first["fingerprint_sha256"]);
    assert_eq!(
        https_get(&client, "www.shop.example.com", &site).await,
        Ok("shop\n".to_string())
    );

    // With the ACME server gone the next renewal fails: the certificate stays in service and
    // the status shows the failure; the loop waits before trying again.
    pebble.stop().await;
    let started = coordinator::acme::renewal::check(&app).unwrap();
    assert_eq!(started.len(), 1);
    let failed = setup.ended(&started[0]).await;
    assert_eq!(state(&failed), "failed", "{failed:?}");
    assert_eq!(failed["task"]["error"]["code"], "acme_failed");
    let third = setup.customer("GET", &ssl, None).await.body;
    assert_eq!(third["fingerprint_sha256"], second["fingerprint_sha256"]);
    assert!(third["acme"]["last_error"].is_string(), "{third:?}");
    assert_eq!(third["last_attempt"]["succeeded"], false, "{third:?}");
    assert!(third["last_attempt"]["error"].is_string(), "{third:?}");
    assert_eq!(
        https_get(&client, "www.shop.example.com", &site).await,
        Ok("shop\n".to_string())
    );
    assert!(
        coordinator::acme::renewal::check(&app).unwrap().is_empty(),
        "a failure waits"
    );

    // Removing TLS stops the renewals.
    let removed = setup.task("DELETE", &ssl, None).await;
    assert_eq!(state(&removed), "succeeded", "{removed:?}");
    assert_eq!(
        setup.customer("GET", &ssl, None).await.body["acme"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_names_cannot_be_issued_over_http01() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let setup = setup(handlers(&site)).await;
    site.document_root("w", "w\n");
    let created = setup
        .task(
            "POST",
            &format!("{}/vhost/w", base()),
            Some(static_vhost(&["w.example", "*.w.example"], "w")),
        )
        .await;
    assert_eq!(state(&created), "succeeded", "{created:?}");
    let refused = setup
        .customer(
            "POST",
            &format!("/api/v1/service/ssl/instance/{INSTANCE}/vhost/w"),
            Some(json!({"acme": true})),
        )
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert!(
        fields(&refused.body).contains(&"server_names[1]".to_string()),
        "{:?}",
        refused.body
    );
}

async fn cache_status_header(site: &HandlerSite, path: &str) -> (String, String) {
    let answer = site.get("c.example", path).await.unwrap();
    assert_eq!(answer.status, 200, "{path}: {answer:?}");
    (
        answer
            .header("x-cache-status")
            .unwrap_or("none")
            .to_string(),
        answer.body,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_hit_purge_change_and_disable_through_the_api() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let setup = setup(handlers(&site)).await;
    let (address, _count) = upstream().await;
    let created = setup
        .task(
            "POST",
            &format!("{}/vhost/c", base()),
            Some(json!({"server_names": ["c.example"], "proxy_pass": format!("http://{address}")})),
        )
        .await;
    assert_eq!(state(&created), "succeeded", "{created:?}");
    let cache = format!("/api/v1/service/cache/instance/{INSTANCE}/vhost/c");

    let before = setup.task_count().await;
    for (body, field) in [
        (json!({"ttl": 0, "max_size": "16m"}), "ttl"),
        (json!({"ttl": "5m"}), "max_size"),
        (json!({"ttl": 60, "max_size": "lots"}), "max_size"),
        (
            json!({"ttl": 60, "max_size": "16m", "bypass": {"cookies": ["a;b"]}}),
            "bypass.cookies[0]",
        ),
        (
            json!({"ttl": 60, "max_size": "16m", "bypass": {"paths": ["/x\"; }"]}}),
            "bypass.paths[0]",
        ),
    ] {
        let refused = setup.customer("POST", &cache, Some(body.clone())).await;
        assert_eq!(refused.status, 422, "{body}: {:?}", refused.body);
        assert!(
            fields(&refused.body).contains(&field.to_string()),
            "{body}: {:?}",
            refused.body
        );
    }
    let purge_refused = setup
        .customer(
            "POST",
            &format!("{cache}/purge"),
            Some(json!({"paths": ["no-slash"]})),
        )
        .await;
    assert_eq!(purge_refused.status, 422, "{:?}", purge_refused.body);
    assert_eq!(setup.task_count().await, before);

    let enabled = setup
        .task(
            "POST",
            &cache,
            Some(json!({"ttl": "5m", "max_size": "16m", "bypass": {"paths": ["/admin/"]}})),
        )
        .await;
    assert_eq!(state(&enabled), "succeeded", "{enabled:?}");
    assert_eq!(cache_status_header(&site, "/p").await.0, "MISS");
    let (hit, body) = cache_status_header(&site, "/p").await;
    assert_eq!(hit, "HIT");
    assert_eq!(
        cache_status_header(&site, "/p").await.1,
        body,
        "the same answer again"
    );
    assert_eq!(cache_status_header(&site, "/admin/x").await.0, "BYPASS");
    let status = setup.customer("GET", &cache, None).await;
    assert_eq!(status.status, 200, "{:?}", status.body);
    assert_eq!(status.body["enabled"], true);
    assert_eq!(status.body["ttl"], 300);
    assert_eq!(status.body["max_size"], 16 << 20);
    assert!(
        status.body["size"].as_u64().unwrap() > 0,
        "{:?}",
        status.body
    );

    let purged = setup
        .task(
            "POST",
            &format!("{cache}/purge"),
            Some(json!({"paths": ["/p"]})),
        )
        .await;
    assert_eq!(state(&purged), "succeeded", "{purged:?}");
    assert_eq!(purged["task"]["result"]["removed_files"], 1);
    assert_eq!(cache_status_header(&site, "/p").await.0, "MISS");
    assert_eq!(cache_status_header(&site, "/p").await.0, "HIT");
    let purged = setup.task("POST", &format!("{cache}/purge"), None).await;
    assert_eq!(state(&purged), "succeeded", "{purged:?}");
    assert_eq!(cache_status_header(&site, "/p").await.0, "MISS");
    assert!(
        site.layout().cache_dir.join("c").is_dir(),
        "the cache directory stays"
    );

    let again = setup
        .task("POST", &cache, Some(json!({"ttl": 60, "max_size": "8m"})))
        .await;
    assert_eq!(again["task"]["error"]["code"], "conflict", "{again:?}");
    let changed = setup
        .task(
            "PUT",
            &cache,
            Some(json!({"ttl": 60, "max_size_megabytes": 8})),
        )
        .await;
    assert_eq!(state(&changed), "succeeded", "{changed:?}");
    assert_eq!(setup.customer("GET", &cache, None).await.body["ttl"], 60);
    let disabled = setup.task("DELETE", &cache, None).await;
    assert_eq!(state(&disabled), "succeeded", "{disabled:?}");
    assert_eq!(cache_status_header(&site, "/p").await.0, "none");
    assert_eq!(
        setup.customer("GET", &cache, None).await.body["enabled"],
        false
    );
}
