//! What a consumer downstream of the prioritizer sees: each study's changes on
//! the worklist topic. After crashes the topic may repeat a change (at least
//! once), but it must never lose one, reorder a study's changes, give one
//! revision two different contents, or add a study twice.

use std::collections::BTreeMap;

use fxtriage_bus::Received;
use fxtriage_proto::Message as _;
use fxtriage_proto::v1::{ChangeKind, WorklistChange};

/// A study as the worklist table holds it at the end of a test.
#[derive(Debug, Clone)]
pub struct FinalStudy {
    pub revision: u64,
    pub state: String,
    pub ai_result: String,
    pub urgency: String,
    /// The most changes the study's messages could have caused (one per
    /// instance and one per finding).
    pub most_changes: usize,
}

/// One change as read: (partition, revision, encoded bytes, decoded).
type Seen<'a> = (i32, u64, &'a [u8], WorklistChange);

/// What the worklist topic showed.
#[derive(Debug, Default)]
pub struct ChangesSeen {
    pub messages: usize,
    /// Exact repeats of a change already seen (allowed: at least once).
    pub repeats: usize,
}

/// Checks `messages` (the worklist topic, in the order read) against the final
/// rows; returns every violation found.
pub fn check(
    messages: &[Received],
    site: &str,
    expected: &BTreeMap<String, FinalStudy>,
) -> Result<ChangesSeen, Vec<String>> {
    let mut problems = Vec::new();
    // Per study, in partition order: (partition, revision, payload).
    let mut by_study: BTreeMap<String, Vec<Seen<'_>>> = BTreeMap::new();
    for message in messages {
        let change = match WorklistChange::decode(message.payload.as_slice()) {
            Ok(change) => change,
            Err(error) => {
                problems.push(format!(
                    "offset {} of partition {}: not a WorklistChange: {error}",
                    message.offset, message.partition
                ));
                continue;
            }
        };
        if change.site_id != site {
            problems.push(format!(
                "a change of site {} on this test's topic",
                change.site_id
            ));
            continue;
        }
        if message.key_text() != change.study_instance_uid {
            problems.push(format!(
                "study {} published under key {}",
                change.study_instance_uid,
                message.key_text()
            ));
        }
        by_study
            .entry(change.study_instance_uid.clone())
            .or_default()
            .push((
                message.partition,
                change.revision,
                message.payload.as_slice(),
                change,
            ));
    }
    let mut seen = ChangesSeen {
        messages: messages.len(),
        repeats: 0,
    };
    for (study, want) in expected {
        let Some(changes) = by_study.get(study) else {
            problems.push(format!("study {study}: no change on the worklist topic"));
            continue;
        };
        let partitions: std::collections::BTreeSet<i32> =
            changes.iter().map(|(partition, ..)| *partition).collect();
        if partitions.len() != 1 {
            problems.push(format!(
                "study {study}: changes on partitions {partitions:?}"
            ));
        }
        let mut contents: BTreeMap<u64, &[u8]> = BTreeMap::new();
        let mut first_seen_order = Vec::new();
        let mut added = Vec::new();
        for (_, revision, payload, change) in changes {
            match contents.get(revision) {
                Some(earlier) if earlier == payload => seen.repeats += 1,
                Some(_) => problems.push(format!(
                    "study {study}: revision {revision} published with two different contents"
                )),
                None => {
                    contents.insert(*revision, payload);
                    first_seen_order.push(*revision);
                }
            }
            if change.kind == ChangeKind::Added as i32 && !added.contains(revision) {
                added.push(*revision);
            }
        }
        if first_seen_order.windows(2).any(|pair| pair[0] >= pair[1]) {
            problems.push(format!(
                "study {study}: revisions out of order: {first_seen_order:?}"
            ));
        }
        let expected_revisions: Vec<u64> = (1..=want.revision).collect();
        let seen_revisions: Vec<u64> = contents.keys().copied().collect();
        if seen_revisions != expected_revisions {
            problems.push(format!(
                "study {study}: revisions {seen_revisions:?} on the topic, the worklist is at revision {} (a lost or extra change)",
                want.revision
            ));
        }
        if added != [1] {
            problems.push(format!(
                "study {study}: added at revisions {added:?}, not once at revision 1"
            ));
        }
        if contents.len() > want.most_changes {
            problems.push(format!(
                "study {study}: {} distinct changes from at most {} messages (an effect applied twice)",
                contents.len(),
                want.most_changes
            ));
        }
        if let Some((_, _, _, last)) = changes
            .iter()
            .rfind(|(_, revision, ..)| *revision == want.revision)
        {
            let state = last.state().as_str_name().to_owned();
            let ai_result = last.ai_result().as_str_name().to_owned();
            let urgency = last.urgency().as_str_name().to_owned();
            let normalise = |name: &str| name.to_ascii_lowercase().replace('_', "-");
            if !normalise(&state).ends_with(&want.state)
                || !normalise(&ai_result).ends_with(&want.ai_result)
                || !normalise(&urgency).ends_with(&want.urgency)
            {
                problems.push(format!(
                    "study {study}: the last change says {state}/{ai_result}/{urgency}, the worklist {}/{}/{}",
                    want.state, want.ai_result, want.urgency
                ));
            }
        }
    }
    for study in by_study.keys() {
        if !expected.contains_key(study) {
            problems.push(format!(
                "study {study}: changes on the topic but not on the worklist"
            ));
        }
    }
    if problems.is_empty() {
        Ok(seen)
    } else {
        Err(problems)
    }
}

/// The final rows of `site`'s studies, with the most changes each could have had.
pub async fn final_studies(
    client: &tokio_postgres::Client,
    site: &str,
) -> BTreeMap<String, FinalStudy> {
    let rows = client
        .query(
            "SELECT s.study_instance_uid, s.revision, s.state, s.ai_result, s.urgency, \
                    (SELECT count(*) FROM instances i \
                      WHERE i.site_id = s.site_id AND i.study_instance_uid = s.study_instance_uid) \
                  + (SELECT count(*) FROM findings f \
                      WHERE f.site_id = s.site_id AND f.study_instance_uid = s.study_instance_uid) \
             FROM studies s WHERE s.site_id = $1",
            &[&site],
        )
        .await
        .expect("final studies");
    rows.iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                FinalStudy {
                    revision: u64::try_from(row.get::<_, i64>(1)).expect("revision"),
                    state: row.get(2),
                    ai_result: row.get(3),
                    urgency: row.get(4),
                    most_changes: usize::try_from(row.get::<_, i64>(5)).expect("count"),
                },
            )
        })
        .collect()
}
