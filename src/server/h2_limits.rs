//! The HTTP/2 server limits every client connection gets, set in `conn::builder()`
//! rather than inherited from hyper's and h2's defaults, which change between
//! releases. Each bounds what one connection can make the proxy hold or do; the
//! abuse each one answers is tested in tests/h2_abuse.rs.
//!
//! Compared with nginx's `http2_*` directives and HAProxy's `tune.h2.*` settings.
//! What hyper 1.x does not let a server set (h2 keeps its own value) is listed in
//! README, "HTTP/2 limits".

use std::time::Duration;

/// SETTINGS_MAX_CONCURRENT_STREAMS: requests one connection may have open at once;
/// streams past it are refused (RST_STREAM REFUSED_STREAM) before any work is
/// done for them. nginx's `http2_max_concurrent_streams` default (HAProxy's
/// `tune.h2.fe.max-concurrent-streams` is 100; hyper's default 200), above the 100
/// RFC 9113 recommends as a minimum, which browsers and gRPC clients assume.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// Streams the client resets before the proxy has taken them up (they wait in
/// h2's accept queue) that may pile up; one more and the connection gets GOAWAY
/// ENHANCE_YOUR_CALM. This is the defence against rapid reset (CVE-2023-44487):
/// a reset stream no longer counts towards `H2_MAX_CONCURRENT_STREAMS`, so without
/// it a client could open and cancel streams without limit, each costing the
/// proxy a stream's bookkeeping. Streams the worker has already started are not
/// counted (their cancellation stops their work), so an honest client cancelling
/// requests it no longer needs does not reach it. 20 is h2's value since the CVE
/// (hyper leaves it to h2); nginx's fix caps new streams per read at twice
/// `http2_max_concurrent_streams` instead.
pub(super) const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the proxy itself may reset because the client broke the protocol on
/// them (refused past `H2_MAX_CONCURRENT_STREAMS`, malformed headers, flow-control
/// errors) over the connection's life; one more and the connection gets GOAWAY
/// ENHANCE_YOUR_CALM (RUSTSEC-2024-0003: without a cap a client provokes resets
/// without end). Twice the stream limit: an honest client overshoots the limit at
/// most once, with the streams it opened before our SETTINGS arrived, and never
/// sends malformed requests by the hundred. hyper's and h2's default is 1024, in
/// the spirit of HAProxy's `tune.h2.fe.glitches-threshold`, which counts such
/// protocol glitches per connection.
pub(super) const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 2 * H2_MAX_CONCURRENT_STREAMS as usize;

// SETTINGS_MAX_HEADER_LIST_SIZE is the listener's `max_header_size`
// (`config::DEFAULT_MAX_HEADER_SIZE`, 64 KiB, says why), so both protocols take
// heads of about the same size: the decoded names and values, plus 32 octets a
// field as RFC 9113 counts them. A larger head is answered 431, one four times
// larger ends the connection. It also bounds a CONTINUATION flood: h2 allows a
// header block only as many frames as this size needs (at least 5; 64 KiB / 16 KiB
// + 25 %), then sends GOAWAY ENHANCE_YOUR_CALM. hyper's default is 16 KiB,
// nginx's `large_client_header_buffers` 32 KiB (4 × 8k, also its HTTP/2 limit),
// HAProxy's `tune.bufsize` 16 KiB for the whole head.

/// SETTINGS_MAX_FRAME_SIZE: the largest frame payload the proxy reads, so the
/// largest single buffer a frame needs before it is processed. RFC 9113's minimum
/// and initial value, hyper's default and HAProxy's `tune.h2.max-frame-size`
/// default; larger frames save little when DATA is forwarded chunk by chunk.
pub(super) const H2_MAX_FRAME_SIZE: u32 = 16 * 1024;

/// SETTINGS_INITIAL_WINDOW_SIZE: request body one stream may send ahead of the
/// proxy forwarding it. 1 MiB (hyper's default) lets one upload run at 80 Mbit/s
/// over a 100 ms round trip; RFC 9113's 64 KiB (nginx's `http2_body_preread_size`,
/// HAProxy's `tune.h2.initial-window-size`) would cap it at about 5 Mbit/s there.
/// Setting the windows also leaves hyper's adaptive (BDP) window off, which would
/// let them grow far past these bounds.
pub(super) const H2_INITIAL_STREAM_WINDOW: u32 = 1024 * 1024;

/// The connection's flow-control window: request body bytes one connection may
/// have buffered in the proxy across all its streams, whatever their number. The
/// same as a stream's (hyper's default), so a single upload may use it whole.
pub(super) const H2_INITIAL_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Response bytes the proxy buffers per stream for a client that does not take
/// them (its flow-control window open, its socket not read). Across
/// `H2_MAX_CONCURRENT_STREAMS` streams that is 8 MiB per connection, where hyper's
/// default of 400 KiB allowed 50 MiB. 64 KiB still keeps a fast client's socket
/// fed (hyper hands h2 a whole upstream chunk whenever any room is left), and is
/// of the order of nginx's `proxy_buffers` (8 × 4k/8k) plus `http2_chunk_size`.
pub(super) const H2_MAX_SEND_BUF_SIZE: usize = 64 * 1024;

/// After this long without a frame from the client, the proxy sends it a PING.
/// A client that vanished without a FIN (a NAT or mobile network dropping it), or
/// that completed the handshake and says nothing, would otherwise hold its
/// connection and its streams for ever: hyper has no idle timeout for HTTP/2, and
/// its keep-alive PINGs are off by default. 20 s is the upstream pool's interval
/// and grpc-go's keep-alive timeout.
///
/// It does not end a client that stops reading while the proxy has bytes queued
/// for it (a throttled SETTINGS or PING flood): hyper's GOAWAY on the timeout
/// waits behind those bytes, so the connection stays open (idle, costing no
/// CPU) until the client reads or goes; only a write timeout around the socket,
/// as nginx's `send_timeout`, would close it.
pub(super) const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// How long the PING's acknowledgement may take before the connection is closed:
/// a dead client is gone within 40 s of its last frame, sooner than nginx's
/// `send_timeout` and `client_body_timeout` (60 s) notice a stalled one. hyper's
/// default.
pub(super) const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
