//! Login tickets with their two indexes (by user, by expiry), kept together in one transaction.

use super::records::TicketRecord;
use super::{StoreError, Table, Write};

fn by_user(user: &str, hash: &str) -> String {
    format!("{user}/{hash}")
}

fn by_expiry(expires_at: i64, hash: &str) -> String {
    format!("{:020}/{hash}", expires_at.max(0))
}

/// Stores a ticket under its hash and indexes it.
pub fn insert(write: &mut Write<'_>, hash: &str, ticket: &TicketRecord) -> Result<(), StoreError> {
    write.put(Table::Tickets, hash, ticket)?;
    write.put(
        Table::TicketsByUser,
        &by_user(&ticket.user, hash),
        &ticket.expires_at,
    )?;
    write.put(
        Table::TicketsByExpiry,
        &by_expiry(ticket.expires_at, hash),
        &ticket.user,
    )
}

/// Removes a ticket and its index entries; false when there was none.
pub fn remove(write: &mut Write<'_>, hash: &str) -> Result<bool, StoreError> {
    let Some(ticket) = write.get::<TicketRecord>(Table::Tickets, hash)? else {
        return Ok(false);
    };
    write.delete(Table::Tickets, hash)?;
    write.delete(Table::TicketsByUser, &by_user(&ticket.user, hash))?;
    write.delete(Table::TicketsByExpiry, &by_expiry(ticket.expires_at, hash))?;
    Ok(true)
}

/// Removes every ticket of a user, found through the user index.
pub fn remove_of_user(write: &mut Write<'_>, user: &str) -> Result<usize, StoreError> {
    let prefix = format!("{user}/");
    let entries: Vec<(String, i64)> = write.range(Table::TicketsByUser, &prefix, None)?;
    for (key, expires_at) in &entries {
        let hash = &key[prefix.len()..];
        write.delete(Table::Tickets, hash)?;
        write.delete(Table::TicketsByUser, key)?;
        write.delete(Table::TicketsByExpiry, &by_expiry(*expires_at, hash))?;
    }
    Ok(entries.len())
}

/// Removes up to `limit` tickets that expired at or before `now` (Unix seconds); returns how
/// many went.
pub fn sweep_expired(write: &mut Write<'_>, now: i64, limit: usize) -> Result<usize, StoreError> {
    let entries: Vec<(String, String)> = write.range(Table::TicketsByExpiry, "", Some(limit))?;
    let mut removed = 0;
    for (key, user) in entries {
        let Some((expiry, hash)) = key.split_once('/') else {
            continue;
        };
        if expiry.parse::<i64>().map_or(true, |expiry| expiry > now) {
            break;
        }
        write.delete(Table::Tickets, hash)?;
        write.delete(Table::TicketsByUser, &by_user(&user, hash))?;
        write.delete(Table::TicketsByExpiry, &key)?;
        removed += 1;
    }
    Ok(removed)
}

/// Indexes the tickets of a store written before the indexes existed: the migration from
/// schema version 1.
pub fn index_existing(write: &mut Write<'_>) -> Result<(), StoreError> {
    let tickets: Vec<(String, TicketRecord)> = write.list(Table::Tickets)?;
    for (hash, ticket) in &tickets {
        insert(write, hash, ticket)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn ticket(user: &str, expires_at: i64) -> TicketRecord {
        TicketRecord {
            id: format!("{user}-{expires_at}"),
            user: user.to_string(),
            created_at: "2025-01-01T00:00:00Z".into(),
            expires_at,
        }
    }

    #[test]
    fn tickets_are_removed_by_user_and_by_expiry_with_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|write| {
                insert(write, "a1", &ticket("alice", 100))?;
                insert(write, "a2", &ticket("alice", 300))?;
                insert(write, "b1", &ticket("bob", 200))?;
                insert(write, "b2", &ticket("bob", 400))
            })
            .unwrap();
        let swept = store.write(|write| sweep_expired(write, 250, 100)).unwrap();
        assert_eq!(swept, 2);
        let removed = store.write(|write| remove_of_user(write, "alice")).unwrap();
        assert_eq!(removed, 1);
        let left: Vec<String> = store
            .list::<TicketRecord>(Table::Tickets)
            .unwrap()
            .into_iter()
            .map(|(hash, _)| hash)
            .collect();
        assert_eq!(left, vec!["b2"]);
        assert_eq!(store.list::<i64>(Table::TicketsByUser).unwrap().len(), 1);
        assert_eq!(
            store.list::<String>(Table::TicketsByExpiry).unwrap().len(),
            1
        );
        assert!(store.write(|write| remove(write, "b2")).unwrap());
        assert!(!store.write(|write| remove(write, "b2")).unwrap());
        assert!(store.list::<i64>(Table::TicketsByUser).unwrap().is_empty());
    }

    #[test]
    fn tickets_from_before_the_indexes_are_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .write(|write| write.put(Table::Tickets, "old", &ticket("carol", 50)))
                .unwrap();
            // A store from before the indexes is at schema version 1.
            store
                .put(Table::Meta, crate::store::SCHEMA_VERSION_KEY, &1u32)
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.write(|write| sweep_expired(write, 60, 10)).unwrap(),
            1
        );
        assert!(
            store
                .list::<TicketRecord>(Table::Tickets)
                .unwrap()
                .is_empty()
        );
    }
}
