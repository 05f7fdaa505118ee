//! HL7 v2 (ER7 encoding) as fxtriage speaks it with a RIS: messages built
//! segment by segment with every value escaped ([`Segment`]), read back into
//! segments and fields ([`parse`]), framed for MLLP ([`mllp`]), and the
//! acknowledgement a receiver answers ([`Ack`]).
//!
//! Why our own: the Rust HL7 crates are young (`hl7-parser` 0.3, `rust-hl7`
//! 0.5, `hl7-mllp-codec` 0.4, `mllp` 0.3) or AGPL (`hl7v2`), and what fxtriage
//! needs is small: escaping, segments and fields, MLLP's three bytes. The
//! messages are checked by a maintained validator in the tests (hl7apy in
//! strict 2.5.1 validation).

pub mod mllp;

use std::fmt::Write as _;

/// The encoding characters of every message fxtriage writes (MSH-2).
pub const ENCODING_CHARACTERS: &str = "^~\\&";

/// `text` with HL7's delimiters escaped (`|` `^` `~` `\` `&`) and line
/// breaks as `\.br\`, so that it is one value of one field or component.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '|' => escaped.push_str("\\F\\"),
            '^' => escaped.push_str("\\S\\"),
            '~' => escaped.push_str("\\R\\"),
            '\\' => escaped.push_str("\\E\\"),
            '&' => escaped.push_str("\\T\\"),
            '\r' => {
                if characters.peek() == Some(&'\n') {
                    characters.next();
                }
                escaped.push_str("\\.br\\");
            }
            '\n' => escaped.push_str("\\.br\\"),
            other if other.is_control() => {}
            other => escaped.push(other),
        }
    }
    escaped
}

/// The value of an escaped field or component, as [`escape`] reverses.
pub fn unescape(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\\') {
        plain.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('\\') {
            Some(end) => {
                match &after[..end] {
                    "F" => plain.push('|'),
                    "S" => plain.push('^'),
                    "R" => plain.push('~'),
                    "E" => plain.push('\\'),
                    "T" => plain.push('&'),
                    ".br" => plain.push('\n'),
                    // An escape this reader does not know is dropped.
                    _ => {}
                }
                rest = &after[end + 1..];
            }
            None => {
                plain.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    plain.push_str(rest);
    plain
}

/// One segment being built: its id and fields, each field a list of
/// components whose values are escaped when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    id: &'static str,
    fields: Vec<Vec<String>>,
}

impl Segment {
    pub fn new(id: &'static str) -> Self {
        Self {
            id,
            fields: Vec::new(),
        }
    }

    /// Sets field `number` (1-based, as the standard numbers them) to `components`.
    pub fn field(mut self, number: usize, components: &[&str]) -> Self {
        if self.fields.len() < number {
            self.fields.resize(number, Vec::new());
        }
        self.fields[number - 1] = components.iter().map(|value| escape(value)).collect();
        self
    }

    fn write(&self, out: &mut String) {
        out.push_str(self.id);
        let fields = if self.id == "MSH" {
            // MSH-1 is the field separator itself and MSH-2 the encoding
            // characters, written as they are.
            out.push('|');
            out.push_str(ENCODING_CHARACTERS);
            &self.fields[2.min(self.fields.len())..]
        } else {
            &self.fields[..]
        };
        for field in fields {
            out.push('|');
            let last = field.iter().rposition(|value| !value.is_empty());
            if let Some(last) = last {
                out.push_str(&field[..=last].join("^"));
            }
        }
        // No trailing empty fields.
        while out.ends_with('|') {
            out.pop();
        }
    }
}

/// Segments into one ER7 message, each ended by a carriage return.
pub fn message(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        segment.write(&mut out);
        out.push('\r');
    }
    out
}

/// A message read into segments, fields and components (values unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub segments: Vec<Vec<Vec<String>>>,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH declares encoding characters {0:?}; only |^~\\& is read")]
    Encoding(String),
    #[error("segment {0} has an invalid id {1:?}")]
    SegmentId(usize, String),
    #[error("the message has more than {0} fields and components")]
    TooManyParts(usize),
}

/// Fields and components one message may hold. Each becomes a string of its
/// own: without a bound, a 1 MiB message of delimiters would take about 50
/// MiB once parsed. Real reports have hundreds.
pub const MAX_PARTS: usize = 65_536;

/// Reads an ER7 message with the standard delimiters. Segments end with a
/// carriage return (a line feed, or CR LF, is accepted as well).
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let lines: Vec<&str> = text
        .split(['\r', '\n'])
        .filter(|line| !line.trim().is_empty())
        .collect();
    let first = lines.first().ok_or(ParseError::Empty)?;
    if !first.starts_with("MSH") {
        return Err(ParseError::NoMsh);
    }
    if first.get(3..4) != Some("|") || first.get(4..8) != Some(ENCODING_CHARACTERS) {
        return Err(ParseError::Encoding(
            first.get(3..8).unwrap_or_default().to_owned(),
        ));
    }
    // Counted before anything is allocated for them.
    let parts = text
        .bytes()
        .filter(|byte| matches!(byte, b'|' | b'^'))
        .count()
        + lines.len();
    if parts > MAX_PARTS {
        return Err(ParseError::TooManyParts(MAX_PARTS));
    }
    let mut segments = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let mut fields: Vec<Vec<String>> = Vec::new();
        let raw: Vec<&str> = line.split('|').collect();
        let id = raw[0];
        if id.len() != 3
            || !id
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
        {
            return Err(ParseError::SegmentId(index + 1, id.to_owned()));
        }
        fields.push(vec![id.to_owned()]);
        if id == "MSH" {
            // MSH-1 and MSH-2, then MSH-3.. as they come.
            fields.push(vec!["|".to_owned()]);
            fields.push(vec![ENCODING_CHARACTERS.to_owned()]);
            for field in raw.iter().skip(2) {
                fields.push(field.split('^').map(unescape).collect());
            }
        } else {
            for field in raw.iter().skip(1) {
                fields.push(field.split('^').map(unescape).collect());
            }
        }
        segments.push(fields);
    }
    Ok(Parsed { segments })
}

impl Parsed {
    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<&[Vec<String>]> {
        self.segments
            .iter()
            .find(|segment| segment[0][0] == id)
            .map(Vec::as_slice)
    }

    /// Component `component` (1-based) of field `field` of the first `id`
    /// segment; empty when absent.
    pub fn get(&self, id: &str, field: usize, component: usize) -> &str {
        self.segment(id)
            .and_then(|segment| segment.get(field))
            .and_then(|components| components.get(component - 1))
            .map_or("", String::as_str)
    }

    /// The segment ids in order.
    pub fn ids(&self) -> Vec<&str> {
        self.segments
            .iter()
            .map(|segment| segment[0][0].as_str())
            .collect()
    }
}

/// What a receiver answered (MSA-1), in original or enhanced mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// AA, AE, AR (or CA, CE, CR).
    pub code: String,
    /// MSA-2: the control id acknowledged.
    pub control_id: String,
    /// MSA-3 and any ERR segments' texts, for a person.
    pub text: String,
}

impl Ack {
    /// Reads an ACK message.
    pub fn read(text: &str) -> Result<Self, String> {
        let parsed = parse(text).map_err(|error| error.to_string())?;
        if parsed.segment("MSA").is_none() {
            return Err("the answer has no MSA segment".into());
        }
        let mut explanation = parsed.get("MSA", 3, 1).to_owned();
        for segment in parsed
            .segments
            .iter()
            .filter(|segment| segment[0][0] == "ERR")
        {
            // ERR-8 user message, else ERR-7 diagnostic information, else
            // ERR-3's text (the HL7 error code's meaning).
            let message = [8, 7]
                .iter()
                .filter_map(|&field| segment.get(field).and_then(|field| field.first()))
                .chain(segment.get(3).and_then(|field| field.get(1)))
                .find(|text| !text.is_empty());
            if let Some(message) = message {
                if !explanation.is_empty() {
                    explanation.push_str("; ");
                }
                let _ = write!(explanation, "{message}");
            }
        }
        Ok(Self {
            code: parsed.get("MSA", 1, 1).to_owned(),
            control_id: parsed.get("MSA", 2, 1).to_owned(),
            text: explanation,
        })
    }

    /// Accepted (AA or CA).
    pub fn is_accepted(&self) -> bool {
        matches!(self.code.as_str(), "AA" | "CA")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_written_and_read_back() {
        let text = message(&[
            Segment::new("MSH")
                .field(3, &["FXTRIAGE"])
                .field(9, &["ORU", "R01", "ORU_R01"])
                .field(10, &["abc123"])
                .field(12, &["2.5.1"]),
            Segment::new("OBX")
                .field(1, &["1"])
                .field(5, &["a|b^c~d\\e&f\nline two"]),
        ]);
        assert!(
            text.starts_with("MSH|^~\\&|FXTRIAGE||||||ORU^R01^ORU_R01|abc123||2.5.1\r"),
            "{text:?}"
        );
        assert!(
            text.contains("OBX|1||||a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\.br\\line two\r"),
            "{text:?}"
        );
        let parsed = parse(&text).expect("parse");
        assert_eq!(parsed.ids(), ["MSH", "OBX"]);
        assert_eq!(parsed.get("MSH", 9, 2), "R01");
        assert_eq!(parsed.get("MSH", 10, 1), "abc123");
        assert_eq!(parsed.get("OBX", 5, 1), "a|b^c~d\\e&f\nline two");
    }

    #[test]
    fn broken_messages_are_refused_with_a_reason() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("PID|1\r"), Err(ParseError::NoMsh));
        assert!(matches!(
            parse("MSH|#~\\&|X\r"),
            Err(ParseError::Encoding(_))
        ));
        assert!(matches!(
            parse("MSH|^~\\&|X\rpid|1\r"),
            Err(ParseError::SegmentId(2, _))
        ));
    }

    #[test]
    fn an_ack_says_what_was_answered() {
        let ack = Ack::read(
            "MSH|^~\\&|RIS||FXTRIAGE||20261130||ACK^R01^ACK|9|P|2.5.1\rMSA|AE|abc123|bad OBX\rERR||||E||||patient unknown\r",
        )
        .expect("ack");
        assert_eq!(ack.code, "AE");
        assert_eq!(ack.control_id, "abc123");
        assert!(!ack.is_accepted());
        assert_eq!(ack.text, "bad OBX; patient unknown");
        assert!(Ack::read("MSH|^~\\&|RIS\r").is_err());
    }

    #[test]
    fn a_message_of_a_million_delimiters_is_refused_before_it_is_split() {
        let text = format!("MSH|^~\\&|{}", "|".repeat(1 << 20));
        assert_eq!(
            parse(&text).err(),
            Some(ParseError::TooManyParts(MAX_PARTS))
        );
    }

    fn report() -> String {
        "MSH|^~\\&|RIS|NORTH_RIS|FXTRIAGE|FXTRIAGE|20261130120000||ORU^R01^ORU_R01|abc123|P|2.5.1\r\
         PID|1||PAT1\r\
         OBR|1|ACC-42|ACC-42|XR WRIST||||||||||||||||||||F\r\
         OBX|1|TX|REPORT||No fracture.||||||F\r"
            .to_owned()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Arbitrary text, and a valid report with characters changed, are
        /// answered (parsed within the bound, or refused), never a panic;
        /// the same for reading an acknowledgement.
        #[test]
        fn hostile_messages_are_answered(
            text in "\\PC*",
            edits in proptest::collection::vec((0.0..1.0_f64, proptest::char::any()), 0..12),
        ) {
            let mut mutated: Vec<char> = report().chars().collect();
            for (at, character) in edits {
                let index = ((at * mutated.len() as f64) as usize).min(mutated.len() - 1);
                mutated[index] = character;
            }
            let mutated: String = mutated.into_iter().collect();
            for input in [text.as_str(), mutated.as_str()] {
                if let Ok(parsed) = parse(input) {
                    let parts: usize = parsed.segments.iter().flatten().map(Vec::len).sum();
                    proptest::prop_assert!(parts <= MAX_PARTS);
                }
                let _ = Ack::read(input);
            }
        }

        #[test]
        fn escaping_round_trips(text in "\\PC*") {
            let plain: String = text.chars().filter(|c| !c.is_control()).collect();
            proptest::prop_assert_eq!(unescape(&escape(&plain)), plain);
        }
    }
}
