//! MLLP (Minimal Lower Layer Protocol, HL7 v2 appendix C): each message as
//! `0x0B` + message + `0x1C 0x0D` on a TCP stream.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub const START: u8 = 0x0B;
pub const END: [u8; 2] = [0x1C, 0x0D];

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection closed{}", if *.0 { " in the middle of a message" } else { "" })]
    Closed(bool),
    #[error("a message is longer than {0} bytes")]
    TooLong(usize),
    #[error("no start of a message (0x0B) within {0} bytes")]
    NoStart(usize),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `message` framed.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 3);
    framed.push(START);
    framed.extend_from_slice(message);
    framed.extend_from_slice(&END);
    framed
}

/// Writes one framed message.
pub async fn write_message<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    message: &[u8],
) -> std::io::Result<()> {
    writer.write_all(&frame(message)).await?;
    writer.flush().await
}

/// Reads the next message, at most `max_length` bytes long, so that a peer
/// cannot make it grow without bound; up to `max_length` bytes before a start
/// byte are skipped, more end the read. Reads a byte at a time: give it a
/// buffered reader.
pub async fn read_message<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    max_length: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut byte = [0_u8; 1];
    let mut skipped = 0_usize;
    loop {
        if reader.read(&mut byte).await? == 0 {
            return Err(FrameError::Closed(false));
        }
        if byte[0] == START {
            break;
        }
        skipped += 1;
        if skipped > max_length {
            return Err(FrameError::NoStart(max_length));
        }
    }
    let mut message = Vec::new();
    loop {
        if reader.read(&mut byte).await? == 0 {
            return Err(FrameError::Closed(true));
        }
        if byte[0] == END[0] {
            if reader.read(&mut byte).await? == 0 {
                return Err(FrameError::Closed(true));
            }
            if byte[0] == END[1] {
                return Ok(message);
            }
            message.push(END[0]);
        }
        message.push(byte[0]);
        if message.len() > max_length {
            return Err(FrameError::TooLong(max_length));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_without_a_start_are_skipped_only_up_to_the_bound() {
        let mut junk = vec![b'x'; 100];
        junk.extend_from_slice(&frame(b"MSH|late"));
        let mut stream: &[u8] = &junk;
        assert!(matches!(
            read_message(&mut stream, 50).await,
            Err(FrameError::NoStart(50))
        ));
        let mut stream: &[u8] = &junk;
        assert_eq!(
            read_message(&mut stream, 100).await.expect("read"),
            b"MSH|late"
        );
    }

    #[tokio::test]
    async fn frames_round_trip_and_are_bounded() {
        let mut stream: &[u8] =
            &[b"noise".as_slice(), &frame(b"MSH|one"), &frame(b"MSH|two")].concat();
        assert_eq!(
            read_message(&mut stream, 100).await.expect("one"),
            b"MSH|one"
        );
        assert_eq!(
            read_message(&mut stream, 100).await.expect("two"),
            b"MSH|two"
        );
        assert!(matches!(
            read_message(&mut stream, 100).await,
            Err(FrameError::Closed(false))
        ));
        let mut long: &[u8] = &frame(&[b'x'; 200]);
        assert!(matches!(
            read_message(&mut long, 100).await,
            Err(FrameError::TooLong(100))
        ));
        let mut cut: &[u8] = &[START, b'M', b'S'];
        assert!(matches!(
            read_message(&mut cut, 100).await,
            Err(FrameError::Closed(true))
        ));
    }
}
