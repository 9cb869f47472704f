//! README's CUDA block, compiled with `--features cuda` (CI's clippy run builds it; running it
//! needs an NVIDIA driver): `examples/tests/doc_snippets.rs` checks the block is this code.
//!
//! `cargo run --release -p moment-examples --features cuda --example readme_cuda`

#[rustfmt::skip]
fn main() {
    // snippet
    moment_cuda::enable::<moment_cuda::Cuda>(); // once; then every moment optimizer on burn's
                                                // CUDA backend takes the one-pass kernels
    // end snippet
    println!("moment's CUDA kernels are registered for burn's CUDA backend");
}
