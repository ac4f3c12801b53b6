//! Repairs the HTTP/2 `:authority` pseudo-header sent by old CSI drivers.
//!
//! # Why this exists
//!
//! Secrets Store CSI Driver v1.0–v1.5.x dial providers with grpc-go v1.56.3,
//! which sends the Unix socket *path* as `:authority`
//! (`/var/run/secrets-store-csi-providers/vault.sock`). `h2`, under
//! tonic/hyper, parses `:authority` with `http::uri::Authority` and resets
//! every such stream with `PROTOCOL_ERROR`; it has no option to relax that.
//! Driver v1.6 sends `localhost`. Rather than patch `h2`, [`AuthorityRepair`]
//! sits between the accepted socket and the HTTP/2 server and rewrites an
//! invalid `:authority` in the client's header blocks to `localhost` before
//! `h2` sees them. Only the client→server direction is touched.
//!
//! # How HPACK consistency is kept
//!
//! HPACK is stateful: the client's encoder adds entries to a dynamic table
//! and later refers to them by index, and the server's decoder must see the
//! same sequence of blocks to resolve those indices. The adapter therefore
//! runs its own decoder over *every* header block, in order, so it always
//! knows the client's table. Then:
//!
//! * While no block has needed a rewrite, the original bytes are forwarded,
//!   so `h2`'s decoder sees exactly what ours saw and both stay equal to the
//!   client's table. Driver v1.6 connections stay in this mode for good.
//! * From the first block that needs a rewrite on, every block is
//!   re-encoded from its decoded header list using only never-indexed
//!   literals (static-table name indices are fine; the static table never
//!   changes). `h2`'s dynamic table is thereby frozen and nothing we send
//!   refers to it, while our decoder keeps following the client's table,
//!   including dynamic table size updates, which are not forwarded.
//!
//! # Errors
//!
//! Before the first rewrite, anything the adapter cannot make sense of (an
//! HPACK decoding error, a non-HTTP/2 preface, a frame sequence that breaks
//! header-block rules) is forwarded unchanged and the connection switches to
//! plain pass-through: `h2` sees the very bytes the client sent and reports
//! the error to the client as it would without the adapter. Once a rewrite
//! has happened that is no longer safe: `h2`'s table no longer matches the
//! client's, so forwarding raw bytes could make `h2` resolve indices to the
//! wrong headers. The read then fails with [`io::ErrorKind::InvalidData`],
//! which closes the connection. A header block larger than
//! `MAX_HEADER_BLOCK` (256 KiB) always fails the read, since it would have
//! to be buffered whole. A block with more than `MAX_HUFFMAN_STRINGS` (256)
//! Huffman-coded strings is not decoded (loona-hpack is slow at those); it
//! is treated like a decoding error.
//!
//! # Use
//!
//! Wrap each accepted connection before tonic sees it:
//!
//! ```text
//! let incoming = UnixListenerStream::new(listener).map_ok(AuthorityRepair::new);
//! Server::builder().add_service(svc).serve_with_incoming_shutdown(incoming, signal)
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Largest header block buffered, counted as the raw bytes of its HEADERS
/// and CONTINUATION frames (frame headers included, so a flood of empty
/// CONTINUATION frames is bounded too). hyper's server accepts a decoded
/// header list of 16 KiB by default, so a real client never comes close.
/// It is lower than it could be because loona-hpack's Huffman decoding is
/// slow (about 65 ms for 256 KiB) and runs inside `poll_read`.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Most Huffman-coded strings decoded in one header block. loona-hpack
/// builds a fresh Huffman decoding table for every such string (about
/// 30 µs each), so without a bound a block of two-byte empty strings would
/// cost seconds of CPU. A grpc-go request has about ten; a list that h2
/// accepts under hyper's 16 KiB default holds at most 512 fields.
const MAX_HUFFMAN_STRINGS: usize = 256;

/// Largest re-encoded header block we are willing to build. The re-encoding
/// is about as large as the decoded list, which HPACK can make far larger
/// than the block that carried it (one byte can repeat a 4 KiB table entry).
const MAX_REENCODED_BLOCK: usize = 1 << 20;

/// Frame payload size used for re-emitted header blocks: the protocol's
/// minimum SETTINGS_MAX_FRAME_SIZE, so it is valid whatever the server set.
const EMIT_MAX_FRAME: usize = 16_384;

/// Dynamic table limit for our decoder. It matches the server's decoder: h2
/// defaults to 4096 and neither hyper nor tonic advertise another
/// SETTINGS_HEADER_TABLE_SIZE. Without a limit, a size update could let the
/// client grow our table without bound.
const HPACK_TABLE_LIMIT: usize = 4096;

/// How much to read at once when bytes must be held back internally.
const READ_CHUNK: usize = 16 * 1024;

/// Scratch buffers above this size are released after use, so one large
/// header block does not pin its memory for the life of the connection.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What driver v1.6 sends, and so what `h2` is known to accept.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// Where the scanner stands in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Inside the connection preface; holds how many bytes matched so far.
    Preface(usize),
    /// At a frame boundary.
    FrameHeader,
    /// Inside the payload of a pass-through frame; holds the bytes left.
    Payload(usize),
    /// `held` starts with the HEADERS frame of a header block.
    Block,
    /// Everything passes through untouched from here on.
    Off,
}

/// Parse progress of the header block at the start of `held`, kept so that
/// frames already looked at are not parsed again when more bytes arrive.
#[derive(Debug, Default)]
struct BlockState {
    /// Bytes of `held` that form complete frames of this block.
    parsed: usize,
    /// Header block fragment of the HEADERS frame, as a range of `held`;
    /// decoding straight from it avoids a copy in the common single-frame
    /// case.
    first_fragment: std::ops::Range<usize>,
    /// Whether `fragments` holds the concatenated fragments (the block
    /// spans CONTINUATION frames).
    multi: bool,
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// I/O adapter that rewrites an invalid HTTP/2 `:authority` sent by the
/// client to `localhost`, so `h2` accepts requests from CSI drivers older
/// than v1.6. See the [module documentation](self) for how it keeps HPACK
/// state consistent and how it treats errors.
///
/// Reads return the repaired client→server bytes; writes go to the wrapped
/// I/O unchanged.
pub struct AuthorityRepair<IO> {
    io: IO,
    scan: Scan,
    /// Client bytes read but not yet scanned or delivered: a partial frame
    /// header, or a header block being collected (and whatever followed it
    /// in the same read).
    held: BytesMut,
    /// Bytes ready for the reader.
    out: BytesMut,
    block: BlockState,
    /// Concatenated fragments of a block that spans several frames.
    fragments: Vec<u8>,
    /// Re-encoded header block, reused between blocks.
    encoded: Vec<u8>,
    /// Tracks the client encoder's dynamic table.
    decoder: Decoder<'static>,
    /// Set once the first block was re-encoded; from then on every block is.
    rewriting: bool,
    eof: bool,
}

impl<IO> AuthorityRepair<IO> {
    /// Wraps a freshly accepted connection; must be applied before any byte
    /// of it has been read, since the adapter expects the connection
    /// preface first.
    pub fn new(io: IO) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_LIMIT);
        Self {
            io,
            scan: Scan::Preface(0),
            held: BytesMut::new(),
            out: BytesMut::new(),
            block: BlockState::default(),
            fragments: Vec::new(),
            encoded: Vec::new(),
            decoder,
            rewriting: false,
            eof: false,
        }
    }

    /// The wrapped I/O object, e.g. for peer credentials.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Handles something the adapter cannot follow. Before any rewrite the
    /// connection is handed over to `h2` untouched (it sees exactly what the
    /// client sent and can report the problem); after one, `h2`'s HPACK
    /// table no longer matches the client's, so the connection must end.
    fn give_up(&mut self, why: &'static str) -> io::Result<()> {
        if self.rewriting {
            tracing::warn!(why, "closing HTTP/2 connection after :authority repair");
            return Err(invalid_data(why));
        }
        tracing::debug!(
            why,
            "stopping :authority repair; passing the connection through"
        );
        self.scan = Scan::Off;
        Ok(())
    }

    /// Works on `held`. Returns `Ok(true)` when it made progress (bytes moved
    /// to `out` or the state changed) and `Ok(false)` when more client bytes
    /// are needed.
    fn process_held(&mut self) -> io::Result<bool> {
        if self.scan != Scan::Block {
            let n = scan(&mut self.scan, self.rewriting, &self.held)?;
            if n > 0 {
                // `out` is empty whenever this runs, so this takes the bytes
                // over without copying.
                let chunk = self.held.split_to(n);
                self.out.unsplit(chunk);
                return Ok(true);
            }
            if self.scan != Scan::Block {
                return Ok(false);
            }
        }
        self.process_block()
    }

    /// Collects the header block at the start of `held` and, once complete,
    /// queues it (original or re-encoded) in `out`.
    fn process_block(&mut self) -> io::Result<bool> {
        loop {
            let at = self.block.parsed;
            if self.held.len() - at < FRAME_HEADER_LEN {
                return Ok(false);
            }
            let head = FrameHead::parse(&self.held[at..at + FRAME_HEADER_LEN]);
            let first = at == 0;
            if !first && (head.ty != TYPE_CONTINUATION || head.stream_id != self.block.stream_id) {
                // RFC 9113 §6.10: a header block must be contiguous.
                self.give_up("header block interrupted by another frame")?;
                self.block = BlockState::default();
                return Ok(true);
            }
            let end = at + FRAME_HEADER_LEN + head.len;
            if end > MAX_HEADER_BLOCK {
                tracing::warn!(limit = MAX_HEADER_BLOCK, "HTTP/2 header block too large");
                return Err(invalid_data("header block too large"));
            }
            if self.held.len() < end {
                return Ok(false);
            }
            let payload = at + FRAME_HEADER_LEN..end;
            if first {
                let Some((fragment, priority)) =
                    split_headers_payload(&self.held[payload.clone()], head.flags)
                else {
                    self.give_up("invalid padding or priority in HEADERS frame")?;
                    self.block = BlockState::default();
                    return Ok(true);
                };
                self.block.first_fragment =
                    payload.start + fragment.start..payload.start + fragment.end;
                self.block.priority = priority;
                self.block.stream_id = head.stream_id;
                self.block.end_stream = head.flags & FLAG_END_STREAM != 0;
                self.block.multi = false;
            } else {
                if !self.block.multi {
                    self.fragments.clear();
                    self.fragments
                        .extend_from_slice(&self.held[self.block.first_fragment.clone()]);
                    self.block.multi = true;
                }
                self.fragments.extend_from_slice(&self.held[payload]);
            }
            self.block.parsed = end;
            if head.flags & FLAG_END_HEADERS != 0 {
                break;
            }
        }
        let result = self.finish_block();
        self.release_large_scratch();
        result.map(|()| true)
    }

    /// Decodes the complete block at the start of `held` and decides whether
    /// to forward it as is or re-encoded.
    fn finish_block(&mut self) -> io::Result<()> {
        let block_len = self.block.parsed;
        let fragment: &[u8] = if self.block.multi {
            &self.fragments
        } else {
            &self.held[self.block.first_fragment.clone()]
        };
        if too_many_huffman_strings(fragment) {
            tracing::warn!(
                limit = MAX_HUFFMAN_STRINGS,
                "too many Huffman-coded strings in header block"
            );
            // Our decoder never sees this block, so it cannot follow the
            // client's table any more.
            self.give_up("too many Huffman-coded strings in header block")?;
            self.block = BlockState::default();
            return Ok(());
        }
        self.encoded.clear();

        let rewriting = self.rewriting;
        let encoded = &mut self.encoded;
        let mut bad_authority = false;
        // Before the first rewrite, only the pseudo-headers are recorded
        // speculatively: they come first (RFC 9113 §8.3) and include
        // `:authority`, so the common pass-through path copies just a few
        // short fields. An invalid `:authority` after a regular field is
        // malformed anyway; that block is forwarded for `h2` to reject.
        let mut recording = true;
        let mut unrepairable = false;
        let result = self.decoder.decode_with_cb(fragment, |name, value| {
            let is_pseudo = name.first() == Some(&b':');
            if !is_pseudo && !rewriting && !bad_authority {
                recording = false;
            }
            let mut value: &[u8] = &value;
            if &*name == b":authority" && http::uri::Authority::try_from(value).is_err() {
                bad_authority = true;
                unrepairable |= !recording;
                value = REPLACEMENT_AUTHORITY;
            }
            if recording && !unrepairable {
                if encoded.len() + name.len() + value.len() + 16 > MAX_REENCODED_BLOCK {
                    unrepairable = true;
                } else {
                    encode_never_indexed(encoded, &name, value);
                }
            }
        });

        if let Err(err) = result {
            tracing::debug!(?err, "HPACK decoding failed");
            // Our table is now unknown, so no later block can be followed.
            self.give_up("HPACK decoding error")?;
            self.block = BlockState::default();
            return Ok(());
        }

        if !self.rewriting && !bad_authority {
            self.forward_original(block_len);
            return Ok(());
        }
        if unrepairable {
            if self.rewriting {
                return Err(invalid_data("re-encoded header block too large"));
            }
            // The tables are still in step with the client, so forwarding
            // the original is safe; `h2` rejects the stream itself.
            tracing::debug!("cannot repair :authority in this header block; forwarding it");
            self.forward_original(block_len);
            return Ok(());
        }
        if !self.rewriting {
            tracing::debug!(
                "repairing invalid HTTP/2 :authority from client (CSI driver before v1.6); \
                 re-encoding header blocks from now on"
            );
            self.rewriting = true;
        }
        emit_header_block(
            &mut self.out,
            &self.encoded,
            self.block.stream_id,
            self.block.end_stream,
            self.block.priority,
        );
        self.held.advance(block_len);
        self.block = BlockState::default();
        self.scan = Scan::FrameHeader;
        Ok(())
    }

    fn release_large_scratch(&mut self) {
        if self.encoded.capacity() > KEEP_CAPACITY {
            self.encoded = Vec::new();
        }
        if self.fragments.capacity() > KEEP_CAPACITY {
            self.fragments = Vec::new();
        }
    }

    fn forward_original(&mut self, block_len: usize) {
        let raw = self.held.split_to(block_len);
        self.out.unsplit(raw);
        self.block = BlockState::default();
        self.scan = Scan::FrameHeader;
    }
}

impl<IO: AsyncRead + Unpin> AuthorityRepair<IO> {
    /// Reads more client bytes into `held`.
    fn poll_fill_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held.is_empty() && self.held.capacity() > KEEP_CAPACITY {
            self.held = BytesMut::new();
        }
        let len = self.held.len();
        // Zero-filling keeps this free of `unsafe`; it only happens while
        // bytes are held back, not on the direct pass-through path.
        self.held.resize(len + READ_CHUNK, 0);
        let mut buf = ReadBuf::new(&mut self.held[len..]);
        let res = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.held.truncate(len + n);
        ready!(res)?;
        if n == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(()))
    }
}

/// Yields the client's bytes with every header block checked and, where
/// needed, re-encoded. Other frames are delivered as read, mostly straight
/// into the caller's buffer.
impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for AuthorityRepair<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.out.is_empty() {
                let n = buf.remaining().min(this.out.len());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if !this.held.is_empty() || this.scan == Scan::Block {
                if this.process_held()? {
                    continue;
                }
                if this.eof {
                    // An incomplete frame at EOF could not be acted on by
                    // the server either.
                    this.held.clear();
                    return Poll::Ready(Ok(()));
                }
                ready!(this.poll_fill_held(cx))?;
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }

            // Nothing held back: read straight into the caller's buffer and
            // scan in place, so pass-through bytes are copied only once.
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            let filled = buf.filled().len();
            if filled == before {
                this.eof = true;
                return Poll::Ready(Ok(()));
            }
            let n = scan(&mut this.scan, this.rewriting, &buf.filled()[before..])?;
            if before + n < filled {
                this.held.extend_from_slice(&buf.filled()[before + n..]);
                buf.set_filled(before + n);
            }
            if n > 0 {
                return Poll::Ready(Ok(()));
            }
            // Returning now with nothing filled would signal EOF.
        }
    }
}

/// The server's bytes need no repair and go to the wrapped I/O unchanged.
impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Lets tonic hand the peer's Unix credentials to request handlers, as it
/// does for a bare `UnixStream`.
#[cfg(unix)]
impl tonic::transport::server::Connected for AuthorityRepair<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}

fn invalid_data(why: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 :authority repair: {why}"),
    )
}

/// A parsed 9-byte frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    ty: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHead {
    /// `b` must hold at least [`FRAME_HEADER_LEN`] bytes.
    fn parse(b: &[u8]) -> Self {
        Self {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            ty: b[3],
            flags: b[4],
            stream_id: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Advances the scanner over `data` and returns how many of its leading
/// bytes may be delivered as they are. Stops before a partial frame header
/// (it is needed whole) and before a HEADERS frame (its block must be
/// collected first).
fn scan(state: &mut Scan, rewriting: bool, data: &[u8]) -> io::Result<usize> {
    let mut i = 0;
    loop {
        match state {
            Scan::Off => return Ok(data.len()),
            Scan::Block => return Ok(i),
            Scan::Preface(matched) => {
                let expected = &PREFACE[*matched..];
                let k = expected.len().min(data.len() - i);
                if data[i..i + k] != expected[..k] {
                    // Not HTTP/2 with prior knowledge: leave it to the server.
                    *state = Scan::Off;
                    return Ok(data.len());
                }
                i += k;
                *matched += k;
                if *matched < PREFACE.len() {
                    return Ok(i);
                }
                *state = Scan::FrameHeader;
            }
            Scan::Payload(left) => {
                let k = (*left).min(data.len() - i);
                i += k;
                *left -= k;
                if *left > 0 {
                    return Ok(i);
                }
                *state = Scan::FrameHeader;
            }
            Scan::FrameHeader => {
                if data.len() - i < FRAME_HEADER_LEN {
                    return Ok(i);
                }
                let head = FrameHead::parse(&data[i..i + FRAME_HEADER_LEN]);
                match head.ty {
                    TYPE_HEADERS => {
                        *state = Scan::Block;
                        return Ok(i);
                    }
                    // A CONTINUATION outside a block, or a PUSH_PROMISE
                    // (whose block we would otherwise have to follow) from
                    // a client, is a connection error for the server.
                    TYPE_CONTINUATION | TYPE_PUSH_PROMISE => {
                        if rewriting {
                            return Err(invalid_data("unexpected CONTINUATION or PUSH_PROMISE"));
                        }
                        *state = Scan::Off;
                        return Ok(data.len());
                    }
                    _ => {
                        i += FRAME_HEADER_LEN;
                        *state = Scan::Payload(head.len);
                    }
                }
            }
        }
    }
}

/// Counts the Huffman-coded strings of an HPACK block without decoding it,
/// by walking the field representations (RFC 7541 §6) and skipping string
/// bodies by length. A block too malformed to walk is left to the decoder,
/// which reports it.
fn too_many_huffman_strings(block: &[u8]) -> bool {
    let mut count = 0;
    let mut i = 0;
    while i < block.len() {
        let first = block[i];
        let name_prefix = if first & 0x80 != 0 {
            // Indexed field: no strings.
            if skip_int(block, &mut i, 7).is_none() {
                return false;
            }
            continue;
        } else if first & 0x40 != 0 {
            6
        } else if first & 0x20 != 0 {
            // Dynamic table size update: no strings.
            if skip_int(block, &mut i, 5).is_none() {
                return false;
            }
            continue;
        } else {
            4
        };
        let Some(name_index) = skip_int(block, &mut i, name_prefix) else {
            return false;
        };
        let strings = if name_index == 0 { 2 } else { 1 };
        for _ in 0..strings {
            let Some(&head) = block.get(i) else {
                return false;
            };
            if head & 0x80 != 0 {
                count += 1;
                if count > MAX_HUFFMAN_STRINGS {
                    return true;
                }
            }
            let Some(len) = skip_int(block, &mut i, 7) else {
                return false;
            };
            i = i.saturating_add(len);
        }
    }
    false
}

/// Reads an HPACK integer at `*i` and moves past it; `None` if truncated or
/// longer than any valid one (loona-hpack allows at most 5 bytes too).
fn skip_int(b: &[u8], i: &mut usize, prefix_bits: u8) -> Option<usize> {
    let max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(*b.get(*i)?) & max;
    *i += 1;
    if value < max {
        return Some(value);
    }
    for shift in [0, 7, 14, 21] {
        let byte = *b.get(*i)?;
        *i += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Splits a HEADERS payload into its header block fragment (as a range of
/// `payload`) and priority fields. `None` when padding or priority do not
/// fit, which the server treats as a protocol error.
fn split_headers_payload(
    payload: &[u8],
    flags: u8,
) -> Option<(std::ops::Range<usize>, Option<[u8; 5]>)> {
    let mut start = 0;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*payload.first()?);
        start = 1;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let fields: [u8; 5] = payload.get(start..start + 5)?.try_into().ok()?;
        priority = Some(fields);
        start += 5;
    }
    let end = payload.len().checked_sub(pad)?;
    if end < start {
        return None;
    }
    Some((start..end, priority))
}

/// Writes `block` as a HEADERS frame plus as many CONTINUATION frames as
/// needed. Padding is dropped (it only hides lengths from observers of the
/// connection, and this hop is in-process); the priority fields are kept.
fn emit_header_block(
    out: &mut BytesMut,
    block: &[u8],
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
) {
    let prio_len = if priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = block.split_at(block.len().min(EMIT_MAX_FRAME - prio_len));
    out.reserve(block.len() + (block.len() / EMIT_MAX_FRAME + 1) * FRAME_HEADER_LEN + prio_len);

    let mut flags = 0;
    if end_stream {
        flags |= FLAG_END_STREAM;
    }
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    put_frame_head(out, prio_len + first.len(), TYPE_HEADERS, flags, stream_id);
    if let Some(fields) = priority {
        out.extend_from_slice(&fields);
    }
    out.extend_from_slice(first);

    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(EMIT_MAX_FRAME));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame_head(out, chunk.len(), TYPE_CONTINUATION, flags, stream_id);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn put_frame_head(out: &mut BytesMut, len: usize, ty: u8, flags: u8, stream_id: u32) {
    let len = len as u32; // at most EMIT_MAX_FRAME
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[ty, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// Appends a "literal header field never indexed" (RFC 7541 §6.2.3): it
/// leaves the receiver's dynamic table alone and keeps the client's
/// sensitivity marking if it had one. Strings are sent raw, not Huffman
/// coded: the hop is local, so size matters less than simplicity.
fn encode_never_indexed(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    match static_name_index(name) {
        Some(index) => put_int(dst, index, 4, 0x10),
        None => {
            dst.push(0x10);
            put_string(dst, name);
        }
    }
    put_string(dst, value);
}

fn put_string(dst: &mut Vec<u8>, s: &[u8]) {
    put_int(dst, s.len(), 7, 0x00);
    dst.extend_from_slice(s);
}

/// HPACK integer with an N-bit prefix (RFC 7541 §5.1).
fn put_int(dst: &mut Vec<u8>, mut value: usize, prefix_bits: u8, first_bits: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        dst.push(first_bits | value as u8);
        return;
    }
    dst.push(first_bits | max as u8);
    value -= max;
    while value >= 128 {
        dst.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    dst.push(value as u8);
}

/// Index of the first HPACK static-table entry with this name (RFC 7541
/// Appendix A), to shorten re-encoded fields without touching any dynamic
/// table.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::encoder::encode_integer_into;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Field = (Vec<u8>, Vec<u8>);

    /// What drivers v1.0–v1.5.x send.
    const SOCKET_PATH: &[u8] = b"/var/run/secrets-store-csi-providers/vault.sock";

    // ---- HPACK and frame builders, independent of the code under test ----

    fn int(value: usize, prefix: u8, first_bits: u8) -> Vec<u8> {
        let mut v = Vec::new();
        encode_integer_into(value, prefix, first_bits, &mut v).unwrap();
        v
    }

    fn raw_str(s: &[u8]) -> Vec<u8> {
        let mut v = int(s.len(), 7, 0x00);
        v.extend_from_slice(s);
        v
    }

    /// HPACK Huffman codes (RFC 7541 Appendix B) for the characters the
    /// tests use; loona-hpack cannot Huffman-encode.
    fn huffman_code(c: u8) -> (u32, u8) {
        match c {
            b'0' => (0x0, 5),
            b'1' => (0x1, 5),
            b'2' => (0x2, 5),
            b'a' => (0x3, 5),
            b'c' => (0x4, 5),
            b'e' => (0x5, 5),
            b'i' => (0x6, 5),
            b'o' => (0x7, 5),
            b's' => (0x8, 5),
            b't' => (0x9, 5),
            b'-' => (0x16, 6),
            b'.' => (0x17, 6),
            b'/' => (0x18, 6),
            b'3' => (0x19, 6),
            b'5' => (0x1b, 6),
            b'6' => (0x1c, 6),
            b'd' => (0x24, 6),
            b'h' => (0x27, 6),
            b'g' => (0x26, 6),
            b'l' => (0x28, 6),
            b'n' => (0x2a, 6),
            b'p' => (0x2b, 6),
            b'r' => (0x2c, 6),
            b'u' => (0x2d, 6),
            b'k' => (0x75, 7),
            b'v' => (0x77, 7),
            _ => panic!("no Huffman code in the test table for {:?}", c as char),
        }
    }

    fn huff_str(s: &[u8]) -> Vec<u8> {
        let mut bits: u64 = 0;
        let mut nbits = 0u32;
        let mut coded = Vec::new();
        for &c in s {
            let (code, len) = huffman_code(c);
            bits = (bits << len) | u64::from(code);
            nbits += u32::from(len);
            while nbits >= 8 {
                coded.push((bits >> (nbits - 8)) as u8);
                nbits -= 8;
            }
        }
        if nbits > 0 {
            // Pad with the most significant bits of EOS (all ones).
            let pad = 8 - nbits;
            coded.push(((bits << pad) as u8) | ((1u8 << pad) - 1));
        }
        let decoded = loona_hpack::huffman::HuffmanDecoder::new()
            .decode(&coded)
            .unwrap();
        assert_eq!(decoded, s, "test Huffman table is wrong");
        let mut v = int(coded.len(), 7, 0x80);
        v.extend_from_slice(&coded);
        v
    }

    fn indexed(i: usize) -> Vec<u8> {
        int(i, 7, 0x80)
    }

    /// Literal with incremental indexing, name from the table.
    fn lit_inc(name_index: usize, value: Vec<u8>) -> Vec<u8> {
        let mut v = int(name_index, 6, 0x40);
        v.extend(value);
        v
    }

    /// Literal with incremental indexing, new name.
    fn lit_inc_new(name: Vec<u8>, value: Vec<u8>) -> Vec<u8> {
        let mut v = vec![0x40];
        v.extend(name);
        v.extend(value);
        v
    }

    fn size_update(n: usize) -> Vec<u8> {
        int(n, 5, 0x20)
    }

    fn block(parts: Vec<Vec<u8>>) -> Vec<u8> {
        parts.concat()
    }

    fn frame(ty: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        v.extend_from_slice(&[ty, flags]);
        v.extend_from_slice(&stream_id.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn headers(stream_id: u32, end_stream: bool, block: &[u8]) -> Vec<u8> {
        let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
        frame(TYPE_HEADERS, flags, stream_id, block)
    }

    fn settings() -> Vec<u8> {
        frame(0x4, 0, 0, &[0, 0x4, 0, 0x40, 0, 0]) // INITIAL_WINDOW_SIZE
    }

    fn data(stream_id: u32, payload: &[u8]) -> Vec<u8> {
        frame(0x0, FLAG_END_STREAM, stream_id, payload)
    }

    fn f(name: &str, value: &[u8]) -> Field {
        (name.as_bytes().to_vec(), value.to_vec())
    }

    // ---- running the adapter over scripted input ----

    /// Hands out `chunk` bytes per read and, if `pending`, returns
    /// `Pending` before every read to exercise wake-ups.
    struct Scripted {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        pending: bool,
        pend_next: bool,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pend_next {
                self.pend_next = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.pend_next = self.pending;
            let n = self
                .chunk
                .min(self.data.len() - self.pos)
                .min(buf.remaining());
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn run(
        input: &[u8],
        chunk: usize,
        read_size: usize,
        pending: bool,
    ) -> io::Result<Vec<u8>> {
        let io = Scripted {
            data: input.to_vec(),
            pos: 0,
            chunk,
            pending,
            pend_next: pending,
        };
        let mut adapter = AuthorityRepair::new(io);
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = adapter.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// (bytes per underlying read, caller buffer size, return Pending first)
    const SPLITS: &[(usize, usize, bool)] = &[
        (1, 1, false),
        (1, 8192, true),
        (8192, 1, false),
        (3, 7, true),
        (9, 10, false),
        (17, 5, false),
        (1 << 20, 1 << 20, false),
    ];

    /// Runs every split and checks they all produce the same bytes.
    async fn run_all(input: &[u8]) -> Vec<u8> {
        let mut first: Option<Vec<u8>> = None;
        for &(chunk, read_size, pending) in SPLITS {
            let out = run(input, chunk, read_size, pending)
                .await
                .unwrap_or_else(|e| panic!("split {chunk}/{read_size}: {e}"));
            match &first {
                None => first = Some(out),
                Some(f) => assert!(f == &out, "split {chunk}/{read_size} gave different output"),
            }
        }
        first.unwrap()
    }

    async fn run_all_err(input: &[u8]) -> io::Error {
        let mut last = None;
        for &(chunk, read_size, pending) in SPLITS {
            let err = run(input, chunk, read_size, pending)
                .await
                .expect_err("the read should fail");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            last = Some(err);
        }
        last.unwrap()
    }

    // ---- parsing the adapter's output, independently of the adapter ----

    #[derive(Debug, PartialEq)]
    enum Event {
        /// A header block: stream, END_STREAM, priority fields, HPACK bytes.
        Headers {
            stream_id: u32,
            end_stream: bool,
            priority: Option<Vec<u8>>,
            block: Vec<u8>,
        },
        /// Any other frame, byte for byte.
        Frame(Vec<u8>),
    }

    fn events(bytes: &[u8]) -> Vec<Event> {
        assert_eq!(&bytes[..24], PREFACE);
        let mut i = 24;
        let mut events = Vec::new();
        // (stream, END_STREAM, priority, fragments so far)
        type Open = (u32, bool, Option<Vec<u8>>, Vec<u8>);
        let mut open: Option<Open> = None;
        while i < bytes.len() {
            let len = u32::from_be_bytes([0, bytes[i], bytes[i + 1], bytes[i + 2]]) as usize;
            let (ty, flags) = (bytes[i + 3], bytes[i + 4]);
            let sid = u32::from_be_bytes(bytes[i + 5..i + 9].try_into().unwrap());
            let payload = &bytes[i + 9..i + 9 + len];
            match ty {
                TYPE_HEADERS => {
                    assert!(open.is_none());
                    let mut p = payload;
                    let mut pad = 0;
                    if flags & FLAG_PADDED != 0 {
                        pad = p[0] as usize;
                        p = &p[1..];
                    }
                    let mut prio = None;
                    if flags & FLAG_PRIORITY != 0 {
                        prio = Some(p[..5].to_vec());
                        p = &p[5..];
                    }
                    let frag = p[..p.len() - pad].to_vec();
                    open = Some((sid, flags & FLAG_END_STREAM != 0, prio, frag));
                }
                TYPE_CONTINUATION => {
                    let o = open.as_mut().expect("CONTINUATION without HEADERS");
                    assert_eq!(o.0, sid);
                    o.3.extend_from_slice(payload);
                }
                _ => {
                    assert!(open.is_none(), "frame inside a header block");
                    events.push(Event::Frame(bytes[i..i + 9 + len].to_vec()));
                }
            }
            if matches!(ty, TYPE_HEADERS | TYPE_CONTINUATION) && flags & FLAG_END_HEADERS != 0 {
                let (stream_id, end_stream, priority, block) = open.take().unwrap();
                events.push(Event::Headers {
                    stream_id,
                    end_stream,
                    priority,
                    block,
                });
            }
            i += 9 + len;
        }
        assert!(open.is_none());
        events
    }

    /// Decodes every header block of a connection with one fresh decoder,
    /// as the server would.
    fn decode_all(events: &[Event]) -> Vec<Vec<Field>> {
        let mut decoder = loona_hpack::Decoder::new();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Headers { block, .. } => Some(decoder.decode(block).expect("decodable")),
                Event::Frame(_) => None,
            })
            .collect()
    }

    fn non_header_frames(events: &[Event]) -> Vec<&Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(raw) => Some(raw),
                Event::Headers { .. } => None,
            })
            .collect()
    }

    fn take_int(b: &[u8], i: &mut usize, prefix: u8) -> usize {
        let max = (1usize << prefix) - 1;
        let mut v = (b[*i] as usize) & max;
        *i += 1;
        if v < max {
            return v;
        }
        let mut shift = 0;
        loop {
            let byte = b[*i];
            *i += 1;
            v += ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return v;
            }
        }
    }

    /// Asserts a block consists only of never-indexed literals whose name,
    /// if indexed, comes from the static table: such a block leaves the
    /// server's dynamic table alone and does not depend on it.
    fn assert_table_neutral(block: &[u8]) {
        let mut i = 0;
        while i < block.len() {
            assert_eq!(block[i] & 0xf0, 0x10, "not a never-indexed literal at {i}");
            let name_index = take_int(block, &mut i, 4);
            assert!(name_index <= 61, "name refers to the dynamic table");
            let strings = if name_index == 0 { 2 } else { 1 };
            for _ in 0..strings {
                let len = take_int(block, &mut i, 7);
                i += len;
            }
        }
        assert_eq!(i, block.len());
    }

    /// The requests grpc-go v1.56.3 sends over a Unix socket: Version,
    /// Mount, Version. Later ones refer to the first one's `:authority`
    /// through the dynamic table.
    fn grpc_go_blocks() -> (Vec<Vec<u8>>, Vec<Vec<Field>>) {
        let version = b"/v1alpha1.CSIDriverProvider/Version";
        let mount = b"/v1alpha1.CSIDriverProvider/Mount";
        let b1 = block(vec![
            indexed(3),                                                   // :method POST
            indexed(6),                                                   // :scheme http
            lit_inc(4, raw_str(version)), // :path          -> 67 after b1
            lit_inc(1, huff_str(SOCKET_PATH)), // :authority     -> 66
            lit_inc(31, huff_str(b"application/grpc")), // content-type -> 65
            lit_inc(58, huff_str(b"grpc-go/1.56.3")), // user-agent     -> 64
            lit_inc_new(huff_str(b"te"), huff_str(b"trailers")), //    -> 63
            lit_inc_new(raw_str(b"grpc-timeout"), raw_str(b"29999653u")), // 62
        ]);
        let b2 = block(vec![
            indexed(3),
            indexed(6),
            lit_inc(4, raw_str(mount)), // new entry 62; the others move up one
            indexed(67),                // :authority
            indexed(66),                // content-type
            indexed(65),                // user-agent
            indexed(64),                // te
            lit_inc(63, raw_str(b"9999000u")), // name from the dynamic table
        ]);
        let b3 = block(vec![
            indexed(3),
            indexed(6),
            indexed(69), // :path Version
            indexed(68), // :authority
            indexed(67),
            indexed(66),
            indexed(65),
        ]);
        let common = |path: &[u8], authority: &[u8]| {
            vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", path),
                f(":authority", authority),
                f("content-type", b"application/grpc"),
                f("user-agent", b"grpc-go/1.56.3"),
                f("te", b"trailers"),
            ]
        };
        let mut l1 = common(version, SOCKET_PATH);
        l1.push(f("grpc-timeout", b"29999653u"));
        let mut l2 = common(mount, SOCKET_PATH);
        l2.push(f("grpc-timeout", b"9999000u"));
        let l3 = common(version, SOCKET_PATH);
        (vec![b1, b2, b3], vec![l1, l2, l3])
    }

    fn with_authority(mut lists: Vec<Vec<Field>>, authority: &[u8]) -> Vec<Vec<Field>> {
        for list in &mut lists {
            for (n, v) in list.iter_mut() {
                if n == b":authority" {
                    *v = authority.to_vec();
                }
            }
        }
        lists
    }

    fn grpc_go_connection() -> Vec<u8> {
        let (blocks, _) = grpc_go_blocks();
        let msg = [0u8, 0, 0, 0, 3, 0x0a, 0x01, 0x41]; // gRPC length-prefixed message
        [
            PREFACE.to_vec(),
            settings(),
            frame(0x8, 0, 0, &[0, 0x0f, 0, 0x01]), // WINDOW_UPDATE
            headers(1, false, &blocks[0]),
            data(1, &msg),
            frame(0x4, 0x1, 0, &[]), // SETTINGS ACK
            headers(3, false, &blocks[1]),
            data(3, &msg),
            frame(0x6, 0, 0, b"pingpong"),
            headers(5, true, &blocks[2]),
            frame(0x3, 0, 5, &[0, 0, 0, 8]), // RST_STREAM CANCEL
            frame(0x7, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]), // GOAWAY
        ]
        .concat()
    }

    #[tokio::test]
    async fn grpc_go_path_authority_becomes_localhost() {
        let input = grpc_go_connection();
        let (_, expected) = grpc_go_blocks();
        let in_events = events(&input);
        // The builders produce what we think they do.
        assert_eq!(decode_all(&in_events), expected);

        let out = run_all(&input).await;
        let out_events = events(&out);
        assert_eq!(
            decode_all(&out_events),
            with_authority(expected, b"localhost")
        );
        assert_eq!(
            non_header_frames(&out_events),
            non_header_frames(&in_events)
        );
        let heads = |evs: &[Event]| -> Vec<(u32, bool)> {
            evs.iter()
                .filter_map(|e| match e {
                    Event::Headers {
                        stream_id,
                        end_stream,
                        ..
                    } => Some((*stream_id, *end_stream)),
                    Event::Frame(_) => None,
                })
                .collect()
        };
        assert_eq!(heads(&out_events), heads(&in_events));
        for e in &out_events {
            if let Event::Headers { block, .. } = e {
                assert_table_neutral(block);
            }
        }
    }

    #[tokio::test]
    async fn valid_authority_connection_is_byte_identical() {
        let b1 = block(vec![
            indexed(3),
            indexed(6),
            lit_inc(4, raw_str(b"/v1alpha1.CSIDriverProvider/Version")),
            lit_inc(1, huff_str(b"localhost")),
            lit_inc_new(raw_str(b"x-a"), raw_str(b"1")),
        ]);
        let b2 = block(vec![
            indexed(3),
            indexed(6),
            indexed(64),
            indexed(63),
            indexed(62),
        ]);
        let b3 = block(vec![
            size_update(0),
            size_update(4096),
            lit_inc(1, raw_str(b"vault.example:8200")),
        ]);
        let b4 = block(vec![indexed(62)]);
        let input = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &b1),
            headers(3, true, &b2),
            // Split over CONTINUATION frames, with padding: forwarded as is.
            frame(
                TYPE_HEADERS,
                FLAG_PADDED,
                5,
                &[&[3u8][..], &b3[..2], &[0, 0, 0]].concat(),
            ),
            frame(TYPE_CONTINUATION, 0, 5, &b3[2..4]),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, &b3[4..]),
            data(5, b"x"),
            headers(7, false, &b4),
            // Trailers without pseudo-headers.
            headers(7, true, &lit_inc_new(raw_str(b"x-trailer"), raw_str(b"t"))),
        ]
        .concat();
        let lists = decode_all(&events(&input));
        assert_eq!(lists[3], vec![f(":authority", b"vault.example:8200")]);
        assert_eq!(run_all(&input).await, input);
    }

    #[tokio::test]
    async fn authority_validity_follows_the_http_crate() {
        let cases: &[(&[u8], bool)] = &[
            (b"localhost", true),
            (b"localhost:50051", true),
            (b"127.0.0.1:8080", true),
            (b"[::1]:80", true),
            (SOCKET_PATH, false),
            (
                b"/etc/kubernetes/secrets-store-csi-providers/vault.sock",
                false,
            ),
            // What grpcio sends for `unix:` targets.
            (b"tmp%2Fcsi%2Fvault.sock", false),
            (b"", false),
            (b"a b", false),
        ];
        for &(authority, valid) in cases {
            let b = block(vec![
                indexed(3),
                indexed(6),
                indexed(4),
                lit_inc(1, raw_str(authority)),
            ]);
            let input = [PREFACE.to_vec(), settings(), headers(1, true, &b)].concat();
            let out = run_all(&input).await;
            if valid {
                assert_eq!(
                    out,
                    input,
                    "{:?} should pass",
                    String::from_utf8_lossy(authority)
                );
            } else {
                let lists = decode_all(&events(&out));
                assert_eq!(lists[0][3], f(":authority", b"localhost"));
            }
        }
    }

    #[tokio::test]
    async fn rewrite_after_passthrough_blocks_keeps_tables_consistent() {
        // Block A is valid and fills the table; B needs the rewrite and refers
        // to A's entries; C refers to entries from A and B; D empties and
        // refills the table with a size update; E refers to D's entries.
        let a = block(vec![
            indexed(3),
            indexed(6),
            lit_inc(4, raw_str(b"/a")),                    // 62 after A
            lit_inc(1, raw_str(b"localhost")),             // -> 63
            lit_inc_new(raw_str(b"x-a"), huff_str(b"a1")), // -> 62, path 64
        ]);
        let b = block(vec![
            indexed(3),
            indexed(6),
            indexed(64),                       // :path /a
            lit_inc(1, huff_str(SOCKET_PATH)), // new 62; x-a 63, localhost 64, /a 65
            indexed(63),                       // x-a
        ]);
        let c = block(vec![
            indexed(3),
            indexed(6),
            indexed(65), // :path /a
            indexed(62), // :authority (the socket path)
            indexed(63), // x-a
            lit_inc_new(raw_str(b"x-c"), raw_str(b"c")),
        ]);
        let d = block(vec![
            size_update(0),
            size_update(256),
            indexed(3),
            indexed(6),
            lit_inc(4, raw_str(b"/d")),
            lit_inc(1, raw_str(SOCKET_PATH)),
        ]);
        let e = block(vec![indexed(3), indexed(6), indexed(63), indexed(62)]);
        // Once rewriting, blocks that need no repair themselves (a valid
        // authority, trailers) are re-encoded too, since they may refer to
        // entries h2 never saw.
        let g = block(vec![
            indexed(3),
            indexed(6),
            indexed(63),                       // :path /d
            lit_inc(1, raw_str(b"localhost")), // valid; new 62
            lit_inc_new(raw_str(b"x-g"), raw_str(b"g")),
        ]);
        let trailers = block(vec![indexed(62), indexed(63)]); // x-g, localhost
        let input = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &a),
            headers(3, true, &b),
            headers(5, true, &c),
            headers(7, true, &d),
            headers(9, true, &e),
            headers(11, false, &g),
            headers(11, true, &trailers),
        ]
        .concat();
        let expected = vec![
            vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", b"/a"),
                f(":authority", b"localhost"),
                f("x-a", b"a1"),
            ],
            vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", b"/a"),
                f(":authority", SOCKET_PATH),
                f("x-a", b"a1"),
            ],
            vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", b"/a"),
                f(":authority", SOCKET_PATH),
                f("x-a", b"a1"),
                f("x-c", b"c"),
            ],
            vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", b"/d"),
                f(":authority", SOCKET_PATH),
            ],
            vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", b"/d"),
                f(":authority", SOCKET_PATH),
            ],
            vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", b"/d"),
                f(":authority", b"localhost"),
                f("x-g", b"g"),
            ],
            vec![f("x-g", b"g"), f(":authority", b"localhost")],
        ];
        assert_eq!(decode_all(&events(&input)), expected);

        let out = run_all(&input).await;
        // A went through untouched.
        let a_frame = headers(1, true, &a);
        assert_eq!(
            &out[..24 + settings().len() + a_frame.len()],
            &input[..24 + settings().len() + a_frame.len()]
        );
        let out_events = events(&out);
        assert_eq!(
            decode_all(&out_events),
            with_authority(expected, b"localhost")
        );
        let rewritten: Vec<_> = out_events
            .iter()
            .filter_map(|e| match e {
                Event::Headers { block, .. } => Some(block),
                Event::Frame(_) => None,
            })
            .skip(1)
            .collect();
        assert_eq!(rewritten.len(), 6);
        for block in rewritten {
            assert_table_neutral(block);
        }
    }

    #[tokio::test]
    async fn continuation_frames_in_and_out() {
        let big = vec![b'v'; 40_000];
        let b1 = block(vec![
            indexed(3),
            indexed(6),
            indexed(4),
            lit_inc(1, raw_str(SOCKET_PATH)),
            lit_inc_new(raw_str(b"x-big"), raw_str(&big)), // too big for the table
        ]);
        let input = [
            PREFACE.to_vec(),
            settings(),
            frame(TYPE_HEADERS, FLAG_END_STREAM, 1, &b1[..5]),
            frame(TYPE_CONTINUATION, 0, 1, &b1[5..20_000]),
            frame(TYPE_CONTINUATION, 0, 1, &[]),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &b1[20_000..]),
            data(3, b"after"),
        ]
        .concat();
        let out = run_all(&input).await;
        let lists = decode_all(&events(&out));
        assert_eq!(
            lists,
            vec![vec![
                f(":method", b"POST"),
                f(":scheme", b"http"),
                f(":path", b"/"),
                f(":authority", b"localhost"),
                f("x-big", &big),
            ]]
        );
        // Walk the raw frames: HEADERS (END_STREAM, no END_HEADERS), then
        // CONTINUATIONs no larger than 16384, END_HEADERS on the last only.
        let mut i = 24 + settings().len();
        let mut kinds = Vec::new();
        while i < out.len() {
            let len = u32::from_be_bytes([0, out[i], out[i + 1], out[i + 2]]) as usize;
            assert!(len <= EMIT_MAX_FRAME);
            kinds.push((
                out[i + 3],
                out[i + 4],
                u32::from_be_bytes(out[i + 5..i + 9].try_into().unwrap()),
            ));
            i += 9 + len;
        }
        assert_eq!(
            kinds,
            vec![
                (TYPE_HEADERS, FLAG_END_STREAM, 1),
                (TYPE_CONTINUATION, 0, 1),
                (TYPE_CONTINUATION, FLAG_END_HEADERS, 1),
                (0x0, FLAG_END_STREAM, 3),
            ]
        );
        assert!(out.ends_with(&data(3, b"after")));
    }

    #[tokio::test]
    async fn padded_priority_headers_are_rewritten_without_padding() {
        let b1 = block(vec![
            indexed(3),
            indexed(6),
            indexed(4),
            lit_inc(1, huff_str(SOCKET_PATH)),
        ]);
        let b2 = block(vec![indexed(3), indexed(6), indexed(4), indexed(62)]);
        let prio = [0x80, 0, 0, 1, 15]; // exclusive, depends on stream 1, weight 16
        let padded = |b: &[u8]| [&[7u8][..], &prio, b, &[0; 7]].concat();
        let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_END_STREAM;
        let input = [
            PREFACE.to_vec(),
            settings(),
            frame(TYPE_HEADERS, flags, 3, &padded(&b1)),
            frame(TYPE_HEADERS, flags & !FLAG_END_STREAM, 5, &padded(&b2)),
        ]
        .concat();
        let out = run_all(&input).await;
        let evs = events(&out);
        let lists = decode_all(&evs);
        assert_eq!(lists.len(), 2);
        for list in &lists {
            assert_eq!(list[3], f(":authority", b"localhost"));
        }
        let mut i = 24 + settings().len();
        for (sid, end_stream) in [(3u32, true), (5, false)] {
            let len = u32::from_be_bytes([0, out[i], out[i + 1], out[i + 2]]) as usize;
            let want =
                FLAG_PRIORITY | FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
            assert_eq!(out[i + 3], TYPE_HEADERS);
            assert_eq!(out[i + 4], want, "flags of stream {sid}");
            assert_eq!(
                u32::from_be_bytes(out[i + 5..i + 9].try_into().unwrap()),
                sid
            );
            assert_eq!(&out[i + 9..i + 14], &prio);
            i += 9 + len;
        }
        assert_eq!(i, out.len());
    }

    #[tokio::test]
    async fn oversize_header_block_is_rejected() {
        // Large fragments...
        let mut input = [
            PREFACE.to_vec(),
            settings(),
            frame(TYPE_HEADERS, 0, 1, &[0x83]),
        ]
        .concat();
        for _ in 0..70 {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &[0x83; 16_000]));
        }
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x83]));
        let err = run(&input, 1 << 16, 1 << 16, false).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("too large"), "{err}");

        // ...and a flood of empty CONTINUATION frames are both bounded.
        let mut input = [
            PREFACE.to_vec(),
            settings(),
            frame(TYPE_HEADERS, 0, 1, &[0x83]),
        ]
        .concat();
        for _ in 0..120_000 {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &[]));
        }
        let err = run(&input, 1 << 16, 1 << 16, false).await.unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");

        // A single frame announcing more than the limit fails before its
        // payload is buffered.
        let mut input = [PREFACE.to_vec(), settings()].concat();
        input.extend_from_slice(&[0xff, 0xff, 0xff, TYPE_HEADERS, FLAG_END_HEADERS, 0, 0, 0, 1]);
        let err = run_all_err(&input).await;
        assert!(err.to_string().contains("too large"), "{err}");

        // Just under the limit still works.
        let b = block(vec![
            lit_inc(1, raw_str(SOCKET_PATH)),
            lit_inc_new(raw_str(b"x"), raw_str(&vec![b'y'; 200_000])),
        ]);
        let input = [PREFACE.to_vec(), settings(), headers(1, true, &b)].concat();
        let out = run(&input, 1 << 16, 1 << 16, false).await.unwrap();
        assert_eq!(
            decode_all(&events(&out))[0][0],
            f(":authority", b"localhost")
        );
    }

    #[tokio::test]
    async fn undecodable_block_before_rewrite_passes_connection_through() {
        let bad_index = block(vec![indexed(3), indexed(70)]); // empty dynamic table
        let needs_repair = block(vec![indexed(3), lit_inc(1, raw_str(SOCKET_PATH))]);
        let input = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &bad_index),
            headers(3, true, &needs_repair),
        ]
        .concat();
        // Forwarded untouched (the server reports COMPRESSION_ERROR), and
        // the adapter no longer interferes.
        assert_eq!(run_all(&input).await, input);

        // The same for a header block interrupted by another frame and a
        // CONTINUATION with no block open.
        let input = [
            PREFACE.to_vec(),
            settings(),
            frame(TYPE_HEADERS, 0, 1, &needs_repair),
            data(1, b"x"),
            headers(3, true, &needs_repair),
        ]
        .concat();
        assert_eq!(run_all(&input).await, input);
        let input = [
            PREFACE.to_vec(),
            settings(),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &needs_repair),
            headers(3, true, &needs_repair),
        ]
        .concat();
        assert_eq!(run_all(&input).await, input);

        // Something that is not HTTP/2 at all is left alone.
        let input = b"GET / HTTP/1.1\r\nHost: /var/run/x.sock\r\n\r\n".to_vec();
        assert_eq!(run_all(&input).await, input);
    }

    #[tokio::test]
    async fn errors_after_rewrite_fail_the_read() {
        let needs_repair = block(vec![indexed(3), lit_inc(1, raw_str(SOCKET_PATH))]);
        let start = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &needs_repair),
        ]
        .concat();

        let bad_index = [
            start.clone(),
            headers(3, true, &block(vec![indexed(3), indexed(70)])),
        ]
        .concat();
        run_all_err(&bad_index).await;

        let stray_continuation = [
            start.clone(),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x83]),
        ]
        .concat();
        run_all_err(&stray_continuation).await;

        let interrupted = [
            start.clone(),
            frame(TYPE_HEADERS, 0, 3, &[0x83]),
            data(3, b"x"),
        ]
        .concat();
        run_all_err(&interrupted).await;

        // A size update above the server's table limit.
        let too_big_table = [
            start,
            headers(3, true, &block(vec![size_update(8192), indexed(3)])),
        ]
        .concat();
        run_all_err(&too_big_table).await;
    }

    #[tokio::test]
    async fn huffman_string_count_is_bounded() {
        // Strings before the Huffman ones exercise the walker's skipping of
        // multi-byte integers and long raw strings.
        let huffman_block = |n: usize| {
            let mut parts = vec![
                size_update(4096),
                indexed(3),
                lit_inc(1, raw_str(SOCKET_PATH)),
                lit_inc_new(raw_str(&vec![b'n'; 300]), raw_str(&vec![b'v'; 70_000])),
            ];
            for _ in 0..n {
                // Literal without indexing, new name "x-h", empty Huffman value.
                parts.push([&[0x00][..], &raw_str(b"x-h"), &[0x80]].concat());
            }
            block(parts)
        };
        let at_limit = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &huffman_block(MAX_HUFFMAN_STRINGS)),
        ]
        .concat();
        let out = run(&at_limit, 1 << 16, 1 << 16, false).await.unwrap();
        let lists = decode_all(&events(&out));
        assert_eq!(lists[0][1], f(":authority", b"localhost"));
        assert_eq!(lists[0].len(), 3 + MAX_HUFFMAN_STRINGS);

        // Over the limit before any rewrite: forwarded untouched, and the
        // connection is passed through from then on.
        let later = block(vec![indexed(3), lit_inc(1, raw_str(SOCKET_PATH))]);
        let over = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &huffman_block(MAX_HUFFMAN_STRINGS + 1)),
            headers(3, true, &later),
        ]
        .concat();
        assert_eq!(run(&over, 1 << 16, 1 << 16, false).await.unwrap(), over);

        // Over the limit after a rewrite: the connection ends.
        let over = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &later),
            headers(3, true, &huffman_block(MAX_HUFFMAN_STRINGS + 1)),
        ]
        .concat();
        let err = run(&over, 1 << 16, 1 << 16, false).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn incomplete_input_at_eof_ends_the_stream() {
        let needs_repair = block(vec![indexed(3), lit_inc(1, raw_str(SOCKET_PATH))]);
        let full = [
            PREFACE.to_vec(),
            settings(),
            headers(1, true, &needs_repair),
        ]
        .concat();
        let cut = &full[..full.len() - 3];
        let out = run(cut, 5, 5, false).await.unwrap();
        assert_eq!(out, full[..24 + settings().len()]);
    }

    #[test]
    fn static_name_indices_match_the_hpack_static_table() {
        for name in [
            ":authority",
            ":method",
            ":path",
            ":scheme",
            ":status",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "accept",
            "access-control-allow-origin",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "content-disposition",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-range",
            "content-type",
            "cookie",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "link",
            "location",
            "max-forwards",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "refresh",
            "retry-after",
            "server",
            "set-cookie",
            "strict-transport-security",
            "transfer-encoding",
            "user-agent",
            "vary",
            "via",
            "www-authenticate",
        ] {
            let index = static_name_index(name.as_bytes()).unwrap();
            let mut encoded = Vec::new();
            encode_never_indexed(&mut encoded, name.as_bytes(), b"v");
            // Decoded by an independent decoder, the index names the field.
            let list = loona_hpack::Decoder::new().decode(&encoded).unwrap();
            assert_eq!(list, vec![f(name, b"v")], "index {index}");
        }
        assert_eq!(static_name_index(b"te"), None);
        let mut encoded = Vec::new();
        encode_never_indexed(&mut encoded, b"te", &vec![b'x'; 300]);
        assert_eq!(
            loona_hpack::Decoder::new().decode(&encoded).unwrap(),
            vec![f("te", &vec![b'x'; 300])]
        );
    }

    // ---- end to end: a tonic server behind the adapter ----

    mod e2e {
        use super::*;
        use futures::TryStreamExt;
        use std::sync::{Arc, Mutex};
        use std::time::Duration;
        use tokio::net::{UnixListener, UnixStream};
        use tokio_stream::wrappers::UnixListenerStream;

        #[derive(Debug, PartialEq)]
        enum Outcome {
            /// Response headers with this `:status`.
            Response(Vec<u8>),
            /// RST_STREAM with this error code.
            Reset(u32),
        }

        /// Serves a trivial gRPC-like service on a Unix socket, with or
        /// without the adapter, and records the authority of each request.
        async fn serve(
            repair: bool,
        ) -> (
            tempfile::TempDir,
            std::path::PathBuf,
            Arc<Mutex<Vec<String>>>,
            tokio::sync::oneshot::Sender<()>,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("vault.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let seen2 = seen.clone();
            let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
                let seen = seen2.clone();
                async move {
                    let authority = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(authority);
                    let resp = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "0")
                        .body(tonic::body::Body::empty())
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let shutdown = async {
                let _ = rx.await;
            };
            let server = tonic::transport::Server::builder();
            if repair {
                let incoming = UnixListenerStream::new(listener).map_ok(AuthorityRepair::new);
                tokio::spawn(server.serve_with_incoming_shutdown(svc, incoming, shutdown));
            } else {
                let incoming = UnixListenerStream::new(listener);
                tokio::spawn(server.serve_with_incoming_shutdown(svc, incoming, shutdown));
            }
            (dir, path, seen, tx)
        }

        async fn read_frame(s: &mut UnixStream) -> (u8, u8, u32, Vec<u8>) {
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            (
                head[3],
                head[4],
                u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
                payload,
            )
        }

        /// Speaks raw HTTP/2 like grpc-go: sends the three requests and
        /// returns what happened to each stream.
        async fn grpc_go_client(path: &std::path::Path) -> Vec<(u32, Outcome)> {
            let (blocks, _) = grpc_go_blocks();
            let mut s = UnixStream::connect(path).await.unwrap();
            let out = [
                PREFACE.to_vec(),
                frame(0x4, 0, 0, &[]),
                headers(1, true, &blocks[0]),
                headers(3, true, &blocks[1]),
                headers(5, true, &blocks[2]),
            ]
            .concat();
            s.write_all(&out).await.unwrap();

            let mut decoder = loona_hpack::Decoder::new();
            let mut outcomes = Vec::new();
            let result = tokio::time::timeout(Duration::from_secs(10), async {
                while outcomes.len() < 3 {
                    let (ty, flags, sid, payload) = read_frame(&mut s).await;
                    match ty {
                        0x4 if flags & 0x1 == 0 => {
                            s.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap()
                        }
                        TYPE_HEADERS => {
                            // hyper does not pad, prioritise or split these.
                            assert_eq!(flags & (FLAG_PADDED | FLAG_PRIORITY), 0);
                            assert_ne!(flags & FLAG_END_HEADERS, 0);
                            let list = decoder.decode(&payload).unwrap();
                            let status = list
                                .iter()
                                .find(|(n, _)| n == b":status")
                                .unwrap()
                                .1
                                .clone();
                            outcomes.push((sid, Outcome::Response(status)));
                        }
                        0x3 => outcomes.push((
                            sid,
                            Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap())),
                        )),
                        0x7 => panic!("GOAWAY: {payload:?}"),
                        _ => {}
                    }
                }
            })
            .await;
            result.expect("server did not answer in time");
            outcomes.sort_by_key(|(sid, _)| *sid);
            outcomes
        }

        #[tokio::test]
        async fn tonic_resets_path_authority_without_adapter() {
            let (_dir, path, seen, stop) = serve(false).await;
            let outcomes = grpc_go_client(&path).await;
            const PROTOCOL_ERROR: u32 = 1;
            assert_eq!(
                outcomes,
                vec![
                    (1, Outcome::Reset(PROTOCOL_ERROR)),
                    (3, Outcome::Reset(PROTOCOL_ERROR)),
                    (5, Outcome::Reset(PROTOCOL_ERROR)),
                ]
            );
            assert!(seen.lock().unwrap().is_empty());
            let _ = stop.send(());
        }

        #[tokio::test]
        async fn tonic_accepts_path_authority_with_adapter() {
            let (_dir, path, seen, stop) = serve(true).await;
            let outcomes = grpc_go_client(&path).await;
            assert_eq!(
                outcomes,
                vec![
                    (1, Outcome::Response(b"200".to_vec())),
                    (3, Outcome::Response(b"200".to_vec())),
                    (5, Outcome::Response(b"200".to_vec())),
                ]
            );
            assert_eq!(*seen.lock().unwrap(), vec!["localhost"; 3]);
            let _ = stop.send(());
        }
    }
}
