//! What an import did, counted, with a few example files for each kind of outcome.

use std::collections::BTreeMap;
use std::fmt;

/// How many example files a group keeps.
const EXAMPLES: usize = 3;
/// Failures keep more examples: each is a file the user will want to look at.
const FAILED_EXAMPLES: usize = 10;

/// The outcome of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Stored and announced.
    Stored,
    /// Already stored with the same content; nothing was done.
    Duplicate,
    /// Not imported: not DICOM, a DICOMDIR, a symbolic link.
    Skipped { why: &'static str },
    /// Refused by validation and quarantined.
    Quarantined { kind: String, reason: String },
    /// Not stored because a dependency failed (or the file could not be read);
    /// importing again retries it.
    Failed { message: String },
}

/// A count and the first few files it counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Examples {
    pub count: u64,
    /// `source` or `source: detail`.
    pub examples: Vec<String>,
}

impl Examples {
    fn add(&mut self, example: String, keep: usize) {
        self.count += 1;
        if self.examples.len() < keep {
            self.examples.push(example);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// What was imported: a directory, or `s3://bucket/prefix`.
    pub source: String,
    pub site: String,
    /// Files found (symbolic links not included).
    pub files: u64,
    pub bytes: u64,
    pub stored: u64,
    pub stored_bytes: u64,
    /// Already stored with the same SOP Instance UID and content.
    pub duplicates: u64,
    /// Not imported, by why.
    pub skipped: BTreeMap<String, Examples>,
    /// Quarantined, by rejection kind.
    pub quarantined: BTreeMap<String, Examples>,
    /// Not stored but worth retrying.
    pub failed: Examples,
    /// Stopped by a shutdown request before every file was seen.
    pub interrupted: bool,
}

impl ImportSummary {
    /// Whether every file was dealt with for good (stored, skipped or
    /// quarantined); if not, importing again retries the rest.
    pub fn is_complete(&self) -> bool {
        self.failed.count == 0 && !self.interrupted
    }

    pub fn quarantined_count(&self) -> u64 {
        self.quarantined.values().map(|group| group.count).sum()
    }

    pub fn skipped_count(&self) -> u64 {
        self.skipped.values().map(|group| group.count).sum()
    }

    pub(super) fn record(&mut self, source: &str, bytes: u64, outcome: FileOutcome) {
        match outcome {
            FileOutcome::Stored => {
                self.stored += 1;
                self.stored_bytes += bytes;
            }
            FileOutcome::Duplicate => self.duplicates += 1,
            FileOutcome::Skipped { why } => self
                .skipped
                .entry(why.to_owned())
                .or_default()
                .add(source.to_owned(), EXAMPLES),
            FileOutcome::Quarantined { kind, reason } => self
                .quarantined
                .entry(kind)
                .or_default()
                .add(format!("{source}: {reason}"), EXAMPLES),
            FileOutcome::Failed { message } => {
                self.failed
                    .add(format!("{source}: {message}"), FAILED_EXAMPLES);
            }
        }
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "import of {} into site {}: {} files, {} bytes{}",
            self.source,
            self.site,
            self.files,
            self.bytes,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  stored:              {} ({} bytes)",
            self.stored, self.stored_bytes
        )?;
        writeln!(f, "  duplicates skipped:  {}", self.duplicates)?;
        writeln!(f, "  skipped:             {}", self.skipped_count())?;
        write_groups(f, &self.skipped)?;
        writeln!(f, "  quarantined:         {}", self.quarantined_count())?;
        write_groups(f, &self.quarantined)?;
        writeln!(f, "  failed (retryable):  {}", self.failed.count)?;
        for example in &self.failed.examples {
            writeln!(f, "      {example}")?;
        }
        if self.failed.count > self.failed.examples.len() as u64 {
            writeln!(
                f,
                "      ... and {} more",
                self.failed.count - self.failed.examples.len() as u64
            )?;
        }
        Ok(())
    }
}

fn write_groups(f: &mut fmt::Formatter<'_>, groups: &BTreeMap<String, Examples>) -> fmt::Result {
    for (name, group) in groups {
        writeln!(f, "    {name}: {}", group.count)?;
        for example in &group.examples {
            writeln!(f, "      e.g. {example}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_with_a_few_examples_each() {
        let mut summary = ImportSummary {
            source: "/archive".into(),
            site: "st-marys".into(),
            ..Default::default()
        };
        summary.record("/archive/a.dcm", 10, FileOutcome::Stored);
        summary.record("/archive/b.dcm", 10, FileOutcome::Duplicate);
        for index in 0..5 {
            summary.record(
                &format!("/archive/bad{index}.dcm"),
                1,
                FileOutcome::Quarantined {
                    kind: "unreadable".into(),
                    reason: "truncated".into(),
                },
            );
        }
        summary.record(
            "/archive/notes.txt",
            1,
            FileOutcome::Skipped { why: "not DICOM" },
        );
        assert_eq!(summary.stored, 1);
        assert_eq!(summary.stored_bytes, 10);
        assert_eq!(summary.duplicates, 1);
        assert_eq!(summary.quarantined["unreadable"].count, 5);
        assert_eq!(summary.quarantined["unreadable"].examples.len(), EXAMPLES);
        assert!(summary.is_complete());

        summary.record(
            "/archive/c.dcm",
            1,
            FileOutcome::Failed {
                message: "bus down".into(),
            },
        );
        assert!(!summary.is_complete());
        let text = summary.to_string();
        assert!(text.contains("quarantined:         5"), "{text}");
        assert!(text.contains("e.g. /archive/bad0.dcm: truncated"), "{text}");
        assert!(text.contains("/archive/c.dcm: bus down"), "{text}");
    }
}
