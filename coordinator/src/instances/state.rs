//! The coordinator's view of an instance record: its lifecycle state.

use serde::{Deserialize, Serialize};

use crate::store::records::InstanceRecord;

/// Where an instance record stands. Stored and answered as the lower-case name
/// (`creating`, `ready`, `destroying`, `failed`), exactly the strings records hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// The VMID is reserved and the create task has not finished.
    Creating,
    /// The container exists and matches the record.
    Ready,
    /// A destroy task owns the instance.
    Destroying,
    /// A create whose outcome could not be told; only a destroy settles it.
    Failed,
}

impl InstanceState {
    /// Every state, in the order they are listed above.
    pub const ALL: [InstanceState; 4] = [
        InstanceState::Creating,
        InstanceState::Ready,
        InstanceState::Destroying,
        InstanceState::Failed,
    ];

    /// The stored and answered name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Creating => "creating",
            InstanceState::Ready => "ready",
            InstanceState::Destroying => "destroying",
            InstanceState::Failed => "failed",
        }
    }

    /// The state a stored name stands for; `None` for a name no state has.
    pub fn parse(name: &str) -> Option<InstanceState> {
        InstanceState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// The state of a record; `None` when the record holds a name no state has.
    pub fn of(record: &InstanceRecord) -> Option<InstanceState> {
        InstanceState::parse(&record.state)
    }

    /// True when `record` is in this state.
    pub fn is_of(self, record: &InstanceRecord) -> bool {
        record.state == self.as_str()
    }

    /// Puts `record` in this state.
    pub fn set(self, record: &mut InstanceRecord) {
        record.state = self.as_str().to_string();
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_stored_strings() {
        let cases = [
            (InstanceState::Creating, "creating"),
            (InstanceState::Ready, "ready"),
            (InstanceState::Destroying, "destroying"),
            (InstanceState::Failed, "failed"),
        ];
        for (state, name) in cases {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(InstanceState::parse(name), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<InstanceState>(name.into()).unwrap(),
                state
            );
        }
        assert_eq!(InstanceState::parse("running"), None);
    }
}
