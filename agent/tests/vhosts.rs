//! Vhosts on a real, private nginx: served by Host header, hostile input refused, failed changes
//! rolled back with every other vhost still answering, versions remembered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use agent::vhosts::probe::http_get_from;
use agent::vhosts::render::vhost_probe_path;
use agent::vhosts::spec::PhpSpec;
use agent::vhosts::{ApplyStage, WebError};
use sha2::{Digest, Sha256};
use testkit::net::free_port;
use testkit::vhosts::{Site, proxy_spec, static_spec, upstream};

#[tokio::test]
async fn vhosts_are_served_by_host_and_versioned() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");
    let first = site
        .ops
        .put_vhost("a", static_spec(&["a.example"], "a"))
        .await
        .unwrap();
    site.ops
        .put_vhost("b", static_spec(&["b.example", "www.b.example"], "b"))
        .await
        .unwrap();

    assert_eq!(site.body("a.example").await, "site a\n");
    assert_eq!(site.body("b.example").await, "site b\n");
    assert_eq!(site.body("www.b.example").await, "site b\n");
    // An unknown host reaches the default server, which closes the connection without an answer.
    assert!(site.get("c.example", "/").await.is_err());

    assert_eq!(first.version, 1);
    let live = std::fs::read(site.layout().live_link().join("a.conf")).unwrap();
    assert_eq!(first.hash, hex::encode(Sha256::digest(&live)));

    let mut changed = static_spec(&["a.example"], "a");
    changed.limits.max_body_bytes = Some(4096);
    let second = site.ops.put_vhost("a", changed).await.unwrap();
    assert_eq!(second.version, 2);
    assert_ne!(second.hash, first.hash);
    assert_eq!(
        second
            .history
            .iter()
            .map(|entry| entry.version)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(site.ops.get_vhost("a").unwrap(), second);
    assert_eq!(
        site.ops.get_vhost("b").unwrap().version,
        1,
        "another vhost's version is untouched"
    );
    assert_eq!(site.ops.list_vhosts().unwrap().len(), 2);

    let restored = site.ops.restore_version("a", 1).await.unwrap();
    assert_eq!(
        (restored.version, restored.hash.as_str()),
        (3, first.hash.as_str())
    );
    assert!(matches!(
        site.ops.get_vhost("nope"),
        Err(WebError::NotFound(_))
    ));
}

#[tokio::test]
async fn hostile_input_is_refused_per_field_and_changes_nothing() {
    let Some(site) = Site::start().await else {
        return;
    };
    let before = site.ops.live_state().unwrap();
    let cases: Vec<(&str, agent::vhosts::spec::VhostSpec, &str)> = vec![
        ("a", static_spec(&["a.example;"], "a"), "server_names[0]"),
        ("a", static_spec(&["a.example\n}"], "a"), "server_names[0]"),
        ("a", static_spec(&["{a.example"], "a"), "server_names[0]"),
        ("a", static_spec(&[".."], "a"), "server_names[0]"),
        ("a", static_spec(&["a.example"], "../../etc"), "root"),
        (
            "a",
            proxy_spec(&["a.example"], "http://x;return 200 owned"),
            "proxy_pass",
        ),
        ("../a", static_spec(&["a.example"], "a"), "vhost"),
        ("A;", static_spec(&["a.example"], "a"), "vhost"),
    ];
    for (id, spec, field) in cases {
        match site.ops.put_vhost(id, spec.clone()).await {
            Err(WebError::Invalid(error)) => assert!(error.has(field), "{spec:?}: {error}"),
            other => panic!("{spec:?} was not refused: {other:?}"),
        }
    }
    assert_eq!(
        site.ops.live_state().unwrap(),
        before,
        "refused input changes nothing"
    );
}

#[tokio::test]
async fn failed_changes_are_rolled_back_and_other_vhosts_keep_answering() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");
    site.ops
        .put_vhost("a", static_spec(&["a.example"], "a"))
        .await
        .unwrap();
    site.ops
        .put_vhost("b", static_spec(&["b.example"], "b"))
        .await
        .unwrap();

    // A configuration nginx refuses is never loaded, whatever the application would answer.
    let cases = vec![
        (
            "extra block nginx refuses",
            "no_such_directive on;",
            ApplyStage::ConfigTest,
            "no_such_directive",
        ),
        (
            "extra block that repeats a location",
            "location / { return 200 'shadowed'; }",
            ApplyStage::ConfigTest,
            "duplicate location",
        ),
    ];
    for (name, extra, stage, output) in cases {
        let before = site.ops.get_vhost("a").unwrap();
        let result = site.ops.set_extra("a", Some(extra.to_string())).await;
        let failure = match result {
            Err(WebError::Apply(failure)) => failure,
            other => panic!("{name}: expected a failed change, got {other:?}"),
        };
        assert_eq!(failure.stage, stage, "{name}: {failure:?}");
        assert!(failure.restored, "{name}: {failure:?}");
        assert!(
            failure.output.contains(output),
            "{name}: output lacks {output:?}: {failure:?}"
        );
        assert_eq!(
            site.ops.get_vhost("a").unwrap(),
            before,
            "{name}: state restored"
        );
        assert_eq!(
            site.body("a.example").await,
            "site a\n",
            "{name}: the vhost serves its previous version"
        );
        assert_eq!(
            site.body("b.example").await,
            "site b\n",
            "{name}: another vhost still answers"
        );
    }
}

#[tokio::test]
async fn administrators_block_survives_customer_changes() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("a", "site a\n");
    site.ops
        .put_vhost("a", static_spec(&["a.example"], "a"))
        .await
        .unwrap();
    let view = site
        .ops
        .set_extra("a", Some("add_header X-Admin kept always;".into()))
        .await
        .unwrap();
    assert!(view.has_extra);
    let answer = site.get("a.example", "/").await.unwrap();
    assert_eq!(answer.header("x-admin"), Some("kept"));

    let mut changed = static_spec(&["a.example", "a2.example"], "a");
    changed.logs.access = false;
    site.ops.put_vhost("a", changed).await.unwrap();
    let answer = site.get("a2.example", "/").await.unwrap();
    assert_eq!(
        (answer.status, answer.header("x-admin")),
        (200, Some("kept"))
    );
    assert_eq!(
        site.ops.get_extra("a").unwrap().as_deref(),
        Some("add_header X-Admin kept always;")
    );
}

#[tokio::test]
async fn deleting_a_vhost_leaves_the_others() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");
    site.ops
        .put_vhost("a", static_spec(&["a.example"], "a"))
        .await
        .unwrap();
    site.ops
        .put_vhost("b", static_spec(&["b.example"], "b"))
        .await
        .unwrap();
    site.ops.delete_vhost("a").await.unwrap();
    assert!(
        site.get("a.example", "/").await.is_err(),
        "a deleted vhost no longer answers"
    );
    assert_eq!(site.body("b.example").await, "site b\n");
    assert!(matches!(
        site.ops.delete_vhost("a").await,
        Err(WebError::NotFound(_))
    ));
    assert!(!site.layout().live_link().join("a.conf").exists());
}

#[tokio::test]
async fn redirects_follow_the_spec() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("a", "site a\n");
    let mut spec = static_spec(&["a.example", "www.a.example"], "a");
    spec.redirects.www = agent::vhosts::spec::WwwRedirect::ToWww;
    site.ops.put_vhost("a", spec).await.unwrap();
    let answer = site.get("a.example", "/x?y=1").await.unwrap();
    assert_eq!(answer.status, 301);
    let expected = format!("http://www.a.example:{}/x?y=1", site.http_address().port());
    assert_eq!(answer.header("location"), Some(expected.as_str()));
    assert_eq!(site.body("www.a.example").await, "site a\n");
}

#[tokio::test]
async fn changes_are_serialized() {
    let Some(site) = Site::start().await else {
        return;
    };
    for name in ["a", "b", "c", "d"] {
        site.document_root(name, &format!("site {name}\n"));
    }
    let specs: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| {
            (
                name.to_string(),
                static_spec(&[&format!("{name}.example")], name),
            )
        })
        .collect();
    let ops = &site.ops;
    let results = futures_util::future::join_all(
        specs
            .into_iter()
            .map(|(id, spec)| async move { ops.put_vhost(&id, spec).await }),
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for name in ["a", "b", "c", "d"] {
        assert_eq!(
            site.body(&format!("{name}.example")).await,
            format!("site {name}\n")
        );
    }
    assert_eq!(site.ops.live_state().unwrap().vhosts.len(), 4);
}

#[tokio::test]
async fn several_vhosts_apply_in_one_change_or_not_at_all() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("s", "shared\n");
    let generation = site.ops.live_state().unwrap().generation;
    let batch: Vec<_> = (0..20)
        .map(|index| {
            (
                format!("v{index}"),
                static_spec(&[&format!("v{index}.example")], "s"),
            )
        })
        .collect();
    site.ops.put_vhosts(batch).await.unwrap();
    let state = site.ops.live_state().unwrap();
    assert_eq!(state.generation, generation + 1, "one generation for all");
    assert_eq!(state.vhosts.len(), 20);
    assert_eq!(site.body("v0.example").await, "shared\n");
    assert_eq!(site.body("v19.example").await, "shared\n");

    // One name served twice refuses the whole batch.
    let clash = vec![
        ("w1".to_string(), static_spec(&["w1.example"], "s")),
        ("w2".to_string(), static_spec(&["v3.example"], "s")),
    ];
    assert!(matches!(
        site.ops.put_vhosts(clash).await,
        Err(WebError::Invalid(error)) if error.has("server_names")
    ));
    assert_eq!(site.ops.live_state().unwrap(), state);
}

#[tokio::test]
async fn vhosts_whose_application_is_down_are_created_and_changed() {
    let Some(site) = Site::start().await else {
        return;
    };
    let closed = free_port();
    let upstream_url = format!("http://127.0.0.1:{closed}");
    let created = site
        .ops
        .put_vhost("app", proxy_spec(&["app.example"], &upstream_url))
        .await
        .expect("a proxy vhost is created before its application runs");
    assert_eq!(created.version, 1);
    assert_eq!(site.body("app.example").await, "status 502");
    let report = site.ops.site_answer("app").await.unwrap();
    assert!(
        report.contains("status 502") && report.contains("Connection refused"),
        "the application's answer is reported: {report}"
    );

    // A PHP site whose FastCGI socket is missing is changed too; nginx answers 502 for it.
    let php_root = site.layout().web_root.join("php");
    std::fs::create_dir_all(&php_root).unwrap();
    std::fs::write(php_root.join("index.php"), "<?php echo 'never run';").unwrap();
    let php = agent::vhosts::spec::VhostSpec {
        php: Some(PhpSpec {
            socket: "/nonexistent/php-fpm.sock".into(),
        }),
        ..static_spec(&["php.example"], "php")
    };
    site.ops.put_vhost("php", php).await.unwrap();
    assert_eq!(site.body("php.example").await, "status 502");

    // While the application is down its vhost can still be changed.
    let mut changed = proxy_spec(&["app.example"], &upstream_url);
    changed.limits.max_body_bytes = Some(1000);
    assert_eq!(site.ops.put_vhost("app", changed).await.unwrap().version, 2);

    // Pointed at a running application, the same vhost serves it.
    let (address, _) = upstream().await;
    site.ops
        .put_vhost(
            "app",
            proxy_spec(&["app.example"], &format!("http://{address}")),
        )
        .await
        .unwrap();
    assert_eq!(site.body("app.example").await, "/ #1");
    let report = site.ops.site_answer("app").await.unwrap();
    assert!(report.contains("status 200"), "{report}");
}

#[tokio::test]
async fn a_change_that_another_vhost_answers_for_is_rolled_back() {
    let Some(site) = Site::start().await else {
        return;
    };
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");
    site.ops
        .put_vhost("a", static_spec(&["a.example"], "a"))
        .await
        .unwrap();
    site.ops
        .put_vhost("b", static_spec(&["b.example"], "b"))
        .await
        .unwrap();
    // The administrator's block gives vhost a the name of vhost b as well; nginx accepts it
    // (with a warning) and serves b.example from a, whose file comes first.
    site.ops
        .set_extra("a", Some("server_name b.example;".into()))
        .await
        .unwrap();
    assert_eq!(site.body("b.example").await, "site a\n");
    let before = site.ops.get_vhost("b").unwrap();
    let mut changed = static_spec(&["b.example"], "b");
    changed.limits.max_body_bytes = Some(1000);
    let failure = match site.ops.put_vhost("b", changed).await {
        Err(WebError::Apply(failure)) => failure,
        other => panic!("a change that nginx does not serve must fail: {other:?}"),
    };
    assert_eq!(failure.stage, ApplyStage::Check, "{failure:?}");
    assert!(failure.restored, "{failure:?}");
    assert!(failure.message.contains("vhost=a"), "{failure:?}");
    assert_eq!(site.ops.get_vhost("b").unwrap(), before);
}

#[tokio::test]
async fn the_probe_is_answered_to_the_agent_alone_and_by_its_own_vhost() {
    let agent_address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let Some(site) = Site::start_with(|layout| {
        layout.http_listen = SocketAddr::new(agent_address, layout.http_listen.port());
    })
    .await
    else {
        return;
    };
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");
    site.ops
        .put_vhost("a", static_spec(&["a.example"], "a"))
        .await
        .unwrap();
    site.ops
        .put_vhost("b", static_spec(&["b.example"], "b"))
        .await
        .unwrap();
    let generation = site.ops.live_state().unwrap().generation;
    let probe = vhost_probe_path(generation);
    let get_from = |source: IpAddr, host: &'static str, path: String| {
        let address = site.http_address();
        async move {
            http_get_from(Some(source), address, host, &path, Duration::from_secs(5))
                .await
                .map(|answer| (answer.status, answer.body.trim().to_string()))
        }
    };
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let cases = [
        (
            "the agent's address, this generation",
            get_from(agent_address, "a.example", probe.clone()).await,
            Some((
                200,
                format!("hostplane-probe generation={generation} vhost=a"),
            )),
        ),
        (
            "the agent's address, another vhost",
            get_from(agent_address, "b.example", probe.clone()).await,
            Some((
                200,
                format!("hostplane-probe generation={generation} vhost=b"),
            )),
        ),
        (
            "another address",
            get_from(loopback, "a.example", probe.clone()).await,
            Some((403, String::new())),
        ),
        (
            "an earlier generation",
            get_from(agent_address, "a.example", vhost_probe_path(generation - 1)).await,
            Some((403, String::new())),
        ),
        (
            "a host no vhost serves",
            get_from(agent_address, "c.example", probe.clone()).await,
            None,
        ),
    ];
    for (name, answer, expected) in cases {
        match expected {
            Some((status, body)) => {
                let (got_status, got_body) =
                    answer.unwrap_or_else(|error| panic!("{name}: {error}"));
                assert_eq!(got_status, status, "{name}: {got_body}");
                if status == 200 {
                    assert_eq!(got_body, body, "{name}");
                } else {
                    assert!(!got_body.contains("hostplane-probe"), "{name}: {got_body}");
                }
            }
            None => assert!(answer.is_err(), "{name}: {answer:?}"),
        }
    }
    // The site itself is served to every address.
    assert_eq!(site.body("a.example").await, "site a\n");
}
