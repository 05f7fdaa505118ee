//! Clinical urgency of an incoming image: from the order context in the dataset
//! when present, else from the site's mapping of the sender or department, else
//! outpatient. The source is recorded so that a reader can judge it.

use fxtriage_core::Urgency;
use fxtriage_dicom::InstanceInfo;
use fxtriage_proto::v1::UrgencySource;

use crate::sites::UrgencyMapping;

/// Maps RequestedProcedurePriority (0040,1003) defined terms.
fn from_requested_priority(priority: &str) -> Option<Urgency> {
    match priority {
        "STAT" => Some(Urgency::Emergency),
        "HIGH" => Some(Urgency::Inpatient),
        "ROUTINE" | "MEDIUM" | "LOW" => Some(Urgency::Outpatient),
        _ => None,
    }
}

pub fn clinical_urgency(
    info: &InstanceInfo,
    calling_ae_title: Option<&str>,
    mapping: &UrgencyMapping,
) -> (Urgency, UrgencySource) {
    if let Some(urgency) = from_requested_priority(&info.requested_priority) {
        return (urgency, UrgencySource::Dataset);
    }
    if let Some(urgency) = calling_ae_title.and_then(|ae| mapping.ae_titles.get(ae.trim())) {
        return (*urgency, UrgencySource::AeTitle);
    }
    if let Some(urgency) = mapping.departments.get(&info.institutional_department) {
        return (*urgency, UrgencySource::Department);
    }
    (Urgency::Outpatient, UrgencySource::Default)
}

pub fn to_proto(urgency: Urgency) -> fxtriage_proto::v1::Urgency {
    urgency.into()
}

#[cfg(test)]
mod tests {
    use fxtriage_dicom::inspect_bytes;
    use fxtriage_dicom::synthetic::SyntheticInstance;

    use super::*;

    fn info(priority: &str) -> InstanceInfo {
        let instance = SyntheticInstance {
            requested_priority: priority.into(),
            ..SyntheticInstance::wrist()
        };
        inspect_bytes(&instance.to_part10()).expect("parses")
    }

    #[test]
    fn the_dataset_wins_then_the_ae_title_then_the_department_then_the_default() {
        let mut mapping = UrgencyMapping::default();
        mapping
            .ae_titles
            .insert("ED_DR1".into(), Urgency::Emergency);
        mapping
            .departments
            .insert(String::new(), Urgency::Inpatient);

        assert_eq!(
            clinical_urgency(&info("STAT"), Some("ED_DR1"), &mapping),
            (Urgency::Emergency, UrgencySource::Dataset)
        );
        assert_eq!(
            clinical_urgency(&info("ROUTINE"), Some("ED_DR1"), &mapping),
            (Urgency::Outpatient, UrgencySource::Dataset)
        );
        assert_eq!(
            clinical_urgency(&info(""), Some("ED_DR1"), &mapping),
            (Urgency::Emergency, UrgencySource::AeTitle)
        );
        assert_eq!(
            clinical_urgency(&info(""), Some("OTHER"), &mapping),
            (Urgency::Inpatient, UrgencySource::Department)
        );
        assert_eq!(
            clinical_urgency(&info(""), None, &UrgencyMapping::default()),
            (Urgency::Outpatient, UrgencySource::Default)
        );
    }
}
