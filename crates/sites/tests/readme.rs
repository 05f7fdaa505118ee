//! The sites file the README shows is a valid sites file: what an operator
//! copies from the documentation applies.

#[test]
fn the_readmes_sites_file_is_valid() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let section = readme
        .split("## Sites, tokens and reading networks")
        .nth(1)
        .expect("the README has its sites section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a TOML example in the sites section");
    let file = fxtriage_sites::file::parse(example, &fxtriage_sites::Existing::default(), false)
        .unwrap_or_else(|error| panic!("{error}\n{example}"));
    assert!(file.sites.len() >= 2, "{example}");
    assert!(
        file.sites
            .iter()
            .any(|site| !site.destinations.dicom.is_empty()),
        "the example shows a destination"
    );
    assert_eq!(file.groups.len(), 1);
}
