//! `sqlx::migrate!` embeds `migrations/{sqlite,postgres}` at build time; this makes a new migration file rebuild the
//! crate (the macro alone only notices edits to files it already embedded).

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
