//! Bulk import of a directory tree or a bucket prefix (placeholder: being written).
