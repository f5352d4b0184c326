//! The set of handlers this build of the agent runs with.

use crate::handler::Handlers;

impl Handlers {
    /// The handlers this build of the agent has: ping, packages (apt, one at a time),
    /// databases (MariaDB and PostgreSQL found on the machine, dumps on a data stream) and web
    /// work (nginx vhosts, certificates and caches).
    pub fn standard() -> Handlers {
        let exclusive = crate::process::Exclusive::new();
        Handlers::new()
            .with(crate::ping::PingHandler)
            .with(crate::packages::Packages::new(exclusive.clone()))
            .with(crate::databases::Databases::new(
                crate::databases::plan::DatabaseSettings::default(),
            ))
            .with(crate::web_handler::WebHandler::debian())
    }
}
