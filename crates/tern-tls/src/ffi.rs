//! The OpenSSL calls the `openssl` crate does not wrap: the DTLS retransmission timer, the
//! stateless cookie exchange (`DTLSv1_listen`) and the PSK identity hint. This is the only
//! module with `unsafe`; each block says why it is sound.

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_void};
use std::sync::OnceLock;
use std::time::Duration;

use foreign_types_shared::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslContextBuilder, SslRef};
use openssl_sys::SSL;

/// `DTLS_CTRL_GET_TIMEOUT` from `ssl.h`.
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
/// `DTLS_CTRL_HANDLE_TIMEOUT` from `ssl.h`.
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

extern "C" {
    fn DTLS_set_timer_cb(s: *mut SSL, cb: Option<unsafe extern "C" fn(*mut SSL, c_uint) -> c_uint>);
    fn DTLSv1_listen(s: *mut SSL, client: *mut c_void) -> c_int;
    fn BIO_ADDR_new() -> *mut c_void;
    fn BIO_ADDR_free(addr: *mut c_void);
    fn SSL_CTX_use_psk_identity_hint(ctx: *mut openssl_sys::SSL_CTX, hint: *const c_char) -> c_int;
}

/// The retransmission schedule of one channel: the first timeout, doubled up to a maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerPolicy {
    /// First timeout in microseconds.
    pub initial_us: u32,
    /// Largest timeout in microseconds.
    pub max_us: u32,
}

fn policy_index() -> Result<Index<Ssl, TimerPolicy>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, TimerPolicy>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| index))
}

/// OpenSSL asks for the next timeout: 0 means "the first". A channel without a policy gets
/// RFC 6347's 1 s, doubling to 60 s.
unsafe extern "C" fn timer_callback(ssl: *mut SSL, previous_us: c_uint) -> c_uint {
    // SAFETY: OpenSSL calls this with the live SSL it belongs to; we only read its ex_data.
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    let policy = policy_index()
        .ok()
        .and_then(|i| ssl.ex_data(i).copied())
        .unwrap_or(TimerPolicy {
            initial_us: 1_000_000,
            max_us: 60_000_000,
        });
    if previous_us == 0 {
        policy.initial_us
    } else {
        previous_us.saturating_mul(2).min(policy.max_us)
    }
}

/// Installs our retransmission schedule on a channel.
pub fn set_timer_policy(ssl: &mut SslRef, policy: TimerPolicy) -> Result<(), ErrorStack> {
    ssl.set_ex_data(policy_index()?, policy);
    // SAFETY: `ssl` is a live SSL; the callback is a plain function valid for the program's life.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(timer_callback)) };
    Ok(())
}

/// Time left on the DTLS retransmission timer, if it runs.
pub fn timer_remaining(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` through the pointer, which
    // points at a live, correctly typed local.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut libc::timeval).cast(),
        )
    };
    (running == 1).then(|| {
        Duration::new(
            tv.tv_sec.max(0) as u64,
            (tv.tv_usec.clamp(0, 999_999) as u32) * 1000,
        )
    })
}

/// Lets OpenSSL retransmit its last flight if its timer has expired. Returns > 0 when it
/// retransmitted, 0 when nothing was due, < 0 when the handshake gave up.
pub fn handle_timer(ssl: &SslRef) -> c_long {
    // SAFETY: DTLS_CTRL_HANDLE_TIMEOUT takes no argument; `ssl` is live, and the caller holds
    // its SslStream mutably, so nothing else uses the SSL during the call.
    unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    }
}

/// The outcome of offering one datagram to [`listen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenOutcome {
    /// A ClientHello with a valid cookie: the SSL now holds it and can continue the handshake.
    Accepted,
    /// Not (yet) acceptable: a HelloVerifyRequest may have been written; nothing was kept.
    NotYet,
    /// A fatal error; the SSL must not be reused.
    Failed,
}

/// Runs OpenSSL's stateless cookie exchange on whatever datagram the SSL's read BIO holds.
pub fn listen(ssl: &SslRef) -> ListenOutcome {
    // SAFETY: BIO_ADDR_new returns an owned, zeroed address object or null.
    let addr = unsafe { BIO_ADDR_new() };
    if addr.is_null() {
        return ListenOutcome::Failed;
    }
    // SAFETY: `ssl` is live with both BIOs set (the caller wraps it in an SslStream it holds
    // mutably, so nothing else uses the SSL); `addr` is a valid BIO_ADDR that DTLSv1_listen
    // may clear or fill.
    let result = unsafe { DTLSv1_listen(ssl.as_ptr(), addr) };
    // SAFETY: `addr` came from BIO_ADDR_new and is freed exactly once.
    unsafe { BIO_ADDR_free(addr) };
    match result {
        r if r > 0 => ListenOutcome::Accepted,
        0 => ListenOutcome::NotYet,
        _ => ListenOutcome::Failed,
    }
}

/// Sets the PSK identity hint a server sends; `None` or empty sends none.
pub fn set_identity_hint(
    ctx: &mut SslContextBuilder,
    hint: Option<&[u8]>,
) -> Result<(), ErrorStack> {
    let hint = match hint {
        Some(h) if !h.is_empty() => Some(CString::new(h).map_err(|_| ErrorStack::get())?),
        _ => None,
    };
    let ptr = hint.as_ref().map_or(std::ptr::null(), |h| h.as_ptr());
    // SAFETY: `ctx` is a live SSL_CTX; OpenSSL copies the NUL-terminated hint (or clears it for
    // null) before returning, so `hint` only needs to live across the call.
    let ok = unsafe { SSL_CTX_use_psk_identity_hint(ctx.as_ptr(), ptr) };
    if ok == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}
