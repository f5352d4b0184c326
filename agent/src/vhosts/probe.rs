//! A minimal HTTP/1.1 client for the agent's own checks through the web server: one request per
//! connection, a deadline, and a bounded answer; and the verdict on a vhost's probe answer.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::vhosts::render::vhost_probe_answer;
use crate::vhosts::spec::VhostId;

/// The most bytes of an answer that are read.
pub const ANSWER_LIMIT: usize = 64 * 1024;

/// The parts of an HTTP answer the checks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body as read (not de-chunked), cut at [`ANSWER_LIMIT`].
    pub body: String,
}

impl HttpAnswer {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `GET path` with the given Host header and reads the answer, all within `deadline`.
pub async fn http_get(
    address: SocketAddr,
    host: &str,
    path: &str,
    deadline: Duration,
) -> io::Result<HttpAnswer> {
    http_get_from(None, address, host, path, deadline).await
}

/// [`http_get`] from a given source address (any port), or from the one the kernel picks.
pub async fn http_get_from(
    source: Option<IpAddr>,
    address: SocketAddr,
    host: &str,
    path: &str,
    deadline: Duration,
) -> io::Result<HttpAnswer> {
    tokio::time::timeout(deadline, exchange(source, address, host, path))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from {address} within {deadline:?}"),
            )
        })?
}

async fn exchange(
    source: Option<IpAddr>,
    address: SocketAddr,
    host: &str,
    path: &str,
) -> io::Result<HttpAnswer> {
    let mut stream = match source {
        None => TcpStream::connect(address).await?,
        Some(source) => {
            let socket = match source {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(address).await?
        }
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hostplane-agent-check\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    while answer.len() < ANSWER_LIMIT {
        let count = stream.read(&mut buffer).await?;
        if count == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..count]);
    }
    answer.truncate(ANSWER_LIMIT);
    parse_answer(&answer)
}

/// Whether an answer to the probe of `generation` (see [`vhost_probe_path`]) proves that nginx
/// serves that generation for vhost `id`; if not, what came instead, as a sentence.
pub fn probe_verdict(answer: &HttpAnswer, generation: u64, id: &VhostId) -> Result<(), String> {
    let expected = vhost_probe_answer(&generation.to_string(), id);
    if answer.status == 200 && answer.body.trim() == expected {
        return Ok(());
    }
    let mut body: String = answer.body.trim().chars().take(120).collect();
    if body.is_empty() {
        body = "an empty body".into();
    }
    Err(format!(
        "the probe of generation {generation} for vhost {id} was answered with status {} and {body:?} instead of {expected:?}",
        answer.status
    ))
}

/// Parses the status line, headers and body of an HTTP/1.x answer.
pub fn parse_answer(answer: &[u8]) -> io::Result<HttpAnswer> {
    let invalid = |reason: &str| io::Error::new(io::ErrorKind::InvalidData, reason.to_string());
    if answer.is_empty() {
        return Err(invalid(
            "the server closed the connection without answering",
        ));
    }
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("the answer has no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("the answer is not HTTP/1.x"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid("the status line has no code"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_parsing_cases() {
        let answer =
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Cache-Status: HIT\r\n\r\n42")
                .unwrap();
        assert_eq!(
            (
                answer.status,
                answer.body.as_str(),
                answer.header("x-cache-status")
            ),
            (200, "42", Some("HIT"))
        );
        for broken in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
        ] {
            assert!(parse_answer(broken).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn probe_verdict_cases() {
        let id = VhostId::parse("site-a").unwrap();
        let answer = |status: u16, body: &str| HttpAnswer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        };
        let cases = [
            (
                "this generation and vhost",
                answer(200, "hostplane-probe generation=7 vhost=site-a"),
                true,
            ),
            (
                "trailing newline",
                answer(200, "hostplane-probe generation=7 vhost=site-a\n"),
                true,
            ),
            (
                "previous generation",
                answer(200, "hostplane-probe generation=6 vhost=site-a"),
                false,
            ),
            (
                "another vhost",
                answer(200, "hostplane-probe generation=7 vhost=site-b"),
                false,
            ),
            (
                "the application's page",
                answer(200, "<html>hello</html>"),
                false,
            ),
            ("refused", answer(403, ""), false),
            ("the application failing", answer(502, "Bad Gateway"), false),
            (
                "wrong status",
                answer(204, "hostplane-probe generation=7 vhost=site-a"),
                false,
            ),
        ];
        for (name, answer, accepted) in cases {
            assert_eq!(probe_verdict(&answer, 7, &id).is_ok(), accepted, "{name}");
        }
    }
}
