//! Randomised hostile sites files, for a fixed budget of cases in CI
//! (`PROPTEST_CASES` raises it): arbitrary text, TOML-like text, and the
//! README's valid example with characters changed, inserted or cut. The parser
//! answers each with the file or with errors whose lines lie in the file,
//! never a panic; a file over the size bound is refused by its size.

use fxtriage_sites::Existing;
use fxtriage_sites::file::{MAX_FILE_BYTES, parse};
use proptest::prelude::*;

fn example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    readme
        .split("## Sites, tokens and reading networks")
        .nth(1)
        .and_then(|section| section.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("a TOML example in the README's sites section")
        .to_owned()
}

/// Parses `text`: every error must name a line of the text (0: the whole file).
fn answered(text: &str) -> Result<(), TestCaseError> {
    if let Err(invalid) = parse(text, &Existing::default(), false) {
        let lines = text.lines().count() + 1;
        prop_assert!(!invalid.errors.is_empty());
        for error in &invalid.errors {
            prop_assert!(
                error.line <= lines,
                "line {} of {lines}: {}",
                error.line,
                error.message
            );
            prop_assert!(!error.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_answered(text in any::<String>()) {
        answered(&text)?;
    }

    #[test]
    fn toml_like_text_is_answered(
        text in r#"(\[\[?(site|group|site\.destinations\.dicom)\]\]?\n|[a-z_]{1,12} = ("[a-zA-Z0-9 .-]{0,16}"|[0-9]{1,6}|\[("[A-Z0-9]{1,8}",? ?){0,3}\]|true|\{[a-z]+ = 1\})\n|#[^\n]{0,20}\n){0,40}"#
    ) {
        answered(&text)?;
    }

    #[test]
    fn the_valid_example_changed_is_answered(
        edits in prop::collection::vec((0.0..1.0_f64, prop_oneof![
            Just(None),
            any::<char>().prop_map(Some),
        ], any::<bool>()), 1..8),
    ) {
        let mut text: Vec<char> = example().chars().collect();
        for (at, replacement, insert) in edits {
            let index = ((at * text.len() as f64) as usize).min(text.len());
            match (replacement, insert) {
                (Some(character), true) => text.insert(index, character),
                (Some(character), false) if index < text.len() => text[index] = character,
                (None, _) if index < text.len() => {
                    text.remove(index);
                }
                _ => text.truncate(index),
            }
        }
        answered(&text.into_iter().collect::<String>())?;
    }
}

#[test]
fn a_file_over_the_bound_is_refused_by_its_size() {
    let mut text = example();
    let padding = "# padding\n".repeat(MAX_FILE_BYTES / 10 + 1);
    text.push_str(&padding);
    let invalid = parse(&text, &Existing::default(), false).expect_err("too large");
    assert_eq!(invalid.errors.len(), 1);
    assert_eq!(invalid.errors[0].line, 0);
    assert!(
        invalid.errors[0]
            .message
            .contains("more than the limit of 8 MiB"),
        "{}",
        invalid.errors[0].message
    );
    // The example itself, within the bound, parses.
    parse(&example(), &Existing::default(), false).expect("the README's example");
}
