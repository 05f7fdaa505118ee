//! A bounded walk over a Part 10 file's element headers, before dicom-object
//! parses it.
//!
//! dicom-object builds a data set recursively (a sequence's items are data
//! sets) and allocates each element's declared length before reading it. A
//! few hundred kilobytes of hostile input would therefore exhaust the stack
//! (sequences nested thousands deep) or the memory (an element declaring 4
//! GiB, a deflated data set inflating to gigabytes, millions of tiny
//! elements). This walk reads only headers, iteratively, skipping values, and
//! refuses such a file with the reason before the parser sees it:
//!
//! - sequences nested deeper than [`MAX_DEPTH`];
//! - more than [`MAX_ELEMENTS`] data elements and items;
//! - an element or item declaring more bytes than remain in the file (or in
//!   its enclosing item or sequence);
//! - a deflated data set inflating beyond [`MAX_INFLATED_BYTES`] (inflated
//!   piecewise while walked: memory stays a few kilobytes).
//!
//! Anything else it does not understand is left to the parser, which reports
//! it as before: the walk refuses only what it can prove unbounded. The
//! parser's own crate offers no depth or allocation limit, hence this walk.

use std::io::{self, Read};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::validate::{Rejection, RejectionKind};

/// Sequences within sequences: far beyond real images (a handful) and
/// structured reports (a few dozen), far below what exhausts a 2 MiB stack.
pub const MAX_DEPTH: usize = 64;
/// Data elements and items in a data set, nested ones included: real images
/// have hundreds, large structured reports tens of thousands.
pub const MAX_ELEMENTS: usize = 200_000;
/// What a deflated data set may inflate to.
pub const MAX_INFLATED_BYTES: u64 = 512 << 20;

/// The bounds of the walk; [`Limits::default`] holds the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_inflated_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: MAX_DEPTH,
            max_elements: MAX_ELEMENTS,
            max_inflated_bytes: MAX_INFLATED_BYTES,
        }
    }
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";

/// What the walk reads from: values are skipped, without reading them where
/// the input allows (a slice advances, a file seeks).
pub trait Input: Read {
    /// Skips `count` bytes; how many there were.
    fn skip_bytes(&mut self, count: u64) -> io::Result<u64>;
}

impl Input for &[u8] {
    fn skip_bytes(&mut self, count: u64) -> io::Result<u64> {
        let skipped = usize::try_from(count).unwrap_or(usize::MAX).min(self.len());
        *self = &self[skipped..];
        Ok(skipped as u64)
    }
}

/// A file of known size: the walk never skips past its end (a value longer
/// than what remains is refused first), so a seek stands for the read.
impl Input for io::BufReader<std::fs::File> {
    fn skip_bytes(&mut self, count: u64) -> io::Result<u64> {
        self.seek_relative(i64::try_from(count).unwrap_or(i64::MAX))?;
        Ok(count)
    }
}

impl<T: Input + ?Sized> Input for &mut T {
    fn skip_bytes(&mut self, count: u64) -> io::Result<u64> {
        (**self).skip_bytes(count)
    }
}

/// A stream that can only be read through (an inflated data set).
struct Streamed<R>(R);

impl<R: Read> Read for Streamed<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.0.read(buffer)
    }
}

impl<R: Read> Input for Streamed<R> {
    fn skip_bytes(&mut self, count: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(count), &mut io::sink())
    }
}

fn refused(reason: String) -> Rejection {
    Rejection::new(RejectionKind::Unreadable, reason)
}

/// Checks the file in `bytes` (with or without its preamble).
pub fn check_bytes(bytes: &[u8]) -> Result<(), Rejection> {
    check(bytes, Some(bytes.len() as u64), Limits::default())
}

/// Checks the file read from `reader`, `size` bytes long when known.
/// A file's `size` must be given (it bounds what is skipped by seeking).
pub fn check(reader: impl Input, size: Option<u64>, limits: Limits) -> Result<(), Rejection> {
    check_inner(reader, size, limits, false)
}

/// Checks the file read from `reader` up to its top-level Pixel Data, for a
/// parser that reads only the header (`read_until` Pixel Data): a file cut
/// short in its pixels still has a header worth reading.
pub fn check_header(reader: impl Input, size: Option<u64>) -> Result<(), Rejection> {
    check_inner(reader, size, Limits::default(), true)
}

fn check_inner(
    reader: impl Input,
    size: Option<u64>,
    limits: Limits,
    header_only: bool,
) -> Result<(), Rejection> {
    let mut source = Source {
        reader,
        position: 0,
        size,
    };
    // The preamble and "DICM", or "DICM" alone; anything else is for the
    // parser to refuse.
    let mut head = [0_u8; 132];
    let read = source.fill(&mut head[..4])?;
    if read < 4 {
        return Ok(());
    }
    if &head[..4] != b"DICM" && (source.fill(&mut head[4..])? < 128 || &head[128..132] != b"DICM") {
        return Ok(());
    }
    let Some(transfer_syntax) = meta_transfer_syntax(&mut source)? else {
        return Ok(());
    };
    let transfer_syntax = transfer_syntax.trim_end_matches(['\0', ' ']);
    let encoding = Encoding {
        implicit: transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
        big_endian: transfer_syntax == EXPLICIT_VR_BIG_ENDIAN,
    };
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        let inflated = Source {
            reader: Streamed(
                flate2::read::DeflateDecoder::new(source.reader)
                    .take(limits.max_inflated_bytes + 1),
            ),
            position: 0,
            size: None,
        };
        return walk(inflated, encoding, limits, true, header_only);
    }
    walk(source, encoding, limits, false, header_only)
}

struct Source<R> {
    reader: R,
    position: u64,
    size: Option<u64>,
}

impl<R: Read> Source<R> {
    /// Reads until `buffer` is full or the input ends; how much was read.
    fn fill(&mut self, buffer: &mut [u8]) -> Result<usize, Rejection> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.reader.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(refused(format!("cannot read the file: {error}"))),
            }
        }
        self.position += filled as u64;
        Ok(filled)
    }

    /// Skips `count` bytes; false when the input ended first.
    fn skip(&mut self, count: u64) -> Result<bool, Rejection>
    where
        R: Input,
    {
        let skipped = self
            .reader
            .skip_bytes(count)
            .map_err(|error| refused(format!("cannot read the file: {error}")))?;
        self.position += skipped;
        Ok(skipped == count)
    }

    fn remaining(&self) -> Option<u64> {
        self.size.map(|size| size.saturating_sub(self.position))
    }
}

/// The file meta group (always Explicit VR Little Endian): its transfer
/// syntax, leaving `source` at the first data set element. `None` when the
/// group cannot be walked (left to the parser).
fn meta_transfer_syntax<R: Read>(source: &mut Source<R>) -> Result<Option<String>, Rejection> {
    let mut header = [0_u8; 8];
    if source.fill(&mut header)? < 8 {
        return Ok(None);
    }
    // (0002,0000) File Meta Information Group Length, UL, 4 bytes.
    if header[..6] != [0x02, 0x00, 0x00, 0x00, b'U', b'L'] {
        return Ok(None);
    }
    let mut length = [0_u8; 4];
    if source.fill(&mut length)? < 4 {
        return Ok(None);
    }
    let group_length = u64::from(u32::from_le_bytes(length));
    if source.remaining().is_some_and(|left| group_length > left) || group_length > 1 << 20 {
        return Err(refused(format!(
            "the file meta group declares {group_length} bytes, more than the file holds"
        )));
    }
    let mut group = vec![0_u8; group_length as usize];
    if source.fill(&mut group)? < group.len() {
        return Ok(None);
    }
    let mut at = 0;
    while at + 8 <= group.len() {
        let tag = Tag(
            u16::from_le_bytes([group[at], group[at + 1]]),
            u16::from_le_bytes([group[at + 2], group[at + 3]]),
        );
        let vr = [group[at + 4], group[at + 5]];
        let (length, value_at) = if long_form(&vr) {
            let Some(bytes) = group.get(at + 8..at + 12) else {
                return Ok(None);
            };
            (
                u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize,
                at + 12,
            )
        } else {
            (
                usize::from(u16::from_le_bytes([group[at + 6], group[at + 7]])),
                at + 8,
            )
        };
        let Some(value) = group.get(value_at..value_at.saturating_add(length)) else {
            return Ok(None);
        };
        if tag == Tag(0x0002, 0x0010) {
            return Ok(Some(String::from_utf8_lossy(value).into_owned()));
        }
        at = value_at + length;
    }
    Ok(None)
}

/// Whether an explicit VR header has 2 reserved bytes and a 4-byte length:
/// every VR but the 21 of PS3.5 Table 7.1-2, and (as dicom-rs reads it) any
/// code that is not a VR, which the parser takes for UN.
fn long_form(vr: &[u8; 2]) -> bool {
    !matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

#[derive(Debug, Clone, Copy)]
struct Encoding {
    implicit: bool,
    big_endian: bool,
}

impl Encoding {
    fn u16(self, bytes: [u8; 2]) -> u16 {
        if self.big_endian {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        }
    }

    fn u32(self, bytes: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A sequence: its items are data sets.
    Sequence,
    /// An item of a sequence: a data set.
    Item,
    /// Encapsulated pixel data: its items are raw fragments.
    Fragments,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    /// Where it ends, when its length is defined.
    end: Option<u64>,
    /// How its contents are encoded (the items of a UN sequence of undefined
    /// length are implicit VR little endian).
    encoding: Encoding,
}

fn walk<R: Input>(
    mut source: Source<R>,
    encoding: Encoding,
    limits: Limits,
    inflated: bool,
    header_only: bool,
) -> Result<(), Rejection> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut elements = 0_usize;
    loop {
        // Close what ends here.
        while let Some(frame) = frames.last() {
            match frame.end {
                Some(end) if source.position == end => {
                    frames.pop();
                }
                Some(end) if source.position > end => {
                    return Err(refused(format!(
                        "an element runs past the end of its enclosing {} at byte {end}",
                        if frame.kind == Kind::Item {
                            "item"
                        } else {
                            "sequence"
                        }
                    )));
                }
                _ => break,
            }
        }
        if inflated && source.position > limits.max_inflated_bytes {
            return Err(inflates_beyond(limits));
        }
        let encoding = frames.last().map_or(encoding, |frame| frame.encoding);
        let mut tag_bytes = [0_u8; 4];
        let read = source.fill(&mut tag_bytes)?;
        if read < 4 {
            // The end (or a truncation, which the parser reports).
            return Ok(());
        }
        let tag = Tag(
            encoding.u16([tag_bytes[0], tag_bytes[1]]),
            encoding.u16([tag_bytes[2], tag_bytes[3]]),
        );
        if header_only && frames.is_empty() && tag >= PIXEL_DATA {
            return Ok(());
        }
        elements += 1;
        if elements > limits.max_elements {
            return Err(refused(format!(
                "more than {} data elements and items",
                limits.max_elements
            )));
        }
        if tag.0 == 0xFFFE {
            // Items and delimiters: a 4-byte length, no VR, in either encoding.
            let mut length = [0_u8; 4];
            if source.fill(&mut length)? < 4 {
                return Ok(());
            }
            let length = encoding.u32(length);
            let top = frames.last().map(|frame| frame.kind);
            match tag {
                ITEM if top == Some(Kind::Fragments) => {
                    check_length(&source, &frames, tag, length)?;
                    skip(&mut source, tag, length, inflated.then_some(limits))?;
                }
                ITEM if top == Some(Kind::Sequence) => {
                    let end = (length != UNDEFINED).then(|| source.position + u64::from(length));
                    if length != UNDEFINED {
                        check_length(&source, &frames, tag, length)?;
                    }
                    frames.push(Frame {
                        kind: Kind::Item,
                        end,
                        encoding,
                    });
                }
                ITEM_END if top == Some(Kind::Item) => {
                    frames.pop();
                }
                SEQUENCE_END if matches!(top, Some(Kind::Sequence | Kind::Fragments)) => {
                    frames.pop();
                }
                _ => {
                    return Err(refused(format!(
                        "{} {tag} out of place at byte {}",
                        if tag == ITEM {
                            "an item"
                        } else {
                            "a delimiter"
                        },
                        source.position - 8
                    )));
                }
            }
            continue;
        }
        let (vr, length) = if encoding.implicit {
            let mut length = [0_u8; 4];
            if source.fill(&mut length)? < 4 {
                return Ok(());
            }
            (implicit_vr(tag), encoding.u32(length))
        } else {
            let mut vr = [0_u8; 2];
            if source.fill(&mut vr)? < 2 {
                return Ok(());
            }
            if long_form(&vr) {
                let mut rest = [0_u8; 6];
                if source.fill(&mut rest)? < 6 {
                    return Ok(());
                }
                (
                    // What the parser takes an unknown code for.
                    Some(VR::from_binary(vr).unwrap_or(VR::UN)),
                    encoding.u32([rest[2], rest[3], rest[4], rest[5]]),
                )
            } else {
                let mut length = [0_u8; 2];
                if source.fill(&mut length)? < 2 {
                    return Ok(());
                }
                (VR::from_binary(vr), u32::from(encoding.u16(length)))
            }
        };
        // In implicit VR an element of undefined length that the dictionary
        // does not know (a private one) is a sequence too.
        let sequence = vr == Some(VR::SQ)
            || (length == UNDEFINED && tag != PIXEL_DATA && matches!(vr, Some(VR::UN) | None));
        if sequence {
            let depth = frames
                .iter()
                .filter(|frame| frame.kind == Kind::Sequence)
                .count()
                + 1;
            if depth > limits.max_depth {
                return Err(refused(format!(
                    "sequences nested deeper than {} levels",
                    limits.max_depth
                )));
            }
            if length != UNDEFINED {
                check_length(&source, &frames, tag, length)?;
            }
            frames.push(Frame {
                kind: Kind::Sequence,
                end: (length != UNDEFINED).then(|| source.position + u64::from(length)),
                encoding: if vr == Some(VR::UN) && !encoding.implicit {
                    Encoding {
                        implicit: true,
                        big_endian: false,
                    }
                } else {
                    encoding
                },
            });
        } else if length == UNDEFINED {
            if tag != PIXEL_DATA {
                return Err(refused(format!(
                    "element {tag} of VR {} has an undefined length",
                    vr.map_or("unknown", VR::to_string)
                )));
            }
            frames.push(Frame {
                kind: Kind::Fragments,
                end: None,
                encoding,
            });
        } else {
            check_length(&source, &frames, tag, length)?;
            skip(&mut source, tag, length, inflated.then_some(limits))?;
        }
    }
}

/// Skips the value of `tag`; the input ending first is refused (the parser
/// would allocate the declared length before finding out). `inflated`: the
/// limits of a deflated data set.
fn skip<R: Input>(
    source: &mut Source<R>,
    tag: Tag,
    length: u32,
    inflated: Option<Limits>,
) -> Result<(), Rejection> {
    if source.skip(u64::from(length))? {
        return Ok(());
    }
    if let Some(limits) = inflated
        && source.position > limits.max_inflated_bytes
    {
        return Err(inflates_beyond(limits));
    }
    Err(refused(format!(
        "corrupt or truncated DICOM: element {tag} declares {length} bytes, more than the data set holds"
    )))
}

/// What the dictionary says `tag` is, for implicit VR (sequences matter).
fn implicit_vr(tag: Tag) -> Option<VR> {
    match StandardDataDictionary.by_tag(tag)?.vr() {
        VirtualVr::Exact(vr) => Some(vr),
        _ => None,
    }
}

/// An element, item or sequence of `length` bytes must fit in what remains
/// of the file and of every enclosing item and sequence of defined length.
fn check_length<R: Read>(
    source: &Source<R>,
    frames: &[Frame],
    tag: Tag,
    length: u32,
) -> Result<(), Rejection> {
    let length = u64::from(length);
    let left_in_frames = frames
        .iter()
        .filter_map(|frame| frame.end)
        .map(|end| end.saturating_sub(source.position))
        .min();
    let left = match (source.remaining(), left_in_frames) {
        (Some(file), Some(frame)) => Some(file.min(frame)),
        (file, frame) => file.or(frame),
    };
    match left {
        Some(left) if length > left => Err(refused(format!(
            "corrupt or truncated DICOM: element {tag} declares {length} bytes where {left} remain"
        ))),
        _ => Ok(()),
    }
}

fn inflates_beyond(limits: Limits) -> Rejection {
    Rejection::new(
        RejectionKind::InstanceTooLarge,
        format!(
            "the deflated data set inflates beyond {} bytes",
            limits.max_inflated_bytes
        ),
    )
}
