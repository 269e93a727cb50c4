//! `cfg(threaded)`: the CPU backend's thread pool exists natively and in wasm builds with shared
//! memory (the `atomics` target feature: the npm package's threaded build).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(threaded)");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if arch != "wasm32" || features.split(',').any(|f| f == "atomics") {
        println!("cargo::rustc-cfg=threaded");
    }
}
