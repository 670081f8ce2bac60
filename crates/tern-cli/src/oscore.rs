//! OSCORE (RFC 8613) for the CLI: security contexts from aiocoap-format folders
//! (`settings.json`, `secret.json`, `sequence.json`), for `tern get --oscore DIR` and
//! `tern serve --oscore DIR`. Sequence-number marks are stored in the folder before they are
//! used, so a folder can be shared with aiocoap's tools and survives crashes.

use std::path::Path;

use tern::oscore::{OscoreClient, OscoreContext, OscoreServer, DEFAULT_MARK_STEP};

/// How many sequence numbers each stored mark of a client reserves: a `tern get` run is
/// usually one request, so a small step wastes few numbers per run.
const CLIENT_MARK_STEP: u64 = 64;

/// A client context from a folder; with `rederivation`, context re-derivation (RFC 8613
/// Appendix B.2) is allowed with the server.
pub fn client(dir: &Path, flag: &str, rederivation: bool) -> Result<OscoreClient, String> {
    let context = OscoreContext::from_folder(dir, CLIENT_MARK_STEP)
        .map_err(|e| format!("{flag}: {e}"))?
        .with_rederivation(rederivation);
    Ok(OscoreClient::new(context))
}

/// A server's contexts from folders (at least one); with `rederivation`, clients may
/// re-derive them, and a context whose replay window was lost starts a re-derivation instead
/// of challenging with Echo.
pub fn server<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
    flag: &str,
    rederivation: bool,
) -> Result<OscoreServer, String> {
    let server = OscoreServer::new();
    for dir in dirs {
        let context = OscoreContext::from_folder(dir, DEFAULT_MARK_STEP)
            .map_err(|e| format!("{flag}: {e}"))?
            .with_rederivation(rederivation);
        server.add(context).map_err(|e| format!("{flag}: {e}"))?;
    }
    Ok(server)
}
