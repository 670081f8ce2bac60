#!/usr/bin/env bash
# Makes throwaway test certificates in DIR (never commit their keys):
#   ca.pem ca.key            EC P-256 test CA
#   server.pem server.key    server certificate, SAN DNS:localhost, IP:127.0.0.1, IP:::1, signed by the CA
#   client.pem client.key    client certificate (CN=tern-test-client), signed by the CA
#   other-ca.pem             an unrelated CA (for "unknown CA" tests)
#   alt.pem alt.key          a second server certificate (CN and SAN DNS:alt.example), for SNI
#   expired.pem expired.key  a server certificate that expired, signed by the CA
#   bash scripts/make-test-certs.sh DIR
set -euo pipefail
DIR="${1:?usage: make-test-certs.sh DIR}"
mkdir -p "$DIR"
cd "$DIR"
CURVE=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

openssl req -x509 "${CURVE[@]}" -keyout ca.key -out ca.pem -days 30 -subj "/CN=Tern Test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -x509 "${CURVE[@]}" -keyout other-ca.key -out other-ca.pem -days 30 -subj "/CN=Other CA" \
    -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null

leaf() { # name CN days-args extfile-lines...
    local name="$1" cn="$2" days="$3"; shift 3
    openssl req "${CURVE[@]}" -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
    printf '%s\n' "$@" > "$name.ext"
    # shellcheck disable=SC2086
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" $days \
        -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}
leaf server localhost "-days 30" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE"
leaf alt alt.example "-days 30" "subjectAltName=DNS:alt.example" \
    "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE"
leaf client tern-test-client "-days 30" "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE"
# Expired: valid for one day, starting two days ago.
openssl req "${CURVE[@]}" -keyout expired.key -out expired.csr -subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in expired.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out expired.pem \
    -not_before "$(date -u -d '2 days ago' +%Y%m%d%H%M%SZ)" -not_after "$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)" 2>/dev/null \
    || openssl x509 -req -in expired.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out expired.pem -days 0 2>/dev/null
rm -f expired.csr ca.srl
chmod 600 ./*.key
