//! A study's worklist values, computed from all its images and their findings.
//!
//! Everything is recomputed from the stored rows on every change rather than
//! updated incrementally, so the result does not depend on the order in which
//! messages arrived or how often they were replayed:
//! - arrival: the earliest `received_at` of the study's instances;
//! - urgency: the highest urgency of its instances (with that instance's source);
//! - probability: the maximum over its analysed eligible images (an image counts
//!   its most recently analysed finding; failed images do not contribute);
//! - AI result: the policy's class of that maximum, except that "no finding" waits
//!   until no eligible image is awaiting analysis; "not analysed" when nothing was
//!   or will be analysed (no eligible image, or every one failed);
//! - deadline: arrival + the site's target for (urgency, AI result).

pub use fxtriage_worklist::summary::{FindingSummary, ImageAnalysis, ImageSummary, StudyAggregate};

use crate::policy::{AiResult, Policy};
use crate::study::StudyAiResult;

/// The study's values from its images; `None` for a study without images.
pub fn aggregate(images: &[ImageSummary], policy: &Policy) -> Option<StudyAggregate> {
    let mut by_time: Vec<&ImageSummary> = images.iter().collect();
    by_time.sort_by(|a, b| {
        (a.received_at, &a.sop_instance_uid).cmp(&(b.received_at, &b.sop_instance_uid))
    });
    let first = *by_time.first()?;
    let most_urgent = images
        .iter()
        .min_by_key(|image| {
            (
                image.urgency.rank(),
                image.received_at,
                image.sop_instance_uid.clone(),
            )
        })
        .unwrap_or(first);
    let accession_number = by_time
        .iter()
        .map(|image| image.accession_number.as_str())
        .find(|accession| !accession.is_empty())
        .unwrap_or_default()
        .to_owned();
    let mut body_parts: Vec<String> = images
        .iter()
        .map(|image| image.body_part.clone())
        .filter(|part| !part.is_empty())
        .collect();
    body_parts.sort();
    body_parts.dedup();

    let probability = images
        .iter()
        .filter_map(|image| match image.analysis {
            ImageAnalysis::Analysed { probability } => Some(probability),
            _ => None,
        })
        .max_by(f32::total_cmp);
    let awaiting = images
        .iter()
        .any(|image| image.analysis == ImageAnalysis::Awaiting);
    let ai_result = match (policy.classify(probability), awaiting) {
        (AiResult::Suspected, _) => StudyAiResult::Suspected,
        (AiResult::Possible, _) => StudyAiResult::Possible,
        (AiResult::NoFinding, false) => StudyAiResult::NoFinding,
        (AiResult::NoFinding | AiResult::NotAnalysed, true) => StudyAiResult::AwaitingAnalysis,
        (AiResult::NotAnalysed, false) => StudyAiResult::NotAnalysed,
    };
    let deadline = first.received_at
        + policy.study_target(most_urgent.urgency, ai_result.policy_class(), probability);
    Some(StudyAggregate {
        arrived_at: first.received_at,
        urgency: most_urgent.urgency,
        urgency_source: most_urgent.urgency_source,
        accession_number,
        body_parts,
        probability,
        ai_result,
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use fxtriage_core::{Urgency, UrgencySource};
    use proptest::prelude::*;
    use time::Duration;
    use time::OffsetDateTime;

    use super::*;

    fn at(minutes: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(minutes)
    }

    fn image(sop: &str, minute: i64, urgency: Urgency, analysis: ImageAnalysis) -> ImageSummary {
        ImageSummary {
            sop_instance_uid: sop.into(),
            received_at: at(minute),
            urgency,
            urgency_source: UrgencySource::Dataset,
            accession_number: String::new(),
            body_part: "WRIST".into(),
            analysis,
        }
    }

    fn analysed(probability: f32) -> ImageAnalysis {
        ImageAnalysis::Analysed { probability }
    }

    #[test]
    fn a_study_without_images_has_no_values() {
        assert_eq!(aggregate(&[], &Policy::default()), None);
    }

    #[test]
    fn the_study_probability_is_the_maximum_over_analysed_images() {
        let policy = Policy::default();
        let images = [
            image("1.1", 0, Urgency::Outpatient, analysed(0.2)),
            image("1.2", 1, Urgency::Outpatient, analysed(0.9)),
            image("1.3", 2, Urgency::Outpatient, ImageAnalysis::Failed),
            image("1.4", 3, Urgency::Outpatient, ImageAnalysis::NotEligible),
        ];
        let study = aggregate(&images, &policy).expect("images");
        assert_eq!(study.probability, Some(0.9));
        assert_eq!(study.ai_result, StudyAiResult::Suspected);
        assert_eq!(
            study.deadline,
            at(0) + policy.target(Urgency::Outpatient, AiResult::Suspected)
        );
    }

    /// The site option: targets interpolated by the probability, so that of two
    /// suspected studies that arrived together the likelier is due first.
    #[test]
    fn the_continuous_mode_sets_the_deadline_by_the_probability() {
        let policy = Policy {
            target_mode: fxtriage_core::policy::TargetMode::Continuous,
            ..Policy::default()
        };
        let likely = aggregate(
            &[image("1.1", 0, Urgency::Outpatient, analysed(0.99))],
            &policy,
        )
        .expect("images");
        let borderline = aggregate(
            &[image("2.1", 0, Urgency::Outpatient, analysed(0.71))],
            &policy,
        )
        .expect("images");
        assert_eq!(likely.ai_result, StudyAiResult::Suspected);
        assert_eq!(borderline.ai_result, StudyAiResult::Suspected);
        assert!(likely.deadline < borderline.deadline);
        assert_eq!(
            likely.deadline,
            at(0) + policy.study_target(Urgency::Outpatient, AiResult::Suspected, Some(0.99))
        );
        // The class mode gives both the suspected target.
        let classes = Policy::default();
        let likely = aggregate(
            &[image("1.1", 0, Urgency::Outpatient, analysed(0.99))],
            &classes,
        )
        .expect("images");
        let borderline = aggregate(
            &[image("2.1", 0, Urgency::Outpatient, analysed(0.71))],
            &classes,
        )
        .expect("images");
        assert_eq!(likely.deadline, borderline.deadline);
    }

    #[test]
    fn no_finding_waits_for_every_eligible_image() {
        let policy = Policy::default();
        let mut images = vec![
            image("1.1", 0, Urgency::Inpatient, analysed(0.1)),
            image("1.2", 1, Urgency::Inpatient, ImageAnalysis::Awaiting),
        ];
        let waiting = aggregate(&images, &policy).expect("images");
        assert_eq!(waiting.ai_result, StudyAiResult::AwaitingAnalysis);
        assert_eq!(
            waiting.deadline,
            at(0) + policy.target(Urgency::Inpatient, AiResult::NotAnalysed),
            "awaiting analysis keeps the clinical target"
        );
        images[1].analysis = analysed(0.05);
        let settled = aggregate(&images, &policy).expect("images");
        assert_eq!(settled.ai_result, StudyAiResult::NoFinding);
        assert_eq!(settled.probability, Some(0.1));
    }

    #[test]
    fn failed_and_not_eligible_studies_keep_their_clinical_priority() {
        let policy = Policy::default();
        for analysis in [ImageAnalysis::Failed, ImageAnalysis::NotEligible] {
            let study = aggregate(&[image("1.1", 0, Urgency::Emergency, analysis)], &policy)
                .expect("images");
            assert_eq!(study.ai_result, StudyAiResult::NotAnalysed);
            assert_eq!(study.probability, None);
            assert_eq!(
                study.deadline,
                at(0) + policy.target(Urgency::Emergency, AiResult::NotAnalysed)
            );
        }
    }

    #[test]
    fn the_study_takes_the_earliest_arrival_and_the_highest_urgency() {
        let mut late_emergency = image("1.2", 30, Urgency::Emergency, ImageAnalysis::Awaiting);
        late_emergency.urgency_source = UrgencySource::AeTitle;
        late_emergency.accession_number = "ACC-2".into();
        late_emergency.body_part = "HAND".into();
        let images = [
            image("1.1", 10, Urgency::Outpatient, ImageAnalysis::Awaiting),
            late_emergency,
        ];
        let study = aggregate(&images, &Policy::default()).expect("images");
        assert_eq!(study.arrived_at, at(10));
        assert_eq!(study.urgency, Urgency::Emergency);
        assert_eq!(study.urgency_source, UrgencySource::AeTitle);
        assert_eq!(study.accession_number, "ACC-2");
        assert_eq!(
            study.body_parts,
            vec!["HAND".to_owned(), "WRIST".to_owned()]
        );
    }

    #[test]
    fn an_image_counts_its_latest_successful_finding() {
        let finding = |sha: &str, probability: Option<f32>, minute: i64| FindingSummary {
            model_sha256: sha.into(),
            probability,
            analysed_at: Some(at(minute)),
        };
        assert_eq!(ImageAnalysis::of(true, &[]), ImageAnalysis::Awaiting);
        assert_eq!(ImageAnalysis::of(false, &[]), ImageAnalysis::NotEligible);
        assert_eq!(
            ImageAnalysis::of(true, &[finding("a", None, 1)]),
            ImageAnalysis::Failed
        );
        assert_eq!(
            ImageAnalysis::of(
                true,
                &[
                    finding("b", Some(0.3), 5),
                    finding("a", Some(0.8), 1),
                    finding("c", None, 9)
                ]
            ),
            analysed(0.3),
            "the newer model's result wins; a later failure does not erase it"
        );
    }

    fn analysis() -> impl Strategy<Value = ImageAnalysis> {
        prop_oneof![
            Just(ImageAnalysis::NotEligible),
            Just(ImageAnalysis::Awaiting),
            Just(ImageAnalysis::Failed),
            (0.0_f32..=1.0).prop_map(analysed),
        ]
    }

    fn urgency() -> impl Strategy<Value = Urgency> {
        prop_oneof![
            Just(Urgency::Emergency),
            Just(Urgency::Inpatient),
            Just(Urgency::Outpatient)
        ]
    }

    proptest! {
        /// The order in which images are seen never changes the study.
        #[test]
        fn the_study_does_not_depend_on_image_order(
            images in proptest::collection::vec((0_i64..100, urgency(), analysis()), 1..12),
            rotation in 0_usize..12,
        ) {
            let policy = Policy::default();
            let images: Vec<ImageSummary> = images.iter().enumerate()
                .map(|(index, (minute, urgency, analysis))| image(&format!("1.{index}"), *minute, *urgency, *analysis))
                .collect();
            let mut reordered = images.clone();
            reordered.reverse();
            let len = reordered.len();
            reordered.rotate_left(rotation % len);
            prop_assert_eq!(aggregate(&images, &policy), aggregate(&reordered, &policy));
        }

        /// AI never moves a study's deadline past its clinical one.
        #[test]
        fn a_study_is_never_read_later_than_its_clinical_urgency(
            images in proptest::collection::vec((0_i64..100, urgency(), analysis()), 1..12),
        ) {
            let policy = Policy::default();
            let images: Vec<ImageSummary> = images.iter().enumerate()
                .map(|(index, (minute, urgency, analysis))| image(&format!("1.{index}"), *minute, *urgency, *analysis))
                .collect();
            let study = aggregate(&images, &policy).expect("images");
            let clinical = study.arrived_at + policy.target(study.urgency, AiResult::NotAnalysed);
            prop_assert!(study.deadline <= clinical);
        }
    }
}
