//! Fills a coordinator's store with finished tasks for the API benchmark
//! (`scripts/bench/api.sh`): `seed_tasks DATA_DIR OWNER_USER_ID COUNT`. Run it while the
//! coordinator is stopped; the store refuses a second opener.

use coordinator::store::{Store, StoreError};
use coordinator::tasks::machine::{Change, Creation, Task, apply};
use coordinator::tasks::persist;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().collect();
    let [_, data_dir, owner, count] = arguments.as_slice() else {
        anyhow::bail!("usage: seed_tasks DATA_DIR OWNER_USER_ID COUNT");
    };
    let count: u64 = count.parse()?;
    let store = Store::open(std::path::Path::new(data_dir))?;
    let first = persist::last_sequence(&store)? + 1;
    let now = time::OffsetDateTime::now_utc();
    for chunk_start in (0..count).step_by(1000) {
        let chunk_end = (chunk_start + 1000).min(count);
        store.write(|write| {
            for index in chunk_start..chunk_end {
                let task = Task::new(
                    Creation {
                        id: uuid::Uuid::new_v4().to_string(),
                        kind: "instance.start".into(),
                        instance: Some(100 + (index % 500) as u32),
                        owner: owner.clone(),
                        input: json!({}),
                        deadline: None,
                        idempotency_key: None,
                        sequence: first + index,
                    },
                    now,
                );
                let task = apply(&task, Change::Start, now).expect("queued tasks start");
                let task = apply(&task, Change::Succeed(json!({"seeded": true})), now)
                    .expect("running tasks succeed");
                persist::insert(write, &task)
                    .map_err(|error| StoreError::Database(error.to_string()))?;
            }
            Ok::<_, StoreError>(())
        })?;
    }
    println!("seeded {count} tasks for {owner}");
    Ok(())
}
