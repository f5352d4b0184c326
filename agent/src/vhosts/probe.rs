//! A minimal HTTP/1.1 client for the agent's own checks through the web server: one request per
//! connection, a deadline, and a bounded answer.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    tokio::time::timeout(deadline, exchange(address, host, path))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from {address} within {deadline:?}"),
            )
        })?
}

async fn exchange(address: SocketAddr, host: &str, path: &str) -> io::Result<HttpAnswer> {
    let mut stream = TcpStream::connect(address).await?;
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
}
