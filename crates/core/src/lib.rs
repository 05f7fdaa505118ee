//! Domain types shared by every fxtriage service. No I/O lives here: values are
//! validated once, at the edge where they enter the system, and then trusted.

mod detection;
mod instance_key;
pub mod policy;
mod site;
pub mod stats;
mod uid;
mod urgency;

pub use detection::{BoundingBox, Detection};
pub use instance_key::InstanceKey;
pub use site::{GroupId, InvalidSiteId, SiteId};
pub use uid::{DicomUid, InvalidDicomUid};
pub use urgency::{UnknownUrgency, Urgency, UrgencySource};
