//! `tern get --oscore DIR`: the request protected end to end with OSCORE (RFC 8613), with the
//! security context of an aiocoap-format folder (`settings.json`, `secret.json`,
//! `sequence.json`). Sequence-number marks are stored in the folder before they are used, so
//! the folder can be shared with aiocoap's tools. A protected 4.01 carrying Echo (a server
//! that lost its replay state, Appendix B.1.2) is answered by repeating the request once with
//! the Echo.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tern::proto::endpoint::RequestParams;
use tern::proto::{Code, Message, OptionNumber};
use tern::{Context, Error, Response};
use tern_oscore::{protect_request, unprotect_response, ContextFolder, SecurityContext};

/// How many sequence numbers each stored mark reserves.
const MARK_STEP: u64 = 64;

/// Loads the folder's context, ready to protect.
pub fn load(dir: &str) -> Result<(ContextFolder, SecurityContext), String> {
    let folder = ContextFolder::new(Path::new(dir));
    let loaded = folder.load().map_err(|e| format!("--oscore: {e}"))?;
    let mut context = loaded.context;
    context.persist_sequence_numbers(loaded.stored_mark, MARK_STEP);
    Ok((folder, context))
}

/// Sends `request` protected and returns the unprotected response.
pub async fn send(
    client: &Context,
    peer: SocketAddr,
    secure: bool,
    folder: &ContextFolder,
    context: &mut SecurityContext,
    request: Message,
    timeout: Duration,
) -> Result<Response, String> {
    if request.payload.len() > 1024 {
        return Err(
            "--oscore: bodies over 1024 bytes need block-wise transfer inside OSCORE, which is \
             not built yet"
                .into(),
        );
    }
    let mut request = request;
    for attempt in 0..2 {
        folder
            .reserve(context)
            .map_err(|e| format!("--oscore: cannot store the sequence number: {e}"))?;
        let (protected, binding) =
            protect_request(context, &request, true).map_err(|e| format!("--oscore: {e}"))?;
        let params = RequestParams {
            timeout: Some(timeout),
        };
        let sent = if secure {
            client.send_secure(peer, protected, params).await
        } else {
            client.send(peer, protected, params).await
        };
        let outer = sent
            .map_err(|e| match e {
                Error::Request(inner) => format!("no response from {peer}: {inner}"),
                other => other.to_string(),
            })?
            .into_message();
        if !outer.options.contains(OptionNumber::OSCORE) {
            // The server could not process the request as OSCORE (§8.2): its unprotected
            // error says why.
            let diagnostic = String::from_utf8_lossy(&outer.payload);
            return Err(format!(
                "the server answered without OSCORE: {} {}{}",
                outer.code,
                outer.code.name().unwrap_or_default(),
                if diagnostic.is_empty() {
                    String::new()
                } else {
                    format!(": {diagnostic}")
                }
            ));
        }
        let inner = unprotect_response(context, &binding, &outer)
            .map_err(|e| format!("the response did not unprotect: {e}"))?;
        if inner.options.contains(OptionNumber::BLOCK2) {
            return Err(
                "--oscore: the response is block-wise inside OSCORE, which is not built yet".into(),
            );
        }
        match inner.options.get(OptionNumber::ECHO) {
            Some(echo) if inner.code == Code::UNAUTHORIZED && attempt == 0 => {
                request.options.set(OptionNumber::ECHO, echo.to_vec());
            }
            _ => return Ok(Response::from_message(inner)),
        }
    }
    Err("--oscore: the server asked for Echo twice".into())
}
