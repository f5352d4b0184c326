//! Every table of the store, with what its keys and values are. Names carry a layout version.

/// A table of the store. Keys are strings; values are JSON documents of the named record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Store-wide facts: `schema_version`, first-start markers. Values vary per key.
    Meta,
}

impl Table {
    /// Every table, created when the store opens.
    pub const ALL: &'static [Table] = &[Table::Meta];

    /// The redb table name, versioned.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta_v1",
        }
    }
}
