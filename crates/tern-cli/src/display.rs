//! Human-readable rendering of options and payloads for `-v`.

use tern::proto::link_format;
use tern::proto::option::{decode_uint, ValueFormat};
use tern::{ContentFormat, OptionNumber, Response};

/// One option as `Name: value`, decoded by the option's format.
pub fn option_line(number: OptionNumber, value: &[u8]) -> String {
    let shown = match number.def().map(|d| d.format) {
        Some(ValueFormat::Uint) => match decode_uint(value) {
            Some(v) if number == OptionNumber::CONTENT_FORMAT || number == OptionNumber::ACCEPT => {
                match u16::try_from(v) {
                    Ok(cf) => format!("{v} ({})", ContentFormat(cf)),
                    Err(_) => format!("{v} (not a Content-Format)"),
                }
            }
            Some(v) => v.to_string(),
            None => hex(value),
        },
        Some(ValueFormat::String) => format!("{:?}", String::from_utf8_lossy(value)),
        Some(ValueFormat::Empty) => String::new(),
        _ => hex(value),
    };
    format!("{number}: {shown}")
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header, options and payload of a response, decoded by content format.
pub fn describe(response: &Response) -> String {
    let code = response.code();
    let mut out = format!(
        "{code}{}\n",
        code.name().map(|n| format!(" {n}")).unwrap_or_default()
    );
    for o in response.options() {
        out.push_str(&format!("  {}\n", option_line(o.number, &o.value)));
    }
    let payload = response.payload();
    if payload.is_empty() {
        return out;
    }
    out.push_str(&format!("  payload: {} bytes\n", payload.len()));
    let cf = response.content_format();
    if cf == Some(ContentFormat::LINK_FORMAT) {
        if let Ok(links) = link_format::parse(&String::from_utf8_lossy(payload)) {
            for link in links {
                out.push_str(&format!("    {}\n", link_format::serialize(&[link])));
            }
            return out;
        }
    }
    match std::str::from_utf8(payload) {
        Ok(text) if cf.is_none_or(ContentFormat::is_text) => {
            for line in text.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
        _ => {
            for chunk in payload.chunks(16) {
                out.push_str(&format!("    {}\n", hex(chunk)));
            }
        }
    }
    out
}
