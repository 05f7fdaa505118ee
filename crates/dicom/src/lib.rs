//! DICOM for fxtriage: reading what an instance is ([`inspect`]) and deciding, in
//! one place, whether a site accepts it and whether the model should analyse it
//! ([`validate`]). Every failure is a typed error with a specific message.

pub mod capture;
mod inspect;
mod j2k;
pub mod overlay;
pub mod picture;
pub mod pixels;
pub mod radiograph;
mod rules;
pub mod sr;
pub mod structure;
pub mod synthetic;
mod validate;

pub use inspect::{InstanceInfo, age_in_years, inspect_bytes, inspect_file};
pub use rules::{ImageLimits, RoutingRules};
pub use validate::{Eligibility, Rejection, RejectionKind, ValidatedUids, validate};

/// SOP classes of projection radiography: CR, and DX for presentation and for processing.
pub mod sop_class {
    pub const CR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1";
    pub const DX_FOR_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.1";
    pub const DX_FOR_PROCESSING: &str = "1.2.840.10008.5.1.4.1.1.1.1.1";
    /// The radiography classes every site accepts.
    pub const RADIOGRAPHY: [&str; 3] = [CR_IMAGE_STORAGE, DX_FOR_PRESENTATION, DX_FOR_PROCESSING];
}
