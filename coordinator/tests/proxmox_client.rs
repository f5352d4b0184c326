//! The Proxmox client against the simulator on loopback: TLS pinning, the container lifecycle,
//! and every injected fault giving a clear outcome (retried and succeeded, or failed with the
//! reason).

use std::time::{Duration, Instant};

use coordinator::proxmox::{
    Client, ClientSettings, CreateContainer, Endpoint, ErrorClass, PowerAction, PowerOutcome,
    ProxmoxError, RetryPolicy, Trust, tls,
};
use pvesim::{FailureRule, SimConfig, Simulator, TaskEffect, TaskFault};

const TOKEN_ID: &str = "hostplane@pve!coordinator";
const TOKEN_SECRET: &str = "5f0c7d3e-2b7a-4c1e-9a57-0d6f1c2b3a4e";
const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

async fn simulator(tls: bool) -> Simulator {
    coordinator::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        nodes: 2,
        tokens: vec![format!("{TOKEN_ID}={TOKEN_SECRET}")],
        tls,
        auth_failure_delay: Duration::from_millis(10),
        task_duration: Duration::from_millis(30),
        lock_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    };
    Simulator::start(config, listener).await.unwrap()
}

fn settings() -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        },
        poll_first: Duration::from_millis(10),
        poll_max: Duration::from_millis(100),
    }
}

fn client_for(sim: &Simulator) -> Client {
    let trust = match sim.fingerprint() {
        Some(fingerprint) => Trust::Fingerprint(tls::parse_fingerprint(&fingerprint).unwrap()),
        None => Trust::Insecure,
    };
    Client::new(&Endpoint {
        base_url: sim.base_url(),
        token_id: TOKEN_ID.into(),
        token_secret: TOKEN_SECRET.into(),
        trust,
        settings: settings(),
    })
    .unwrap()
}

fn spec(vmid: u32) -> CreateContainer {
    CreateContainer {
        vmid,
        ostemplate: TEMPLATE.into(),
        hostname: format!("ct{vmid}"),
        storage: "local-lvm".into(),
        disk_gib: 4,
        memory: 512,
        swap: 256,
        cores: 1,
        net0: Some("name=eth0,bridge=vmbr0,ip=dhcp".into()),
        unprivileged: true,
        ..CreateContainer::default()
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn create(client: &Client, node: &str, vmid: u32) {
    let upid = client.create_container(node, &spec(vmid)).await.unwrap();
    assert_eq!(upid.kind, "vzcreate");
    assert_eq!(upid.vmid(), Some(vmid));
    client.wait_task(&upid, WAIT).await.unwrap();
}

#[tokio::test]
async fn pinned_tls_accepts_only_the_pinned_certificate() {
    let sim = simulator(true).await;
    let client = client_for(&sim);
    let version = client.version().await.unwrap();
    assert!(!version.version.is_empty());
    let nodes = client.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);

    let mut wrong = tls::parse_fingerprint(&sim.fingerprint().unwrap()).unwrap();
    wrong[0] ^= 0xff;
    let impostor = Client::new(&Endpoint {
        base_url: sim.base_url(),
        token_id: TOKEN_ID.into(),
        token_secret: TOKEN_SECRET.into(),
        trust: Trust::Fingerprint(wrong),
        settings: settings(),
    })
    .unwrap();
    let error = impostor.version().await.unwrap_err();
    assert!(
        matches!(error, ProxmoxError::Config { .. }) && error.to_string().contains("TLS"),
        "{error:?}"
    );

    let bad_token = Client::new(&Endpoint {
        base_url: sim.base_url(),
        token_id: TOKEN_ID.into(),
        token_secret: "wrong-secret".into(),
        trust: Trust::Fingerprint(tls::parse_fingerprint(&sim.fingerprint().unwrap()).unwrap()),
        settings: settings(),
    })
    .unwrap();
    let error = bad_token.nodes().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unauthorized, "{error:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn container_lifecycle_through_tasks() {
    let sim = simulator(true).await;
    let client = client_for(&sim);
    let vmid = client.next_id(None).await.unwrap();
    assert!(vmid >= 100);
    create(&client, "pve1", vmid).await;
    assert!(client.container_exists("pve1", vmid).await.unwrap());
    let config = client.container_config("pve1", vmid).await.unwrap();
    assert_eq!(config["hostname"], format!("ct{vmid}"));
    assert_eq!(
        coordinator::proxmox::property::rootfs_size_gib(config["rootfs"].as_str().unwrap()),
        Some(4)
    );

    // The id is taken now: Proxmox refuses at once, and nextid moves on.
    let error = client
        .create_container("pve1", &spec(vmid))
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::AlreadyExists, "{error:?}");
    assert_ne!(client.next_id(None).await.unwrap(), vmid);
    let error = client.next_id(Some(vmid)).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::AlreadyExists, "{error:?}");

    for action in [PowerAction::Start, PowerAction::Reboot, PowerAction::Stop] {
        match client.power("pve1", vmid, action).await.unwrap() {
            PowerOutcome::Task(upid) => {
                assert_eq!(upid.kind, action.task_type());
                client.wait_task(&upid, WAIT).await.unwrap();
            }
            PowerOutcome::AlreadyDone => panic!("{action:?} had nothing to do"),
        }
    }
    // Stopping a stopped container is already done, not an error.
    assert_eq!(
        client.power("pve1", vmid, PowerAction::Stop).await.unwrap(),
        PowerOutcome::AlreadyDone
    );

    client
        .update_config("pve1", vmid, &[("memory", "1024".into())], &[])
        .await
        .unwrap();
    if let Some(upid) = client.resize_disk("pve1", vmid, "rootfs", 6).await.unwrap() {
        client.wait_task(&upid, WAIT).await.unwrap();
    }
    let config = client.container_config("pve1", vmid).await.unwrap();
    assert_eq!(config["memory"].to_string().trim_matches('"'), "1024");
    assert_eq!(
        coordinator::proxmox::property::rootfs_size_gib(config["rootfs"].as_str().unwrap()),
        Some(6)
    );

    let rrd = client.rrd_data("pve1", vmid, "hour").await.unwrap();
    assert!(!rrd.is_empty());
    let storages = client.storages("pve1", Some("vztmpl")).await.unwrap();
    assert!(storages.iter().any(|storage| storage.storage == "local"));
    let templates = client
        .storage_content("pve1", "local", Some("vztmpl"))
        .await
        .unwrap();
    assert!(templates.iter().any(|volume| volume.volid == TEMPLATE));

    let upid = client
        .destroy_container("pve1", vmid)
        .await
        .unwrap()
        .unwrap();
    client.wait_task(&upid, WAIT).await.unwrap();
    assert!(!client.container_exists("pve1", vmid).await.unwrap());
    // Destroying what is gone is done.
    assert_eq!(client.destroy_container("pve1", vmid).await.unwrap(), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lock_is_waited_out_and_the_call_succeeds() {
    let sim = simulator(false).await;
    let client = client_for(&sim);
    create(&client, "pve1", 200).await;
    assert!(
        sim.faults()
            .lock_guest(200, "backup", Duration::from_millis(250))
    );
    let started = Instant::now();
    let outcome = client.power("pve1", 200, PowerAction::Start).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    let PowerOutcome::Task(upid) = outcome else {
        panic!("start did nothing")
    };
    client.wait_task(&upid, WAIT).await.unwrap();
    assert!(sim.state().guest(200).unwrap().running);

    // A lock held longer than every retry: the call fails with Proxmox's reason.
    assert!(
        sim.faults()
            .lock_guest(200, "backup", Duration::from_secs(30))
    );
    let error = client
        .power("pve1", 200, PowerAction::Stop)
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Locked);
    assert!(
        error.proxmox_message().contains("CT is locked (backup)"),
        "{error}"
    );
    assert!(sim.state().guest(200).unwrap().running);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_offline_node_is_retried_until_it_returns_or_reported() {
    let sim = simulator(false).await;
    let client = client_for(&sim);
    create(&client, "pve2", 300).await;

    sim.faults().set_node_offline("pve2", Some(595));
    let faults = sim.faults();
    let revive = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        faults.set_node_offline("pve2", None);
    });
    let outcome = client.power("pve2", 300, PowerAction::Start).await.unwrap();
    revive.await.unwrap();
    let PowerOutcome::Task(upid) = outcome else {
        panic!("start did nothing")
    };
    client.wait_task(&upid, WAIT).await.unwrap();

    sim.faults().set_node_offline("pve2", Some(595));
    let error = client.containers("pve2").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unreachable, "{error:?}");
    assert!(
        error.proxmox_message().contains("No route to host"),
        "{error}"
    );
    // Other nodes still answer.
    client.containers("pve1").await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn an_uncertain_create_is_checked_before_it_is_repeated() {
    let sim = simulator(false).await;
    let client = client_for(&sim);
    // 596 on the create: the outcome is unknown, the client looks for its task and the
    // container, finds neither, and repeats once the fault is gone.
    sim.faults()
        .add_rule(FailureRule {
            method: Some("POST".into()),
            path: "^/nodes/pve1/lxc$".into(),
            rate: 1.0,
            status: 596,
            message: None,
        })
        .unwrap();
    let faults = sim.faults();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(120)).await;
        faults.clear();
    });
    let upid = client.create_container("pve1", &spec(400)).await.unwrap();
    heal.await.unwrap();
    client.wait_task(&upid, WAIT).await.unwrap();
    let creates = sim
        .state()
        .snapshot()
        .tasks
        .iter()
        .filter(|task| task.kind == "vzcreate" && task.id == "400")
        .count();
    assert_eq!(creates, 1, "exactly one create reached Proxmox");

    // A create whose task exists is found again instead of being repeated.
    let found = client
        .find_own_task("pve1", 400, "vzcreate", coordinator::clock::unix_now())
        .await
        .unwrap();
    assert_eq!(
        found.as_ref().map(|upid| upid.as_str()),
        Some(upid.as_str())
    );

    // A fault that never heals: the error says what happened, nothing was created.
    sim.faults()
        .add_rule(FailureRule {
            method: Some("POST".into()),
            path: "^/nodes/pve1/lxc$".into(),
            rate: 1.0,
            status: 596,
            message: None,
        })
        .unwrap();
    let error = client
        .create_container("pve1", &spec(401))
        .await
        .unwrap_err();
    assert!(error.outcome_unknown(), "{error:?}");
    assert!(error.is_timeout(), "{error:?}");
    assert!(sim.state().guest(401).is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_and_failed_tasks_carry_proxmox_reasons() {
    let sim = simulator(false).await;
    let client = client_for(&sim);
    sim.faults()
        .add_rule(FailureRule {
            method: Some("GET".into()),
            path: "^/nodes$".into(),
            rate: 1.0,
            status: 500,
            message: Some("cluster not ready - no quorum?".into()),
        })
        .unwrap();
    let error = client.nodes().await.unwrap_err();
    assert_eq!(error.proxmox_message(), "cluster not ready - no quorum?");
    assert_eq!(error.class(), ErrorClass::Other);
    sim.faults().clear();

    sim.faults().add_task_fault(TaskFault {
        task_type: Some("vzcreate".into()),
        vmid: Some(500),
        effect: TaskEffect::Fail("no space left on device".into()),
        count: Some(1),
    });
    let upid = client.create_container("pve1", &spec(500)).await.unwrap();
    let error = client.wait_task(&upid, WAIT).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::TaskFailed);
    assert!(
        error.proxmox_message().contains("no space left on device"),
        "{error}"
    );
    // A failed create leaves no container behind.
    assert!(!client.container_exists("pve1", 500).await.unwrap());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_hanging_task_hits_its_deadline_and_can_be_stopped() {
    let sim = simulator(false).await;
    let client = client_for(&sim);
    create(&client, "pve1", 600).await;
    sim.faults().add_task_fault(TaskFault {
        task_type: Some("vzstart".into()),
        vmid: Some(600),
        effect: TaskEffect::Hang,
        count: Some(1),
    });
    let PowerOutcome::Task(upid) = client.power("pve1", 600, PowerAction::Start).await.unwrap()
    else {
        panic!("start did nothing")
    };
    let started = Instant::now();
    let error = client
        .wait_task(&upid, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(error.class(), ErrorClass::TaskDeadline, "{error:?}");
    assert!(error.is_timeout());
    client.stop_task(&upid).await.unwrap();
    let error = client.wait_task(&upid, WAIT).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::TaskFailed, "{error:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_beyond_the_request_timeout_is_a_timeout() {
    let sim = simulator(false).await;
    let client = Client::new(&Endpoint {
        base_url: sim.base_url(),
        token_id: TOKEN_ID.into(),
        token_secret: TOKEN_SECRET.into(),
        trust: Trust::Insecure,
        settings: ClientSettings {
            request_timeout: Duration::from_millis(100),
            retry: RetryPolicy {
                attempts: 2,
                first_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
            },
            ..settings()
        },
    })
    .unwrap();
    sim.faults().set_latency(Duration::from_millis(50));
    client.nodes().await.unwrap();
    sim.faults().set_latency(Duration::from_millis(400));
    let error = client.nodes().await.unwrap_err();
    assert!(matches!(error, ProxmoxError::Timeout { .. }), "{error:?}");
    let api: coordinator::api::ApiError = error.into();
    assert_eq!(api.status.as_u16(), 504);
    sim.shutdown().await;
}
