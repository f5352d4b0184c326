//! The real `hostplane-coordinator` binary as a child process: started with the caller's
//! command, its ready line (`listening http=… quic=…`) read back within a minute, its standard
//! output drained for as long as it runs, and killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a coordinator may take to say where it listens.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running coordinator process.
pub struct Started {
    pub child: Child,
    /// The `listening …` line.
    pub ready: String,
    /// What it printed before that line.
    pub before: Vec<String>,
}

impl Started {
    /// Spawns `command` with its standard output piped and waits for the ready line.
    pub fn spawn(mut command: Command) -> Started {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("the coordinator binary starts");
        let stdout = child.stdout.take().expect("standard output is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        // Every line is read, also after the ready line, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut ready = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !ready {
                    ready = line.starts_with("listening ");
                    let _ = sender.send(line);
                }
            }
        });
        let started = Instant::now();
        let mut before = Vec::new();
        let ready = loop {
            let line = receiver
                .recv_timeout(READY_WITHIN.saturating_sub(started.elapsed()))
                .expect("the coordinator says where it listens within a minute");
            if line.starts_with("listening ") {
                break line;
            }
            before.push(line);
        };
        Started {
            child,
            ready,
            before,
        }
    }

    /// A field of the ready line, e.g. `field("http=")`.
    pub fn field(&self, name: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.ready))
            .to_string()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
