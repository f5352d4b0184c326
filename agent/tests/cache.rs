//! Per-vhost caches on a real, private nginx in front of an upstream the test runs: a second
//! request is a HIT, a purge (by path or all) makes it a MISS, bypass rules go around the cache,
//! and turning the cache off removes it.

use std::sync::atomic::Ordering;

use agent::cache::{Bypass, CacheSettings, PurgeRequest};
use agent::vhosts::WebError;
use testkit::vhosts::{Site, proxy_spec, static_spec, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn settings(bypass: Bypass) -> CacheSettings {
    CacheSettings {
        ttl_seconds: 300,
        max_size_megabytes: 16,
        bypass,
    }
}

/// GET through nginx: (X-Cache-Status, body).
async fn fetch(site: &Site, path: &str) -> (String, String) {
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

#[tokio::test]
async fn cached_answers_hit_and_purges_miss() {
    let Some(site) = Site::start().await else {
        return;
    };
    let (address, count) = upstream().await;
    site.ops
        .put_vhost(
            "c",
            proxy_spec(
                &["c.example", "www.c.example"],
                &format!("http://{address}"),
            ),
        )
        .await
        .unwrap();
    let bypass = Bypass {
        cookies: vec!["session".into()],
        paths: vec!["/admin/".into()],
    };
    let status = site
        .ops
        .set_cache("c", settings(bypass.clone()))
        .await
        .unwrap();
    assert_eq!(status.settings, Some(settings(bypass)));

    // The changes' own check requests reached the upstream already; count from here.
    let base = count.load(Ordering::SeqCst);
    let cases = [
        // (path, expected cache status, which upstream request answered it, counted from here)
        ("/page", "MISS", 1),
        ("/page", "HIT", 1),
        ("/other", "MISS", 2),
        ("/other", "HIT", 2),
        ("/admin/x", "BYPASS", 3),
        ("/admin/x", "BYPASS", 4),
    ];
    for (path, cache, request) in cases {
        let expected = (cache.to_string(), format!("{path} #{}", base + request));
        assert_eq!(fetch(&site, path).await, expected, "{path}");
    }
    let status = site.ops.cache_status("c").unwrap();
    assert!(status.files >= 2 && status.size_bytes > 0, "{status:?}");

    // A request with the bypass cookie goes around the cache.
    let answer = vhosts_support_cookie_get(&site, "/page", "session=1").await;
    assert_eq!(answer.0, "BYPASS");

    let report = site
        .ops
        .purge_cache("c", PurgeRequest::Paths(vec!["/page".into()]))
        .await
        .unwrap();
    assert_eq!(report.removed_files, 1);
    let (cache, body) = fetch(&site, "/page").await;
    assert_eq!(cache, "MISS", "a purged path is fetched again");
    assert!(body.starts_with("/page #"), "{body}");
    assert_eq!(
        fetch(&site, "/other").await.0,
        "HIT",
        "other paths stay cached"
    );

    let report = site.ops.purge_cache("c", PurgeRequest::All).await.unwrap();
    assert!(report.removed_files >= 2, "{report:?}");
    assert_eq!(fetch(&site, "/other").await.0, "MISS");
    assert_eq!(fetch(&site, "/other").await.0, "HIT");
    assert!(
        site.layout().cache_dir.join("c").is_dir(),
        "purging keeps the cache directory"
    );

    site.ops.disable_cache("c").await.unwrap();
    assert_eq!(fetch(&site, "/other").await.0, "none");
    assert!(!site.layout().cache_dir.join("c").exists());
    assert_eq!(site.ops.cache_status("c").unwrap().settings, None);
}

async fn vhosts_support_cookie_get(site: &Site, path: &str, cookie: &str) -> (String, String) {
    use tokio::net::TcpStream;
    let mut stream = TcpStream::connect(site.http_address()).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: c.example\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = agent::vhosts::probe::parse_answer(&answer).unwrap();
    (
        answer
            .header("x-cache-status")
            .unwrap_or("none")
            .to_string(),
        answer.body,
    )
}

#[tokio::test]
async fn cache_settings_are_checked() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("s", "static\n");
    site.ops
        .put_vhost("s", static_spec(&["s.example"], "s"))
        .await
        .unwrap();
    let refused = site.ops.set_cache("s", settings(Bypass::default())).await;
    assert!(
        matches!(&refused, Err(WebError::Invalid(error)) if error.has("cache")),
        "{refused:?}"
    );
    let hostile = Bypass {
        cookies: vec!["a;b".into()],
        paths: vec!["/x\"; }".into()],
    };
    let refused = site.ops.set_cache("s", settings(hostile)).await;
    assert!(
        matches!(&refused, Err(WebError::Invalid(error)) if error.has("bypass.cookies[0]") && error.has("bypass.paths[0]")),
        "{refused:?}"
    );
    let refused = site
        .ops
        .purge_cache("s", PurgeRequest::Paths(vec!["no-slash".into()]))
        .await;
    assert!(
        matches!(&refused, Err(WebError::Invalid(error)) if error.has("paths[0]")),
        "{refused:?}"
    );
    assert!(matches!(
        site.ops.cache_status("missing"),
        Err(WebError::NotFound(_))
    ));
}

#[tokio::test]
async fn fastcgi_cache_configuration_passes_the_configuration_test() {
    use agent::vhosts::server::WebServer;
    use agent::vhosts::state::{SiteState, VhostRecord};
    let Some(site) = Site::start().await else {
        return;
    };
    // No PHP-FPM runs here, so a PHP vhost cannot pass the check request; render a PHP vhost with a
    // cache and bypass rules and have the real nginx test the whole configuration instead.
    let mut spec = static_spec(&["p.example"], "p");
    spec.php = Some(agent::vhosts::spec::PhpSpec {
        socket: "/run/php/php-fpm.sock".into(),
    });
    let bypass = Bypass {
        cookies: vec!["wordpress_logged_in".into()],
        paths: vec!["/wp-admin/".into(), "/cart.php".into()],
    };
    let record = VhostRecord {
        spec,
        extra: None,
        tls: None,
        cache: Some(settings(bypass)),
        version: 0,
        hash: String::new(),
        applied_at: time::OffsetDateTime::UNIX_EPOCH,
        history: Vec::new(),
    };
    let mut state = SiteState::default();
    state
        .vhosts
        .insert(agent::vhosts::vhost_id("p").unwrap(), record);
    let rendered = agent::vhosts::plan::render_site(&state, site.layout()).unwrap();
    let dir = site.dir.path().join("fastcgi-check");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in &rendered.files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let main = dir.join("main.nginx");
    std::fs::write(
        &main,
        agent::vhosts::render::render_main_config(site.layout(), &dir),
    )
    .unwrap();
    site.ops.server().test(&main).await.unwrap();
    let text = std::fs::read_to_string(dir.join("p.conf")).unwrap();
    assert!(text.contains("fastcgi_cache hp_p;"), "{text}");

    // The same file with a broken directive is refused, so the test above can fail.
    std::fs::write(
        dir.join("p.conf"),
        text.replace("fastcgi_cache hp_p;", "fastcgi_cache hp_missing;"),
    )
    .unwrap();
    let refused = site.ops.server().test(&main).await.unwrap_err();
    assert!(refused.output.contains("hp_missing"), "{refused:?}");
}
