//! A small client of one watch stream: an HTTP/1.1 `GET` written by hand on
//! a tokio socket, the chunked body decoded and its server-sent events
//! parsed. A thousand of these share the test's two cores with the server,
//! so events are handed to a callback as borrowed slices: no allocation per
//! event once the buffers have grown.

use std::io;

use tokio::net::TcpStream;

/// Bytes asked of the socket at a time.
const READ_SIZE: usize = 16 << 10;

/// One server-sent event, borrowed from the parser's buffers.
pub struct Event<'a> {
    /// `event:` (`message` when the event has none).
    pub name: &'a str,
    /// `id:`, if this event carried one.
    pub id: Option<&'a str>,
    /// `data:` lines, joined with `\n`.
    pub data: &'a str,
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The last chunk (`0\r\n\r\n`): the server ended the body.
    LastChunk,
    /// The connection closed without the last chunk.
    Eof,
}

/// An open watch stream.
pub struct Watch {
    socket: TcpStream,
    /// Bytes read from the socket and not yet decoded.
    raw: Vec<u8>,
    chunks: Chunks,
    events: Parser,
    end: Option<End>,
}

impl Watch {
    /// Sends `GET <path>` with a bearer token on `socket` and reads the
    /// answer's head, which must be a 200 `text/event-stream`, chunked.
    pub async fn open(socket: TcpStream, host: &str, path: &str, token: &str) -> Watch {
        Watch::open_with(socket, host, path, token, "").await
    }

    /// The same with `headers` (each line ending in CRLF, such as
    /// `Last-Event-ID: 12\r\n`) added to the request.
    pub async fn open_with(
        socket: TcpStream,
        host: &str,
        path: &str,
        token: &str,
        headers: &str,
    ) -> Watch {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\n{headers}\r\n"
        );
        write_all(&socket, request.as_bytes()).await.unwrap();
        let mut raw = Vec::with_capacity(READ_SIZE);
        let head_end = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let read = read_some(&socket, &mut raw).await.unwrap();
            assert!(read > 0, "the connection closed before the answer's head");
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        assert!(
            head.starts_with("http/1.1 200"),
            "GET {path}: {}",
            String::from_utf8_lossy(&raw)
        );
        assert!(
            head.contains("\r\ncontent-type: text/event-stream"),
            "{head}"
        );
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        raw.drain(..head_end + 4);
        Watch {
            socket,
            raw,
            chunks: Chunks::Size,
            events: Parser::default(),
            end: None,
        }
    }

    /// Hands every complete event that has arrived to `each`, reading the
    /// socket when nothing buffered is left to decode. Returns false once
    /// the stream has ended.
    pub async fn read(&mut self, each: &mut impl FnMut(Event<'_>)) -> bool {
        loop {
            if self.end.is_some() {
                return false;
            }
            let used = self.chunks.decode(&self.raw, &mut self.events, each);
            self.raw.drain(..used);
            if self.chunks == Chunks::Done {
                self.end = Some(End::LastChunk);
                return false;
            }
            if used > 0 {
                return true;
            }
            if read_some(&self.socket, &mut self.raw).await.unwrap_or(0) == 0 {
                self.end = Some(End::Eof);
            }
        }
    }

    /// How the stream ended, once it has.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// The `retry:` the server sent, if any.
    pub fn retry(&self) -> Option<u64> {
        self.events.retry
    }
}

/// Reads what the socket has (at least one byte, or 0 at its end) onto
/// the end of `buffer`. (The crate's tokio has no `io-util`: no
/// `AsyncReadExt`, hence the readiness loop.) Cancel-safe: nothing is
/// added to `buffer` across an await, so a caller may give up waiting.
async fn read_some(socket: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        socket.readable().await?;
        let filled = buffer.len();
        buffer.resize(filled + READ_SIZE, 0);
        let read = socket.try_read(&mut buffer[filled..]);
        buffer.truncate(filled + *read.as_ref().unwrap_or(&0));
        match read {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Where the decoder is in the chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunks {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, expecting the (empty) trailer.
    Trailer,
    Done,
}

impl Chunks {
    /// Decodes what it can of `raw`, passing chunk data to `events`;
    /// returns how many bytes it used.
    fn decode(
        &mut self,
        raw: &[u8],
        events: &mut Parser,
        each: &mut impl FnMut(Event<'_>),
    ) -> usize {
        let mut at = 0;
        loop {
            match *self {
                Chunks::Size | Chunks::Trailer => {
                    let Some(length) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
                        return at;
                    };
                    let line = std::str::from_utf8(&raw[at..at + length]).expect("chunk size");
                    at += length + 2;
                    if *self == Chunks::Trailer {
                        assert!(line.is_empty(), "unexpected trailer {line:?}");
                        *self = Chunks::Done;
                        return at;
                    }
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    *self = if size == 0 {
                        Chunks::Trailer
                    } else {
                        Chunks::Data(size)
                    };
                }
                Chunks::Data(left) => {
                    let take = left.min(raw.len() - at);
                    if take == 0 {
                        return at;
                    }
                    events.feed(&raw[at..at + take], each);
                    at += take;
                    *self = if take == left {
                        Chunks::DataEnd
                    } else {
                        Chunks::Data(left - take)
                    };
                }
                Chunks::DataEnd => {
                    if raw.len() - at < 2 {
                        return at;
                    }
                    assert_eq!(&raw[at..at + 2], b"\r\n", "chunk data not followed by CRLF");
                    at += 2;
                    *self = Chunks::Size;
                }
                Chunks::Done => return at,
            }
        }
    }
}

/// The event-stream parser (the WHATWG rules, but for the last-event-id
/// buffer: `id` here is the id line of this event only).
#[derive(Default)]
struct Parser {
    /// The start of a line that the last bytes did not finish.
    carry: Vec<u8>,
    name: String,
    id: Option<String>,
    data: String,
    has_data: bool,
    retry: Option<u64>,
}

impl Parser {
    fn feed(&mut self, mut bytes: &[u8], each: &mut impl FnMut(Event<'_>)) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            if self.carry.is_empty() {
                self.line(&bytes[..newline], each);
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(&bytes[..newline]);
                self.line(&line, each);
                line.clear();
                self.carry = line;
            }
            bytes = &bytes[newline + 1..];
        }
        self.carry.extend_from_slice(bytes);
    }

    fn line(&mut self, line: &[u8], each: &mut impl FnMut(Event<'_>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).expect("an event-stream line is UTF-8");
        if line.is_empty() {
            if self.has_data {
                each(Event {
                    name: if self.name.is_empty() {
                        "message"
                    } else {
                        &self.name
                    },
                    id: self.id.as_deref(),
                    data: &self.data,
                });
            }
            self.name.clear();
            self.id = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return; // a comment: the keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.id = Some(value.to_owned()),
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
    }
}
