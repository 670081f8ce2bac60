//! Response codes across the proxy, both ways.
//!
//! CoAP to HTTP follows RFC 8075 §7 (the table an HTTP-to-CoAP proxy applies to a CoAP
//! server's answer). HTTP to CoAP, what a CoAP-to-HTTP proxy applies to an HTTP server's
//! answer (RFC 7252 §10.2), is that table read backwards, with the success codes chosen by the
//! request's method the way a CoAP server would answer it.

use tern_proto::Code;

/// The CoAP response code for an HTTP server's status, answering a request with `method`.
///
/// - 2xx: by method, as a CoAP server answers (GET and FETCH 2.05, POST and the patches 2.04,
///   PUT 2.04, DELETE 2.02), except 201 → 2.01 Created to a POST or PUT (the methods that
///   create);
/// - 304 Not Modified → 2.03 Valid; any other 1xx or 3xx (the proxy follows no redirects, and
///   an interim answer is no answer) → 5.02 Bad Gateway;
/// - 4xx and 5xx: the code with the same meaning, else 4.00 or 5.00 of the same class; 401
///   becomes 4.01 and 403 4.03 (RFC 8075 maps both CoAP codes to 403, so nothing is lost).
pub fn coap_code_for_http(status: u16, method: Code) -> Code {
    match status {
        201 if matches!(method, Code::POST | Code::PUT) => Code::CREATED,
        200..=299 => success_for(method),
        304 => Code::VALID,
        400 => Code::BAD_REQUEST,
        401 => Code::UNAUTHORIZED,
        403 => Code::FORBIDDEN,
        404 | 410 => Code::NOT_FOUND,
        405 => Code::METHOD_NOT_ALLOWED,
        406 => Code::NOT_ACCEPTABLE,
        409 => Code::CONFLICT,
        412 => Code::PRECONDITION_FAILED,
        413 => Code::REQUEST_ENTITY_TOO_LARGE,
        415 => Code::UNSUPPORTED_CONTENT_FORMAT,
        422 => Code::UNPROCESSABLE_ENTITY,
        429 => Code::TOO_MANY_REQUESTS,
        402..=499 => Code::BAD_REQUEST,
        501 => Code::NOT_IMPLEMENTED,
        502 => Code::BAD_GATEWAY,
        503 => Code::SERVICE_UNAVAILABLE,
        504 => Code::GATEWAY_TIMEOUT,
        500..=599 => Code::INTERNAL_SERVER_ERROR,
        _ => Code::BAD_GATEWAY,
    }
}

/// What a CoAP server answers a successful request with, by method (RFC 7252 §5.8).
fn success_for(method: Code) -> Code {
    match method {
        Code::DELETE => Code::DELETED,
        Code::GET | Code::FETCH => Code::CONTENT,
        _ => Code::CHANGED,
    }
}

/// The HTTP status for a CoAP response code (RFC 8075 §7.1). `has_payload` picks 200 over 204
/// for 2.02 Deleted and 2.04 Changed.
pub fn http_status_for_coap(code: Code, has_payload: bool) -> u16 {
    match code {
        Code::CREATED => 201,
        Code::DELETED | Code::CHANGED if !has_payload => 204,
        Code::DELETED | Code::CHANGED | Code::CONTENT => 200,
        Code::VALID => 304,
        Code::BAD_REQUEST | Code::BAD_OPTION | Code::REQUEST_ENTITY_INCOMPLETE => 400,
        Code::UNAUTHORIZED | Code::FORBIDDEN => 403,
        Code::NOT_FOUND => 404,
        Code::METHOD_NOT_ALLOWED => 405,
        Code::NOT_ACCEPTABLE => 406,
        Code::CONFLICT => 409,
        Code::PRECONDITION_FAILED => 412,
        Code::REQUEST_ENTITY_TOO_LARGE => 413,
        Code::UNSUPPORTED_CONTENT_FORMAT => 415,
        Code::UNPROCESSABLE_ENTITY => 422,
        Code::TOO_MANY_REQUESTS => 429,
        Code::INTERNAL_SERVER_ERROR => 500,
        Code::NOT_IMPLEMENTED => 501,
        Code::BAD_GATEWAY | Code::PROXYING_NOT_SUPPORTED => 502,
        Code::SERVICE_UNAVAILABLE => 503,
        Code::GATEWAY_TIMEOUT => 504,
        other => match other.class() {
            2 => 200,
            4 => 400,
            _ => 502,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_http_status_row() {
        let rows: &[(u16, Code, Code)] = &[
            (200, Code::GET, Code::CONTENT),
            (200, Code::FETCH, Code::CONTENT),
            (200, Code::POST, Code::CHANGED),
            (200, Code::PUT, Code::CHANGED),
            (200, Code::PATCH, Code::CHANGED),
            (200, Code::IPATCH, Code::CHANGED),
            (200, Code::DELETE, Code::DELETED),
            (204, Code::PUT, Code::CHANGED),
            (204, Code::DELETE, Code::DELETED),
            (202, Code::POST, Code::CHANGED),
            (201, Code::POST, Code::CREATED),
            (201, Code::PUT, Code::CREATED),
            (201, Code::GET, Code::CONTENT),
            (201, Code::DELETE, Code::DELETED),
            (304, Code::GET, Code::VALID),
            (301, Code::GET, Code::BAD_GATEWAY),
            (302, Code::GET, Code::BAD_GATEWAY),
            (307, Code::GET, Code::BAD_GATEWAY),
            (100, Code::GET, Code::BAD_GATEWAY),
            (400, Code::GET, Code::BAD_REQUEST),
            (401, Code::GET, Code::UNAUTHORIZED),
            (402, Code::GET, Code::BAD_REQUEST),
            (403, Code::GET, Code::FORBIDDEN),
            (404, Code::GET, Code::NOT_FOUND),
            (410, Code::GET, Code::NOT_FOUND),
            (405, Code::GET, Code::METHOD_NOT_ALLOWED),
            (406, Code::GET, Code::NOT_ACCEPTABLE),
            (408, Code::GET, Code::BAD_REQUEST),
            (409, Code::PUT, Code::CONFLICT),
            (412, Code::PUT, Code::PRECONDITION_FAILED),
            (413, Code::PUT, Code::REQUEST_ENTITY_TOO_LARGE),
            (414, Code::GET, Code::BAD_REQUEST),
            (415, Code::PUT, Code::UNSUPPORTED_CONTENT_FORMAT),
            (422, Code::POST, Code::UNPROCESSABLE_ENTITY),
            (429, Code::GET, Code::TOO_MANY_REQUESTS),
            (500, Code::GET, Code::INTERNAL_SERVER_ERROR),
            (501, Code::GET, Code::NOT_IMPLEMENTED),
            (502, Code::GET, Code::BAD_GATEWAY),
            (503, Code::GET, Code::SERVICE_UNAVAILABLE),
            (504, Code::GET, Code::GATEWAY_TIMEOUT),
            (505, Code::GET, Code::INTERNAL_SERVER_ERROR),
            (599, Code::GET, Code::INTERNAL_SERVER_ERROR),
            (600, Code::GET, Code::BAD_GATEWAY),
            (0, Code::GET, Code::BAD_GATEWAY),
        ];
        for &(status, method, code) in rows {
            assert_eq!(
                coap_code_for_http(status, method),
                code,
                "HTTP {status} to {method:?}"
            );
        }
    }

    #[test]
    fn every_coap_code_row() {
        let rows: &[(Code, bool, u16)] = &[
            (Code::CREATED, false, 201),
            (Code::DELETED, false, 204),
            (Code::DELETED, true, 200),
            (Code::VALID, false, 304),
            (Code::CHANGED, false, 204),
            (Code::CHANGED, true, 200),
            (Code::CONTENT, true, 200),
            (Code::CONTENT, false, 200),
            (Code::BAD_REQUEST, true, 400),
            (Code::UNAUTHORIZED, false, 403),
            (Code::BAD_OPTION, false, 400),
            (Code::FORBIDDEN, false, 403),
            (Code::NOT_FOUND, false, 404),
            (Code::METHOD_NOT_ALLOWED, false, 405),
            (Code::NOT_ACCEPTABLE, false, 406),
            (Code::REQUEST_ENTITY_INCOMPLETE, false, 400),
            (Code::CONFLICT, false, 409),
            (Code::PRECONDITION_FAILED, false, 412),
            (Code::REQUEST_ENTITY_TOO_LARGE, false, 413),
            (Code::UNSUPPORTED_CONTENT_FORMAT, false, 415),
            (Code::UNPROCESSABLE_ENTITY, false, 422),
            (Code::TOO_MANY_REQUESTS, false, 429),
            (Code::INTERNAL_SERVER_ERROR, false, 500),
            (Code::NOT_IMPLEMENTED, false, 501),
            (Code::BAD_GATEWAY, false, 502),
            (Code::SERVICE_UNAVAILABLE, false, 503),
            (Code::GATEWAY_TIMEOUT, false, 504),
            (Code::PROXYING_NOT_SUPPORTED, false, 502),
            (Code::HOP_LIMIT_REACHED, false, 502),
        ];
        for &(code, payload, status) in rows {
            assert_eq!(http_status_for_coap(code, payload), status, "{code:?}");
        }
    }

    #[test]
    fn error_codes_survive_a_round_trip_through_http() {
        for code in [
            Code::BAD_REQUEST,
            Code::NOT_FOUND,
            Code::METHOD_NOT_ALLOWED,
            Code::NOT_ACCEPTABLE,
            Code::CONFLICT,
            Code::PRECONDITION_FAILED,
            Code::REQUEST_ENTITY_TOO_LARGE,
            Code::UNSUPPORTED_CONTENT_FORMAT,
            Code::UNPROCESSABLE_ENTITY,
            Code::TOO_MANY_REQUESTS,
            Code::INTERNAL_SERVER_ERROR,
            Code::NOT_IMPLEMENTED,
            Code::BAD_GATEWAY,
            Code::SERVICE_UNAVAILABLE,
            Code::GATEWAY_TIMEOUT,
        ] {
            let status = http_status_for_coap(code, true);
            assert_eq!(coap_code_for_http(status, Code::GET), code);
        }
    }
}
