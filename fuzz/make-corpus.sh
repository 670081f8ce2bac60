#!/usr/bin/env bash
# Writes the seed corpora for the fuzz targets: a few small valid inputs each.
# Run from anywhere; files go to fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

hex() { # hex <file> <hex digits, in any number of words>
    local file=$1 digits out=""
    shift
    digits=$(printf '%s' "$@")
    for ((i = 0; i < ${#digits}; i += 2)); do out+="\\x${digits:i:2}"; done
    printf '%b' "$out" >"$file"
}

d=corpus/datagram
mkdir -p "$d"
# RFC 8613 C.4: CON GET, token 0x3974, Uri-Host "localhost", Uri-Path "tv1".
hex "$d/rfc8613-c4-get" 44015d1f00003974396c6f63616c686f737483747631
# Empty CON (ping), empty ACK, RST.
hex "$d/ping" 40000001
hex "$d/empty-ack" 60001234
hex "$d/rst" 70001234
# ACK 2.05 with token, Content-Format 0 and payload "Hi".
hex "$d/ack-content" 6445123400003974c0ff4869
# NON POST with Uri-Path "a", Uri-Query "x=1", Size2 (delta 13: a 1-byte extension), then
# option 2320 (delta 2292: a 2-byte extension) twice, the second with a 13-byte value.
hex "$d/extended" 5002beef b161 43 783d31 d100ff e007e7 0d00 6162636465666768696a6b6c6d
# CON GET with an 8-byte token, Observe 0, Uri-Path "time" and Block2 (NUM 0, SZX 2).
hex "$d/observe-block2" 48010001 0102030405060708 60 5474696d65 c102

u=corpus/uri
mkdir -p "$u"
printf '%s' 'coap://example.com/.well-known/core?rt=temp*' >"$u/well-known"
printf '%s' 'coaps://[2001:db8::1]:61616/a//b/?x=1&y' >"$u/ipv6"
printf '%s' 'coap+tcp://192.0.2.1/%7Esensors/temp%20c' >"$u/tcp-percent"
printf '%s' 'COAPS+TCP://Example.COM:5684/./a/../b' >"$u/dots"
printf '%s' 'coap://h/%2E?%26' >"$u/encoded-dot"

l=corpus/link_format
mkdir -p "$l"
printf '%s' '</sensors/temp>;rt="temperature-c";if="sensor";obs,</sensors/light>;rt="light-lux";ct=0' >"$l/rfc6690"
printf '%s' '</time>;rt="clock";obs,</echo>;ct=0;sz=128;title="say \"hi\""' >"$l/escapes"
printf '%s' ' <a> ; rt = "x, y;z" ; ct="0 41" ;obs , , </b>;title*=UTF-8'"'"'de'"'"'n%c3%a4chstes,' >"$l/tolerant"
printf '%s' '<http://www.example.com/sensors/t123>;anchor="/sensors/temp";rel="describedby"' >"$l/anchor"

b=corpus/block
mkdir -p "$b"
# Records of [op][length, 2 bytes][datagram]; op's low two bits pick the machine: 0 assembler,
# 1 Block2 server, 2 Block2Fetch, 3 Block1Send; its high nibble advances the clock by 16 s steps.
# Three Block1 blocks of PUT /f (0/1/16 with Size1 37, 1/1/16, 2/0/16).
hex "$b/put-three-blocks" \
    00001e 4103000101 b166 d10308 d11425 ff 61616161616161616161616161616161 \
    00001b 4103000202 b166 d10318 ff 62626262626262626262626262626262 \
    000010 4103000303 b166 d10320 ff 6363636363
# GET /f with a 64-byte payload (the fuzz handler answers 40 copies: 3 blocks), then Block2
# 1/0/1024 from the cache and 9/0/1024 past the end.
hex "$b/get-blocks" \
    010048 4101000101 b166 ff 78787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878 \
    010009 4101000202 b166 c116 \
    010009 4101000303 b166 c196
# Responses to the fetch: Block2 0/1/16 and 1/0/16 with ETag "e".
hex "$b/fetch-responses" \
    02001a 6045000141 65 d10608 ff 64646464646464646464646464646464 \
    02000d 6045000241 65 d10610 ff 656565
# Responses to the send: 2.31 with Block1 0/1/64, 2.31 asking for 32-byte blocks, 4.13 Size1 100.
hex "$b/send-responses" \
    030007 605f0001 d10e0a \
    030007 605f0002 d10e19 \
    030007 608d0003 d12f64
# Block 0 with a Request-Tag, then 240 s later block 1: the transfer expired (4.08).
hex "$b/expiry" \
    00001d 40030001 b166 d10308 d1fc07 ff 61616161616161616161616161616161 \
    f00010 40030002 b166 d10310 d1fc07 ff 626262

o=corpus/oscore
mkdir -p "$o"
# Mode 0 (even first byte): option values of RFC 8613 C.4, C.5, C.6 and C.8.
hex "$o/option-c4" 00 0914
hex "$o/option-c5" 00 091400
hex "$o/option-c6" 00 19140837cbf3210017a2d3
hex "$o/option-c8" 00 0100
# Mode 1 (odd): the protected request of C.4 (unprotects with the C.1 server context) and the
# protected responses of C.7 and C.8 (unprotect with the C.1 client context and C.4's binding).
hex "$o/request-c4" 01 44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e
hex "$o/response-c7" 01 64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106
hex "$o/response-c8" 01 64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e

s=corpus/stream_frame
mkdir -p "$s"
# Two leading bytes: byte 0 bit 0 puts a valid CSM in front, bytes 0-1 seed the cuts (byte 1
# also bounds the piece size); the rest is the stream (RFC 8323 §3.2 frames).
# A CSM (Max-Message-Size 1152, Block-Wise-Transfer), then GET /a with token 0x42, cut small.
hex "$s/csm-get" 0000 40e1220480 20 2101 42 b161
# With the CSM in front: a Ping with Custody and token 0x01, an Empty message, a POST with a
# 13-byte payload (Len 13: one extended-length byte), a 2.05 to an unknown token.
hex "$s/ping-empty-post" 0107 11e2 01 20 0000 d1010201 ff 68656c6c6f2c20776f726c6421 0145 09
# With the CSM in front: a GET with Observe 0 and 8-byte token, then Release with
# Alternative-Address "h" and Hold-Off 30, then Abort "x".
hex "$s/observe-release" 0140 6801 0102030405060708 60 5474696d65 40e4 2168 211e 20e5 ff78
# A Len-14 frame (two extended-length bytes) carrying a 300-byte payload in 3.05, after a CSM.
hex "$s/len14" 01ff e00020 45 ff $(printf '61%.0s' $(seq 300))
# A first message that is not a CSM, and an unknown critical CSM option 9.
hex "$s/not-csm-first" 0003 0001
hex "$s/bad-csm-option" 0011 10e1 90

p=corpus/options
mkdir -p "$p"
# The options area of a message alone (options, then perhaps the payload marker and payload);
# the same bytes also build options as records [number u16][length u16][value] for the encoder.
# RFC 8613 C.4's options: Uri-Host "localhost", Uri-Path "tv1".
hex "$p/rfc8613-c4" 396c6f63616c686f7374 83747631
# Uri-Path "a", Uri-Query "x=1", Size2 (delta 13: a 1-byte extension), option 2320 (delta 2292:
# a 2-byte extension) twice, the second with a 13-byte value (length 13: a 1-byte extension).
hex "$p/extended" b161 43783d31 d100ff e007e7 0d00 6162636465666768696a6b6c6d
# Typed values: Observe 0, Content-Format 50 (json), Max-Age 3600, Accept 10001 (oscore),
# Block2 0/1/64, Block1 65534/1/1024, Size1 1024 (delta 33), then a payload "hi!".
hex "$p/typed" 60 6132 220e10 322711 610a 430fffee d2140400 ff 686921
# Proxy-Uri (delta 35) with a 300-byte value (length 14: a 2-byte extension), then the
# unknown critical option 65001 (delta 64966, a 2-byte extension) with no value.
hex "$p/len14" de16001f $(printf '61%.0s' $(seq 300)) e0fcb9
# Repeated and empty options: ETag twice, If-None-Match, Uri-Path "a", "", "b", Echo (delta
# 241), No-Response 26, Request-Tag (delta 34) empty.
hex "$p/repeated" 4101 020203 10 6161 00 0162 d4e401020304 611a d015
# Malformed: a value past the end, a missing 1-byte and 2-byte extension, nibble 15, a number
# past 65535, a payload marker with no payload.
hex "$p/truncated-value" b561
hex "$p/truncated-delta13" d0
hex "$p/truncated-length14" 3e01
hex "$p/reserved-nibble" f0
hex "$p/number-overflow" e0ffff e0ffff
hex "$p/empty-payload" 60ff

r=corpus/dtls_record
mkdir -p "$r"
# One datagram of DTLS records: [type][version][epoch][48-bit sequence][length][fragment]
# (RFC 6347 §4.1).
# A ClientHello (handshake, DTLS 1.0 version, epoch 0): client_version DTLS 1.2, a random,
# no session ID, no cookie, TLS_PSK_WITH_AES_128_CCM_8, null compression.
hex "$r/client-hello" 16feff 0000 000000000000 0036 \
    01 00002a 0000 000000 00002a fefd $(printf '%02x' $(seq 1 32)) 00 00 0002 c0a8 01 00
# A HelloVerifyRequest with an 8-byte cookie.
hex "$r/hello-verify" 16fefd 0000 000000000000 0017 \
    03 00000b 0000 000000 00000b fefd 08 0102030405060708
# A last flight: ChangeCipherSpec (epoch 0) and an encrypted Finished (epoch 1) in one datagram.
hex "$r/ccs-finished" 14fefd 0000 000000000005 0001 01 \
    16fefd 0001 000000000000 0028 $(printf '%02x' $(seq 1 40))
# Application data (epoch 1, sequence 7: explicit nonce, 3 bytes, 8-byte tag), then an
# alert (epoch 1) in the same datagram.
hex "$r/app-data-alert" 17fefd 0001 000000000007 0013 0001000000000007 a1a2a3 $(printf 'b%.0s0' $(seq 8)) \
    15fefd 0001 000000000008 0012 0001000000000008 0102 $(printf 'c%.0s0' $(seq 8))
# Truncated: a header alone without its fragment, 12 bytes of a header, two records and the
# header of a third whose fragment is missing.
hex "$r/header-only" 17fefd 0001 000000000001 0004
hex "$r/short-header" 17fefd 0001 000000000001 00
hex "$r/two-and-a-half" 17fefd 0001 000000000007 0001 09 17fefd 0001 000000000008 0001 09 \
    17fefd 0001 000000000009 0005 0102
# An empty epoch-0 handshake record followed by a byte 1 (the start of no record).
hex "$r/empty-handshake" 16fefd 0000 000000000000 0000 01

d=corpus/dps_protocol
mkdir -p "$d"
# {"time": 1750000000}
hex "$d/time" a1 6474696d65 1a684ee180
# {"csr": "-----BEGIN"}
hex "$d/csr" a1 63637372 6a2d2d2d2d2d424547494e
# {"acls": [{"subject": {"role": "admin"}, "resources": ["*"], "permission": 31}]}
hex "$d/acls" a1 6461636c73 81 a3 677375626a656374 a1 64726f6c65 6561646d696e \
    697265736f7572636573 81 612a 6a7065726d697373696f6e 181f
# {"hub-id": "h", "endpoint": "coaps+tcp://h", "authorization-code": "c"}
hex "$d/hub" a3 666875622d6964 6168 68656e64706f696e74 6d636f6170732b7463703a2f2f68 \
    72617574686f72697a6174696f6e2d636f6465 6163
