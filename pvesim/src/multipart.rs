//! Reads a `multipart/form-data` body the way pveproxy takes uploads: text parts become
//! parameters; the file part (form name `filename`) gives its file name as the `filename`
//! parameter and its bytes as the upload.

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MultipartError {
    /// The content type names no boundary.
    #[error("no boundary in the content type")]
    NoBoundary,
    /// A part is cut off or has no header block.
    #[error("malformed part")]
    Malformed,
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (key, value) = parameter.trim().split_once('=')?;
        key.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| position + from)
}

/// A `name="value"` attribute of a `Content-Disposition` header.
fn attribute(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// The text parameters of a body and the uploaded file's bytes.
pub type Parts = (Vec<(String, String)>, Option<Vec<u8>>);

/// Splits a body into parameters and the uploaded file's bytes.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Parts, MultipartError> {
    let boundary = boundary(content_type).ok_or(MultipartError::NoBoundary)?;
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    let mut file = None;
    let mut position = find(body, delimiter.as_bytes(), 0).ok_or(MultipartError::Malformed)?;
    loop {
        position += delimiter.len();
        if body.get(position..position + 2) == Some(b"--") {
            break;
        }
        let headers_start = position + 2;
        let headers_end =
            find(body, b"\r\n\r\n", headers_start).ok_or(MultipartError::Malformed)?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]).into_owned();
        let content_start = headers_end + 4;
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), content_start)
            .ok_or(MultipartError::Malformed)?;
        let content = &body[content_start..next];
        let disposition = headers
            .lines()
            .find(|line| {
                line.to_ascii_lowercase()
                    .starts_with("content-disposition:")
            })
            .unwrap_or("");
        let name = attribute(disposition, "name").unwrap_or_default();
        match attribute(disposition, "filename") {
            Some(filename) => {
                fields.push((name, filename));
                file = Some(content.to_vec());
            }
            None => fields.push((name, String::from_utf8_lossy(content).into_owned())),
        }
        position = next + 2;
    }
    Ok((fields, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_the_file() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nvztmpl\r\n--XyZ\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"t.tar.zst\"\r\nContent-Type: application/octet-stream\r\n\r\nab\r\ncd\r\n--XyZ--\r\n";
        let (fields, file) = parse("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(
            fields,
            vec![
                ("content".to_string(), "vztmpl".to_string()),
                ("filename".to_string(), "t.tar.zst".to_string())
            ]
        );
        assert_eq!(file.as_deref(), Some(&b"ab\r\ncd"[..]));
        assert_eq!(
            parse("multipart/form-data", body),
            Err(MultipartError::NoBoundary)
        );
        assert_eq!(
            parse("multipart/form-data; boundary=XyZ", &body[..40]),
            Err(MultipartError::Malformed)
        );
    }
}
