//! DICOMweb STOW-RS (placeholder: being written).

use std::sync::Arc;

use crate::{Ingestor, Sites};

pub fn router(ingestor: Ingestor, sites: Arc<Sites>) -> axum::Router {
    let _ = (ingestor, sites);
    axum::Router::new()
}
