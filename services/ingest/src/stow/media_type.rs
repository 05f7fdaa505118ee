//! The media types of a Store transaction: the request must be
//! `multipart/related; type="application/dicom"; boundary=...` (PS3.18 10.5.1.2),
//! each part `application/dicom`; the response is `application/dicom+json`.
//! The metadata-and-bulk-data forms (`type="application/dicom+json"` or `+xml`)
//! are not supported.

pub(super) const DICOM: &str = "application/dicom";
pub(super) const DICOM_JSON: &str = "application/dicom+json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RequestTypeError {
    /// 415: not `multipart/related`, or parts of a type other than `application/dicom`.
    Unsupported(String),
    /// 400: `multipart/related` without a boundary.
    NoBoundary,
}

/// The multipart boundary of a Store request's `Content-Type`.
pub(super) fn multipart_boundary(content_type: Option<&str>) -> Result<String, RequestTypeError> {
    let Some(content_type) = content_type else {
        return Err(RequestTypeError::Unsupported(format!(
            "the request has no Content-Type; send multipart/related; type=\"{DICOM}\""
        )));
    };
    let (essence, parameters) = parse(content_type);
    if essence != "multipart/related" {
        return Err(RequestTypeError::Unsupported(format!(
            "Content-Type {essence} is not supported; send multipart/related; type=\"{DICOM}\""
        )));
    }
    // PS3.18 asks for the type parameter; a request without it is still read,
    // and each part's own Content-Type is checked instead.
    if let Some(part_type) = parameter(&parameters, "type")
        && !part_type.eq_ignore_ascii_case(DICOM)
    {
        return Err(RequestTypeError::Unsupported(format!(
            "multipart/related of {part_type} is not supported; only type=\"{DICOM}\" (Part 10 instances) is"
        )));
    }
    parameter(&parameters, "boundary")
        .filter(|boundary| !boundary.is_empty())
        .map(str::to_owned)
        .ok_or(RequestTypeError::NoBoundary)
}

/// Whether a part's `Content-Type` (absent: assumed from the request) is a
/// Part 10 instance. Parameters such as `transfer-syntax` are ignored: the
/// instance is stored as received, whatever its transfer syntax.
pub(super) fn is_dicom_part(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|value| parse(value).0 == DICOM)
}

/// Whether an `Accept` header allows the only response type, `application/dicom+json`.
pub(super) fn accepts_dicom_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    accept.split(',').any(|range| {
        let (essence, _) = parse(range);
        matches!(
            essence.as_str(),
            DICOM_JSON | "application/json" | "application/*" | "*/*"
        )
    })
}

/// The lower-case essence (`type/subtype`) and the parameters, names lower-cased,
/// quoted values unquoted.
fn parse(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = split_outside_quotes(value).into_iter();
    let essence = pieces
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let parameters = pieces
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
        })
        .collect();
    (essence, parameters)
}

fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(candidate, _)| candidate == name)
        .map(|(_, value)| value.as_str())
}

fn split_outside_quotes(value: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (index, character) in value.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                pieces.push(&value[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces
}

fn unquote(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return value.to_owned();
    };
    let mut unquoted = String::with_capacity(inner.len());
    let mut characters = inner.chars();
    while let Some(character) = characters.next() {
        if character == '\\' {
            unquoted.extend(characters.next());
        } else {
            unquoted.push(character);
        }
    }
    unquoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dicom_multipart_request_yields_its_boundary() {
        assert_eq!(
            multipart_boundary(Some(
                "multipart/related; type=\"application/dicom\"; boundary=\"a;b=c\""
            )),
            Ok("a;b=c".to_owned())
        );
        assert_eq!(
            multipart_boundary(Some(
                "Multipart/Related; boundary=xyz; TYPE=application/DICOM"
            )),
            Ok("xyz".to_owned())
        );
        assert_eq!(
            multipart_boundary(Some("multipart/related; boundary=xyz")),
            Ok("xyz".to_owned()),
            "the type parameter is optional here"
        );
    }

    #[test]
    fn other_media_types_are_unsupported_and_a_missing_boundary_is_malformed() {
        for content_type in [
            None,
            Some("application/dicom"),
            Some("multipart/form-data; boundary=x"),
            Some("multipart/related; type=\"application/dicom+json\"; boundary=x"),
        ] {
            assert!(
                matches!(
                    multipart_boundary(content_type),
                    Err(RequestTypeError::Unsupported(_))
                ),
                "{content_type:?}"
            );
        }
        assert_eq!(
            multipart_boundary(Some("multipart/related; type=\"application/dicom\"")),
            Err(RequestTypeError::NoBoundary)
        );
    }

    #[test]
    fn parts_and_accept_headers() {
        assert!(is_dicom_part(None));
        assert!(is_dicom_part(Some(
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        )));
        assert!(!is_dicom_part(Some("application/octet-stream")));
        assert!(accepts_dicom_json(None));
        assert!(accepts_dicom_json(Some("application/dicom+json")));
        assert!(accepts_dicom_json(Some("text/html, */*;q=0.1")));
        assert!(!accepts_dicom_json(Some("application/dicom+xml")));
    }
}
