use opentelemetry::propagation::{Extractor, Injector};

/// Message headers: ordered name/value pairs, as Kafka has them. Names are
/// compared exactly; `insert` replaces an existing header of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        let value = value.into();
        match self.0.iter_mut().find(|(existing, _)| existing == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Appends without replacing (for headers read from the wire, which may repeat).
    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.push((name.to_owned(), value.into()));
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_slice())
    }

    /// The header as UTF-8 text, if present and valid.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key, value.into_bytes());
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        self.get_str(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Adds the caller's trace context unless the record already carries one (a
/// forwarded or dead-lettered message keeps its original trace).
pub(crate) fn add_trace_context(headers: &mut Headers) {
    if !headers.contains(fxtriage_telemetry::propagation::TRACEPARENT) {
        fxtriage_telemetry::propagation::inject_current_context(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_push_appends() {
        let mut headers = Headers::new();
        headers.insert("a", "1");
        headers.insert("a", "2");
        assert_eq!(headers.get_str("a"), Some("2"));
        assert_eq!(headers.len(), 1);
        headers.push("a", "3");
        assert_eq!(headers.len(), 2);
        assert_eq!(headers.get_str("a"), Some("2"), "get returns the first");
        assert_eq!(headers.get_str("missing"), None);
    }
}
