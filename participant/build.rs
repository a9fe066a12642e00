//! Embeds an rpath to libtorch so that the binary and the test executables start without
//! `LD_LIBRARY_PATH`. `torch-sys` declares `links = "tch"` and exports its library directory as
//! `DEP_TCH_LIBTORCH_LIB` to crates that depend on it directly.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
