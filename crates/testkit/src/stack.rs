//! When a test needs a real server (PostgreSQL, the Kafka-protocol broker, S3,
//! the ONNX Runtime library, a DICOM tool) and its setting is missing, it is
//! skipped, unless the real stack is required, in which case it fails.
//!
//! The rule, with one meaning everywhere: the stack is required when
//! `FXTRIAGE_REQUIRE_STACK` is set to anything but `""` or `"0"`, or when `CI`
//! is set to anything but `""`, `"0"` or `"false"` (CI systems set `CI=true`;
//! `scripts/test` sets both). A skip is written straight to the process's
//! standard error, past the test harness's output capture, so a plain
//! `cargo test` shows it: `SKIPPED <test>: <why>`.

use std::io::Write as _;

/// Whether a missing real server fails the test instead of skipping it.
pub fn required() -> bool {
    required_by(
        std::env::var("FXTRIAGE_REQUIRE_STACK").ok().as_deref(),
        std::env::var("CI").ok().as_deref(),
    )
}

/// The rule of [`required`] on the two variables' values.
pub fn required_by(require_stack: Option<&str>, ci: Option<&str>) -> bool {
    let on = |value: Option<&str>, off: &[&str]| {
        value.is_some_and(|value| !value.is_empty() && !off.contains(&value))
    };
    on(require_stack, &["0"]) || on(ci, &["0", "false"])
}

/// Records that the current test is skipped because `why`, where a plain
/// `cargo test` shows it; panics instead when the stack is [`required`].
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        !required(),
        "{test}: {why}, but the real stack is required (FXTRIAGE_REQUIRE_STACK or CI is set)"
    );
    // Not eprintln!: the harness captures that and shows it only on failure.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (start the local stack: eval \"$(infra/local/stack env)\")"
    );
}

/// Records that the current test does not apply here (it checks something only
/// one kind of machine can show, such as running as root), where a plain `cargo
/// test` shows it. Unlike [`skip`] it never fails: nothing is missing.
pub fn not_applicable(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: does not apply here: {why}"
    );
}

/// The value of environment variable `name`, or `None` after [`skip`]ping the
/// test (or failing it when the stack is required).
pub fn setting(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            skip(&format!("{name} is not set"));
            None
        }
    }
}

/// The values of every one of `names`, in order, or `None` after [`skip`]ping
/// the test for the first one missing.
pub fn settings(names: &[&str]) -> Option<Vec<(String, String)>> {
    names
        .iter()
        .map(|name| setting(name).map(|value| ((*name).to_owned(), value)))
        .collect()
}

/// Whether `program` can be run (found on PATH); skips the test when not.
pub fn tool(program: &str, package: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        skip(&format!(
            "{program} is not installed (Debian package {package}; scripts/bootstrap installs it)"
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::required_by;

    #[test]
    fn the_stack_is_required_by_either_variable_unless_it_says_no() {
        assert!(!required_by(None, None));
        assert!(required_by(Some("1"), None));
        assert!(required_by(Some("yes"), None));
        assert!(!required_by(Some("0"), None));
        assert!(!required_by(Some(""), None));
        assert!(required_by(None, Some("true")));
        assert!(required_by(None, Some("1")));
        assert!(!required_by(None, Some("false")));
        assert!(!required_by(None, Some("0")));
        assert!(!required_by(None, Some("")));
        assert!(required_by(Some("0"), Some("true")));
    }
}
