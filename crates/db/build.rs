//! The migrations are embedded at compile time (refinery's `embed_migrations!`),
//! which does not tell cargo to watch them: without this, a new or edited
//! migration would leave a stale build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
