//! The instance lifecycle's task kinds under short names; they are defined once, in
//! `tasks::kinds`, with every other kind.

pub use crate::tasks::kinds::{
    INSTANCE_CREATE as CREATE, INSTANCE_DELETE as DESTROY, INSTANCE_POWER as POWER,
    INSTANCE_UPDATE as UPDATE, TEMPLATE_DOWNLOAD as DOWNLOAD,
};
