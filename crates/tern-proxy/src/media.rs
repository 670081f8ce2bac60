//! Content-Format ↔ Content-Type (RFC 8075 §6.4, through the CoAP Content-Formats registry).

use tern_proto::ContentFormat;

/// The HTTP Content-Type for a CoAP Content-Format; `None` for a number without a registered
/// media type here (the body then goes as application/octet-stream, RFC 8075 §6.4).
pub fn content_type_for(cf: ContentFormat) -> Option<String> {
    let media = cf.media_type()?;
    // The registry writes parameters without a space; HTTP usage puts one after the `;`.
    Some(media.replacen(';', "; ", 1))
}

/// The CoAP Content-Format for an HTTP Content-Type, or `None` when none matches.
///
/// Matching ignores case, whitespace and parameter order. `text/plain` maps to 0 only with
/// `charset=utf-8` or without a charset (US-ASCII, a subset); JSON types drop a `charset`
/// parameter (JSON is UTF-8 by definition, RFC 8259 §8.1).
pub fn content_format_for(content_type: &str) -> Option<ContentFormat> {
    let (essence, params) = split(content_type)?;
    let charset = params
        .iter()
        .find(|(k, _)| k == "charset")
        .map(|(_, v)| v.as_str());
    if essence == "text/plain" {
        return match charset {
            None | Some("utf-8") | Some("us-ascii") => Some(ContentFormat::TEXT_PLAIN),
            Some(_) => None,
        };
    }
    let others: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "charset").collect();
    let json = essence == "application/json" || essence.ends_with("+json");
    if charset.is_some() && !(json && matches!(charset, Some("utf-8"))) {
        return None;
    }
    // Compare with each registered media type, parsed the same way.
    ContentFormat::KNOWN
        .iter()
        .filter_map(|&cf| cf.media_type().map(|m| (cf, m)))
        .find(|(_, media)| {
            split(media).is_some_and(|(e, p)| {
                e == essence && p.len() == others.len() && p.iter().all(|kv| others.contains(&kv))
            })
        })
        .map(|(cf, _)| cf)
}

/// A media type's essence (`type/subtype`) and parameters, lower-cased, quotes removed;
/// `None` when it has no `/`.
fn split(media: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut parts = media.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    if !essence.contains('/') || essence.contains(char::is_whitespace) {
        return None;
    }
    let mut params = Vec::new();
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_ascii_lowercase();
        params.push((k.trim().to_ascii_lowercase(), v));
    }
    Some((essence, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_format_round_trips() {
        for n in 0..=u16::MAX {
            let cf = ContentFormat(n);
            if let Some(ct) = content_type_for(cf) {
                assert_eq!(content_format_for(&ct), Some(cf), "{ct}");
            }
        }
    }

    #[test]
    fn http_spellings_map_to_the_registered_number() {
        let rows: &[(&str, Option<u16>)] = &[
            ("text/plain", Some(0)),
            ("text/plain; charset=utf-8", Some(0)),
            ("Text/Plain;Charset=\"UTF-8\"", Some(0)),
            ("text/plain; charset=iso-8859-1", None),
            ("application/link-format", Some(40)),
            ("application/xml", Some(41)),
            ("application/octet-stream", Some(42)),
            ("application/exi", Some(47)),
            ("application/json", Some(50)),
            ("application/json; charset=utf-8", Some(50)),
            ("application/json; charset=latin1", None),
            ("application/json-patch+json", Some(51)),
            ("application/merge-patch+json", Some(52)),
            ("application/cbor", Some(60)),
            ("application/cwt", Some(61)),
            ("application/cose; cose-type=\"cose-encrypt0\"", Some(16)),
            ("application/cose; cose-type=cose-encrypt0", Some(16)),
            ("application/senml+json", Some(110)),
            ("application/senml+cbor", Some(112)),
            ("application/vnd.ocf+cbor", Some(10000)),
            ("application/oscore", Some(10001)),
            ("text/html", None),
            ("image/png", None),
            ("garbage", None),
            ("", None),
        ];
        for &(ct, cf) in rows {
            assert_eq!(content_format_for(ct).map(|c| c.0), cf, "{ct}");
        }
        assert_eq!(
            content_type_for(ContentFormat::TEXT_PLAIN).as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(content_type_for(ContentFormat(65000)), None);
    }
}
