//! The client key store (credentials per peer) and the client credentials a connection or
//! handshake uses: a session's own, else the store's for the peer, else the context's.

use super::*;

impl Context {
    /// The client TLS context for `peer`: `own` credentials (a session's) if given, else the
    /// key store's for the peer, else the context's.
    pub(crate) fn client_tls_for(
        &self,
        peer: SocketAddr,
        own: Option<(Option<Psk>, Option<PkiSettings>)>,
    ) -> Result<TlsContext, Error> {
        let stored = self
            .inner
            .peer_keys
            .lock()
            .map_err(|_| Error::Closed)?
            .get(&peer)
            .map(|ctx| (ctx.settings().psk.clone(), ctx.settings().pki.clone()));
        match own.or(stored) {
            Some((psk, pki)) => Ok(TlsContext::client(TlsSettings {
                psk,
                pki,
                ..self.inner.tls_client_settings.clone()
            })?),
            None => self.inner.tls_client.clone().ok_or(Error::NoCredentials),
        }
    }

    /// The context's client DTLS settings (suites, timers, credentials if any).
    pub(crate) fn client_dtls_settings(&self) -> DtlsSettings {
        self.inner.client_dtls_settings.clone()
    }

    /// The client credentials for `peer`: the key store's, else the context's; with this MTU.
    pub(crate) fn client_dtls_for(
        &self,
        peer: SocketAddr,
        mtu: u16,
    ) -> Result<Option<DtlsContext>, Error> {
        let stored = self
            .inner
            .peer_keys
            .lock()
            .map_err(|_| Error::Closed)?
            .get(&peer)
            .cloned();
        let Some(ctx) = stored.or_else(|| self.inner.client_dtls.clone()) else {
            return Ok(None);
        };
        if ctx.settings().mtu == u32::from(mtu) {
            return Ok(Some(ctx));
        }
        let settings = DtlsSettings {
            mtu: u32::from(mtu),
            ..ctx.settings().clone()
        };
        Ok(Some(DtlsContext::client(settings)?))
    }

    /// Adds a PSK to the client key store for the peer of `uri` (coaps://): requests to it
    /// through this context, and sessions made for it later without their own credentials,
    /// use this key instead of the context's. Replaces an earlier entry for the peer; channels
    /// already open keep their keys.
    pub async fn add_peer_psk(&self, uri: &str, psk: Psk) -> Result<(), Error> {
        let settings = DtlsSettings {
            psk: Some(psk),
            pki: None,
            ..self.client_dtls_settings()
        };
        self.add_peer_credentials(uri, settings).await
    }

    /// Adds certificates to the client key store for the peer of `uri`, as
    /// [`add_peer_psk`](Self::add_peer_psk) does a PSK.
    pub async fn add_peer_pki(&self, uri: &str, pki: PkiSettings) -> Result<(), Error> {
        let settings = DtlsSettings {
            psk: None,
            pki: Some(pki),
            ..self.client_dtls_settings()
        };
        self.add_peer_credentials(uri, settings).await
    }

    async fn add_peer_credentials(&self, uri: &str, settings: DtlsSettings) -> Result<(), Error> {
        let peer = self.secure_peer(uri).await?;
        let ctx = DtlsContext::client(settings)?;
        self.inner
            .peer_keys
            .lock()
            .map_err(|_| Error::Closed)?
            .insert(peer, ctx.clone());
        for endpoint in self.shared_secure_endpoints() {
            let credentials = Some(Box::new(ctx.clone()));
            let _ = endpoint
                .commands
                .send(Command::PeerCredentials(peer, credentials));
        }
        Ok(())
    }

    /// Removes the key store's entry for the peer of `uri`: new handshakes with it use the
    /// context's credentials (or fail without any). With `close_sessions`, the context's open
    /// channels to that peer are closed too, and their waiting requests fail. Returns whether
    /// there was an entry.
    pub async fn remove_peer_credentials(
        &self,
        uri: &str,
        close_sessions: bool,
    ) -> Result<bool, Error> {
        let peer = self.secure_peer(uri).await?;
        let removed = self
            .inner
            .peer_keys
            .lock()
            .map_err(|_| Error::Closed)?
            .remove(&peer)
            .is_some();
        for endpoint in self.shared_secure_endpoints() {
            let _ = endpoint.commands.send(Command::PeerCredentials(peer, None));
            if close_sessions {
                let reason = "the peer's key was removed".to_string();
                let _ = endpoint.commands.send(Command::Disconnect(peer, reason));
            }
        }
        Ok(removed)
    }

    async fn secure_peer(&self, uri: &str) -> Result<SocketAddr, Error> {
        let uri = CoapUri::parse(uri)?;
        if !uri.scheme.is_secure() {
            return Err(Error::Config(format!(
                "the key store holds keys for coaps:// and coaps+tcp:// peers, not {}",
                uri.scheme
            )));
        }
        resolve(&uri).await
    }

    /// The context's own DTLS endpoints (bound and ephemeral), not sessions'.
    fn shared_secure_endpoints(&self) -> Vec<Arc<EndpointHandle>> {
        let mut all: Vec<_> = self
            .inner
            .bound
            .iter()
            .filter(|e| e.secure)
            .cloned()
            .collect();
        if let Ok(e) = self.inner.ephemeral.lock() {
            all.extend(e.iter().filter(|e| e.secure).cloned());
        }
        all
    }
}
