//! `sqlx::migrate!` embeds `migrations/` at compile time; rebuild when a migration is added
//! or changed (what `sqlx migrate build-script` generates).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
